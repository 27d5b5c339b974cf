package process

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/desired"
	"resil.dev/resil/internal/atomicfile"
)

// snapshot is <stateDir>/status.json: the unit status as the running agent
// sees it, so a read-only process (reconciler diff) or the next agent,
// before it has adopted anything, observes the same state. It is advisory:
// written atomically (at most every 100 ms), and trusted only as far as it can be checked (the
// agent that wrote it must still run; a service's process must still match
// the process table).
type snapshot struct {
	AgentPID   int                   `json:"agentPID"`
	AgentStart uint64                `json:"agentStart"`
	Units      map[string]unitStatus `json:"units"`
	// idle is the process table's idle records when the table is this
	// boot's (loadSnapshot), not part of status.json.
	idle map[string]idleEntry
}

type unitStatus struct {
	ActiveState    string    `json:"activeState"`
	SubState       string    `json:"subState"`
	Result         string    `json:"result"`
	NRestarts      uint32    `json:"nRestarts"`
	MainPID        int       `json:"mainPID,omitempty"`
	ExecMainStatus int32     `json:"execMainStatus"`
	ExecMainStart  time.Time `json:"execMainStart,omitzero"`
	ExecMainExit   time.Time `json:"execMainExit,omitzero"`
	ActiveExit     time.Time `json:"activeExit,omitzero"`
	LastTrigger    time.Time `json:"lastTrigger,omitzero"`
	NextElapse     time.Time `json:"nextElapse,omitzero"`
	SpecHash       string    `json:"specHash,omitempty"`
	ProcHash       string    `json:"procHash,omitempty"`
	RunHash        string    `json:"runHash,omitempty"`
}

// tableRetry is how often a failed process table write is tried again.
const tableRetry = 2 * time.Second

func (s *Supervisor) snapshotPath() string { return filepath.Join(s.dir, "status.json") }

// writeSnapshots writes status.json whenever units changed, at most every
// 100 ms, and tries a failed process table write again every tableRetry,
// until ctx is done.
func (s *Supervisor) writeSnapshots(ctx context.Context) {
	retry := time.NewTicker(tableRetry)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
			// A table write that failed (disk full, EIO) is tried again
			// until one succeeds; before, the file kept the old rows until
			// the next change of any unit.
			s.mu.Lock()
			dirty := s.tableDirty
			s.mu.Unlock()
			if dirty {
				s.saveTable()
			}
			continue
		case <-s.dirty:
		}
		s.writeSnapshot()
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Supervisor) writeSnapshot() {
	snap := snapshot{AgentPID: os.Getpid(), Units: map[string]unitStatus{}}
	if st, err := readProcStat(s.procRoot, snap.AgentPID); err == nil {
		snap.AgentStart = st.StartTime
	}
	s.mu.Lock()
	for n, u := range s.units {
		st := u.status()
		if st.ActiveState == "" {
			// Its goroutine has not adopted yet: readers go by the table.
			continue
		}
		snap.Units[n] = unitStatus{
			ActiveState: st.ActiveState, SubState: st.SubState, Result: st.Result, NRestarts: st.NRestarts,
			MainPID: st.MainPID, ExecMainStatus: st.ExecMainStatus, ExecMainStart: st.ExecMainStart,
			ExecMainExit: st.ExecMainExit, ActiveExit: st.ActiveExit, LastTrigger: st.LastTrigger, NextElapse: st.NextElapse, SpecHash: st.SpecHash,
			ProcHash: st.ProcHash, RunHash: st.RunHash,
		}
	}
	s.mu.Unlock()
	b, err := json.Marshal(snap)
	if err != nil {
		return
	}
	if err := s.writeFile(s.snapshotPath(), b, 0o644); err != nil {
		s.log.Debug("write status snapshot failed", zap.Error(err))
	}
}

// offlineStatus is a unit's status when this Supervisor is not running (or
// not ready yet): from status.json while its agent lives; otherwise a
// service is active when its recorded process still runs (it will be
// adopted), failed states are kept, and everything else is inactive.
//
// An exited record of this boot is the run of the unit file it was made
// from: one of another file than the one on disk reads as a stale run
// (observed.Unit.StaleRun), started by the next agent's pass
// (idleAtLoad), so diff must plan that start too.
//
// A service whose recorded process died while no agent ran, whose policy
// never restarts it, reads as failed (result unknown), as the next agent
// leaves it (startEnabled): diff and apply plan what run does.
func (s *Supervisor) offlineStatus(name string, snap *snapshot, table map[string]procRecord, file []byte, spec *Spec, enabled bool) status {
	var st status
	us, ok := snap.Units[name]
	if ok {
		st = status{ActiveState: us.ActiveState, SubState: us.SubState, Result: us.Result, NRestarts: us.NRestarts,
			MainPID: us.MainPID, ExecMainStatus: us.ExecMainStatus, ExecMainStart: us.ExecMainStart,
			ExecMainExit: us.ExecMainExit, ActiveExit: us.ActiveExit, LastTrigger: us.LastTrigger, NextElapse: us.NextElapse, SpecHash: us.SpecHash,
			ProcHash: us.ProcHash, RunHash: us.RunHash}
	}
	agentAlive := false
	if snap.AgentPID > 0 && snap.AgentPID != os.Getpid() {
		if ps, err := readProcStat(s.procRoot, snap.AgentPID); err == nil && ps.StartTime == snap.AgentStart && ps.State != 'Z' {
			agentAlive = true
		}
	}
	rec, has := table[name]
	recAlive := false
	if has && rec.PID > 0 {
		ps, err := readProcStat(s.procRoot, rec.PID)
		recAlive = err == nil && ps.StartTime == rec.StartTime && ps.State != 'Z'
	}
	if agentAlive && ok {
		// The table is written when a process starts, status.json up to
		// 100 ms later: the table says which process runs and what it came from.
		if recAlive && st.MainPID != 0 {
			st.MainPID, st.SpecHash, st.ProcHash, st.ExecMainStart = rec.PID, rec.SpecHash, rec.ProcHash, time.UnixMicro(rec.Started)
		}
		return st
	}
	if recAlive {
		st.ActiveState, st.SubState, st.MainPID = "active", "running", rec.PID
		st.ExecMainStart, st.SpecHash, st.ProcHash = time.UnixMicro(rec.Started), rec.SpecHash, rec.ProcHash
		if st.Result == "" {
			st.Result = ResultSuccess
		}
		return st
	}
	if ok && st.ActiveState == "failed" {
		st.MainPID = 0
		return st
	}
	if has && rec.PID > 0 && diedUnsupervised(rec, spec) && enabled {
		st.ActiveState, st.SubState, st.Result, st.MainPID = "failed", "failed", ResultUnknown, 0
		if st.ExecMainStart.IsZero() {
			st.ExecMainStart = time.UnixMicro(rec.Started)
		}
		return st
	}
	if e, ok := snap.idle[name]; ok && e.State == idleExited && file != nil {
		return e.status()
	}
	return status{ActiveState: "inactive", SubState: "dead", Result: ResultSuccess, LastTrigger: st.LastTrigger}
}

// startedAtRun is the status a timer that offlineStatus found stopped will
// have once `apply`'s Supervisor runs: with no agent alive, `apply` starts
// one first, and its startEnabled starts every loaded, enabled timer
// (services are left to the pass's steps: Options.OneShot) before the
// first pass observes. A read-only observer (`diff` with no agent running)
// reports that status, so that it plans what `apply` will: an enabled
// timer was otherwise always inactive to `diff` on a host that only runs
// `apply`, which planned a start that `apply` never made, and `apply
// --expect-plan` refused every reviewed plan. Mirrors startEnabled.
func (s *Supervisor) startedAtRun(name string, st status, spec *Spec, table map[string]procRecord) status {
	if spec == nil || spec.Timer == nil {
		return st
	}
	rec, has := table[name]
	owed := has && rec.Stopping && rec.stopReason() == stopRestart
	if has && rec.Stopping && !owed {
		return st // the last agent's stop stands
	}
	if !owed && !s.isEnabled(name) {
		return st
	}
	return status{ActiveState: "active", SubState: "waiting", Result: ResultSuccess, LastTrigger: st.LastTrigger}
}

func (s *Supervisor) loadSnapshot() (*snapshot, map[string]procRecord) {
	snap := &snapshot{}
	if b, err := os.ReadFile(s.snapshotPath()); err == nil {
		_ = json.Unmarshal(b, snap)
	}
	table := map[string]procRecord{}
	pending := false
	if b, err := os.ReadFile(s.tablePath()); err == nil {
		var t processTable
		if json.Unmarshal(b, &t) == nil {
			boot := s.bootID
			if boot == "" { // not running: a reader (diff)
				boot = readBootID()
			}
			if t.BootID != "" && t.BootID == boot && !t.ShuttingDown {
				snap.idle = t.Idle
			}
			for _, r := range t.Processes {
				table[r.Unit] = r
				pending = pending || r.PID == 0 || (r.Next != nil && !procAlive(s.procRoot, r))
			}
		}
	}
	if pending {
		// An agent was killed between writing an intent (or forking a
		// reserved restart) and its PID; the next one adopts that launch if
		// it runs, so report it as running.
		resolveIntents(s.procRoot, table, s.scan())
	}
	return snap, table
}

// writeFileAtomic writes path by temp file, fsync and rename, with the
// temporary file beside it: renameio would otherwise put it in $TMPDIR when
// that is on the same filesystem, where a kill -9 leaves it for good. Beside
// the target, a leftover is removed at the next start (removeLeftovers).
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return atomicfile.WriteFile(path, data, perm)
}

// replaceFile writes path atomically: temp file, fsync, rename (the
// project's rule for every file the agent writes). The process table's
// writes are group-committed (saveTable), so a cold start of many units
// does not pay one fsync per change.
func replaceFile(path string, data []byte, perm os.FileMode) error {
	return writeFileAtomic(path, data, perm)
}

// writeFile is replaceFile for the supervisor's own writes: under writeMu,
// so removeLeftovers never takes its temporary file for a leftover.
func (s *Supervisor) writeFile(path string, data []byte, perm os.FileMode) error {
	s.writeMu.RLock()
	defer s.writeMu.RUnlock()
	return replaceFile(path, data, perm)
}

// diedUnsupervised says whether a service's recorded process, found gone
// by an agent starting up, is left failed rather than started: a row that
// was not stopping, of a service whose restart policy is never (how it
// ended is unknown: systemd would have restarted any other).
func diedUnsupervised(rec procRecord, spec *Spec) bool {
	return rec.PID > 0 && !rec.Stopping && spec != nil && spec.Timer == nil && !spec.Stopped && spec.Restart != nil && spec.Restart.Policy == desired.RestartNever
}
