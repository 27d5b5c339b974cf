package process

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"resil.dev/resil/internal/filestamp"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

// A running process keeps the spec it was started from. Its table row and
// status record the hash of that unit file, and Observe (live, or offline
// from status.json and the table for diff) sets observed.Unit.StaleProcess
// when the file on disk is newer: the planner restarts it (a restart lost
// when the agent was killed between writing the file and restarting). The
// supervisor never restarts a stale process on its own, so diff shows the
// restart before apply runs it.

// Observe reads the state of the named units plus every unit file in the
// units dir that carries resil's ownership marker, with systemd's field
// names and values, so the planner treats both backends alike. While Run is
// serving it reads the supervisor's in-memory status. Otherwise (a
// read-only "diff" process, or this agent before it adopted anything) it
// reads <stateDir>/status.json written by the running agent, checked against
// the process table and /proc: a recorded process that still runs is
// active (it is, or will be, adopted), so no pass starts a duplicate.
func (s *Supervisor) Observe(ctx context.Context, names []string) (*observed.State, error) {
	st := &observed.State{Backend: "process", UnitDir: s.unitDir, Units: map[string]*observed.Unit{}}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	ents, err := os.ReadDir(s.unitDir)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	for _, e := range ents {
		n := e.Name()
		// Only regular files: what the agent writes (a FIFO would block
		// the open, a directory or a link is nothing of the agent's).
		if strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".enabled") || !e.Type().IsRegular() {
			continue
		}
		data, _, err := filestamp.Read(filepath.Join(s.unitDir, n), maxUnitFile)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			// As the systemd observer's scan: a file that cannot be read
			// (or is over the cap) may be the agent's; the pass plans
			// nothing rather than from a guess.
			return nil, fmt.Errorf("read unit file: %w", err)
		}
		if _, ok := ownmark.IsOwned(data); ok {
			want[n] = true
		}
	}
	// Units still running without a file (removed before being stopped).
	s.mu.Lock()
	for n, u := range s.units {
		if a := u.status().ActiveState; a != "" && a != "inactive" {
			want[n] = true
		}
	}
	s.mu.Unlock()
	live := s.live()
	var snap *snapshot
	var table map[string]procRecord
	if !live {
		snap, table = s.loadSnapshot()
	}
	all := make([]string, 0, len(want))
	for n := range want {
		all = append(all, n)
	}
	sort.Strings(all)
	for _, n := range all {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		u, err := s.observeUnit(n, live, snap, table)
		if err != nil {
			return nil, err
		}
		st.Units[n] = u
	}
	st.ReadAt = s.now()
	return st, nil
}

// observeUnit reads one unit: from the running supervisor when live, else
// from the files, status.json and the process table (see offlineStatus).
// A unit file that exists but cannot be read is an error: read as missing,
// a live unit's would be FileDeleted and the pass would write over it.
func (s *Supervisor) observeUnit(name string, live bool, snap *snapshot, table map[string]procRecord) (*observed.Unit, error) {
	path := filepath.Join(s.unitDir, name)
	ou := &observed.Unit{Name: name, Path: path, LoadState: "not-found", ActiveState: "inactive", SubState: "dead",
		Result: ResultSuccess, UnitFileState: "disabled"}
	switch data, fi, err := filestamp.Read(path, maxUnitFile); {
	case err == nil:
		ou.File = data
		ou.Owner, _ = ownmark.IsOwned(data)
		ou.FragmentPath = path
		ou.FileModTime = usec(fi.ModTime())
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, fmt.Errorf("read unit file of %s: %w", name, err)
	}
	if s.isEnabled(name) {
		ou.UnitFileState = "enabled"
	}
	var u *unit
	if live {
		s.mu.Lock()
		u = s.units[name]
		s.mu.Unlock()
	}
	var spec *Spec
	var us status
	if u != nil {
		var file []byte
		u.mu.Lock()
		spec, file, us = u.spec, u.file, u.st
		u.mu.Unlock()
		switch {
		case spec != nil:
			ou.LoadState = "loaded"
		case file != nil:
			ou.LoadState = "error"
		}
		ou.NeedDaemonReload = string(file) != string(ou.File)
		// Loaded from its file, which is gone now (deleted out of band):
		// the process runs the spec loaded from it, as systemd's observer
		// has it (FragmentPath still the unit's path).
		ou.FileDeleted = spec != nil && file != nil && ou.File == nil
	} else {
		if ou.File != nil {
			ou.LoadState = "loaded"
			var err error
			if spec, err = ParseUnitFile(ou.File); err != nil {
				ou.LoadState = "error"
			}
			ou.NeedDaemonReload = live // written, not yet reloaded
		}
		if !live {
			us = s.offlineStatus(name, snap, table, ou.File, spec, s.isEnabled(name))
			if us.ActiveState == "inactive" || us.ActiveState == "failed" {
				us = s.startedAtRun(name, us, spec, table)
			}
		}
	}
	if us.ActiveState != "" {
		ou.ActiveState, ou.SubState = us.ActiveState, us.SubState
	}
	if us.Result != "" {
		ou.Result = us.Result
	}
	ou.NRestarts = us.NRestarts
	ou.MainPID = uint32(us.MainPID)
	ou.ExecMainStatus = us.ExecMainStatus
	ou.ExecMainStartTimestamp = usec(us.ExecMainStart)
	ou.ExecMainExitTimestamp = usec(us.ExecMainExit)
	if ou.ActiveState == "inactive" || ou.ActiveState == "failed" {
		ou.ActiveExitTimestamp = usec(us.ActiveExit) // as systemd's observer has it
	}
	// The planner restarts a process started from an older version of the
	// file on disk (a restart lost to a crash after the write, or a file
	// written and not yet acted on); the supervisor never does it itself.
	// Only an intact resil file counts: a hand-edited one is drift of its
	// own (FileEdited), restored or reported by the planner.
	_, intact := ownmark.HashOf(ou.File)
	ou.StaleProcess = us.MainPID != 0 && us.SpecHash != "" && ou.File != nil && intact && us.SpecHash != fileHash(ou.File) &&
		!(us.ProcHash != "" && us.ProcHash == fileProcHash(ou.File))
	// The same for a run that exited by itself: from another file than
	// the one on disk, it is not the run the file describes.
	ou.StaleRun = ou.ExitedOnItsOwn() && us.RunHash != "" && ou.File != nil && intact && us.RunHash != fileHash(ou.File)
	if spec != nil && spec.Timer != nil {
		ou.Triggers = []string{spec.Timer.Unit}
	}
	// The stamp, as systemd's: the planner reports a missed run as
	// TimerCatchUp or TimerMissed and, over maxLateness, refreshes the stamp
	// before the start (OpRefreshStamp), so the supervisor's own catch-up
	// finds nothing left to fire.
	if strings.HasSuffix(name, ".timer") {
		ou.StampPath = s.stampPath(name)
		if st := s.readStamp(name); !st.IsZero() {
			ou.StampUSec = usec(st)
		}
	}
	ou.OwedRestart = us.Owed && us.MainPID != 0
	if us.MainPID != 0 && !strings.HasPrefix(us.SpecHash, "file:") {
		ou.ProcessFileHash = us.SpecHash // fileHash of an intact file: its X-Resil-Hash
	}
	ou.LastTriggerUSec = usec(us.LastTrigger)
	ou.NextElapseUSecRealtime = usec(us.NextElapse)
	return ou, nil
}

func usec(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixMicro())
}

// maxUnitFile caps how much of a unit file the observer reads (as
// observed/systemd does): a file edited by hand into something huge is an
// unreadable unit, not a memory spike.
const maxUnitFile = 1 << 20
