package reconcile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// The run memory (systemd backend, Config.RunMemory) is the agent's
// memory of the last run of each service systemd may unload.
//
// systemd unloads ("garbage-collects") an inactive unit that nothing
// references, and the unit's run history goes with it: loaded again, it
// reads as a unit that never ran (ExecMainStartTimestamp 0). An enabled
// service is referenced by the target that wants it; one that is not
// (wantedBy: [], enabled: false) is not, so a run-once service of that
// kind (restart policy never or on-failure) that exited cleanly looked to
// the planner like one never started, and was started again by every
// pass. (A failed unit is not unloaded: CollectMode=inactive, the
// default, keeps it.)
//
// A record holds, by unit, the boot it belongs to, a hash of the object's
// rendered files, the run's start (and exit, when a pass saw it) in µs
// since the epoch, and whether a pass saw it running. It is written after
// a pass whose start or restart of the service succeeded, and when a pass
// observes the service running or exited by itself; a pass that sees the
// service stopped or failed (its history loaded), a failed start, a stop,
// another boot, or the service no longer such a candidate drops it, and
// so does a start whose job did not run or failed; a start done with its
// effect not seen (an at-once exit unloaded before the read back) counts. A
// pass that observes such a service inactive with no history and no job
// (unloaded since) takes the record's run as the service's last one
// (observed.Unit.HistoryRemembered) when the record is of this boot and of
// the same files and stands for a finished run (doneRun): the planner
// then judges it as it would the loaded unit (ExitedOnItsOwn: done, not
// drift). The run's exit time is the start's when no pass saw the exit.
//
// What it cannot tell: how a run a pass saw going on ended, once systemd
// unloaded the unit (a stop by hand leaves no more history than an exit),
// unless the agent's watch heard the run end (observed/systemd/lastrun.go
// relays systemd's figures: the pass then sees the exit or the stop, and
// the record follows). Without that, doneRun decides by the restart
// policy: under never the run is done (a run-once job is rather not run
// twice); under on-failure the service is started again (a long-running
// service stopped by hand is drift). One the agent started and no pass
// saw running, then stopped by hand, is taken as done too. An agent killed
// between a start's success and the record's write starts the service
// again once.
// Different files (a changed manifest, or one written by an agent killed
// before its start) match no record: the planner starts the service.

// RunMemoryFileName is the state dir file of the run memory.
const RunMemoryFileName = "runs.json"

// runRecord is one remembered run.
type runRecord struct {
	Boot  string `json:"boot"`
	Files string `json:"files"`
	Start uint64 `json:"start"`
	Exit  uint64 `json:"exit,omitempty"`
	// Running: a pass saw the run going on and none saw it end (Exit 0):
	// unloaded since, it either exited or was stopped (see doneRun).
	Running bool `json:"running,omitempty"`
}

// runCand is a candidate service: its files' hash, and whether its
// restart policy is never.
type runCand struct {
	files string
	never bool
	// activeOnExec: desired.ServiceSpec.ActiveOnExec.
	activeOnExec bool
}

// doneRun says whether a record stands for a finished run: one a pass
// saw exit by itself; one the agent started that no pass saw running (a
// short job, unloaded before the next read); and one a pass saw running,
// unloaded since with no one to tell an exit from a stop, only under
// restart policy never (a job that is not to run twice; under on-failure
// a long-running service stopped by hand is drift, started again).
func (rec runRecord) doneRun(c runCand) bool {
	return rec.Exit != 0 || !rec.Running || c.never
}

// bootIDPath is where the kernel tells the boot's ID (a var for tests).
var bootIDPath = "/proc/sys/kernel/random/boot_id"

// loadRunMemory reads the run memory and the boot ID (a missing or
// malformed file is an empty memory; the latter with a warning).
func (r *Reconciler) loadRunMemory() {
	if !r.cfg.RunMemory || r.cfg.Safety.StateDir == "" {
		return
	}
	if b, err := os.ReadFile(bootIDPath); err == nil {
		r.boot = strings.TrimSpace(string(b))
	} else {
		r.log.Warn("boot ID not read; runs are not remembered", zap.Error(err))
		return
	}
	path := filepath.Join(r.cfg.Safety.StateDir, RunMemoryFileName)
	b, err := desired.ReadTrusted(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.log.Warn("state file not read", zap.String("path", path), zap.Error(err))
		}
		return
	}
	if err := json.Unmarshal(b, &r.runs); err != nil {
		r.log.Warn("state file ignored", zap.String("path", path), zap.Error(err))
		r.runs = nil
	}
}

// saveRunMemory persists m when it differs from what is on disk. A failed
// write keeps m in memory (this agent does not start a finished run
// again) and is tried again by every later pass until one succeeds.
func (r *Reconciler) saveRunMemory(log *zap.Logger, m map[string]runRecord) {
	if !r.cfg.RunMemory || r.boot == "" || (maps.Equal(m, r.runs) && !r.runsUnsaved) {
		return
	}
	if r.cfg.Safety.StateDir == "" || r.cfg.Safety.ReadOnly {
		r.runs = m
		return
	}
	err := writeStateJSON(r.cfg.Safety.StateDir, RunMemoryFileName, m)
	if err != nil {
		log.Warn("run memory not persisted", zap.Error(err))
	}
	r.runs, r.runsUnsaved = m, err != nil
}

// runCandidates returns, by unit name, the services systemd may unload
// after a run that the planner would not start again: desired running,
// restart policy never or on-failure, not started by a timer, and not
// enabled (wantedBy: [], enabled: false).
func runCandidates(objs []*desired.Object, files map[string][]desired.UnitFile) map[string]runCand {
	jobs := map[string]bool{}
	for _, o := range objs {
		if o.Timer != nil {
			jobs[o.Timer.TriggeredService(o.Metadata.Name)] = true
		}
	}
	var m map[string]runCand
	for _, o := range objs {
		s := o.Service
		fs := files[o.ID()]
		if s == nil || len(fs) == 0 || s.DesiredState() != desired.StateRunning || s.RestartPolicy() == desired.RestartAlways {
			continue
		}
		f := fs[0]
		if jobs[f.Name] || !strings.HasSuffix(f.Name, ".service") || (s.IsEnabled() && hasInstall(f.Data)) {
			continue
		}
		h := sha256.New()
		for _, f := range fs {
			h.Write([]byte(string(f.Dir) + "/" + f.Name + "\x00"))
			h.Write(f.Data)
			h.Write([]byte{0})
		}
		if m == nil {
			m = map[string]runCand{}
		}
		m[f.Name] = runCand{files: hex.EncodeToString(h.Sum(nil)), never: s.RestartPolicy() == desired.RestartNever, activeOnExec: s.ActiveOnExec()}
	}
	return m
}

// hasInstall reports whether a rendered unit file has an [Install]
// section (without one, systemd cannot enable it).
func hasInstall(data []byte) bool {
	return bytes.HasPrefix(data, []byte("[Install]\n")) || bytes.Contains(data, []byte("\n[Install]\n"))
}

// unloaded reports whether a unit reads as one that never ran
// (observed.Unit.ReadsNeverRun) with nothing remembered of it yet.
func unloaded(u *observed.Unit) bool { return u.ReadsNeverRun() && !u.HistoryRemembered }

// rememberRuns returns obs with the remembered run filled into each
// candidate that systemd unloaded since (see the file comment); obs
// itself when there is none. The units it changes are copies: obs may be
// a watch-fed cache's.
func rememberRuns(obs *observed.State, cands map[string]runCand, runs map[string]runRecord, boot string) *observed.State {
	if obs == nil || boot == "" {
		return obs
	}
	var out *observed.State
	for name, c := range cands {
		u, rec := obs.Units[name], runs[name]
		if !unloaded(u) || rec.Boot != boot || rec.Files != c.files || rec.Start == 0 || !rec.doneRun(c) {
			continue
		}
		if out == nil {
			c := *obs
			c.Units = maps.Clone(obs.Units)
			out = &c
		}
		cu := *u
		cu.HistoryRemembered = true
		cu.ExecMainStartTimestamp = rec.Start
		cu.ExecMainExitTimestamp = max(rec.Exit, rec.Start)
		cu.ActiveExitTimestamp = cu.ExecMainExitTimestamp
		cu.ExecMainStatus = 0
		if cu.Result == "" {
			cu.Result = "success"
		}
		out.Units[name] = &cu
	}
	if out == nil {
		return obs
	}
	return out
}

// runsAfter is the run memory after a pass: obs is what the pass planned
// from (remembered runs filled in), out its step outcomes, now when its
// steps ended (µs since the epoch).
func runsAfter(runs map[string]runRecord, obs *observed.State, cands map[string]runCand, out []StepOutcome, boot string, now uint64) map[string]runRecord {
	m := map[string]runRecord{}
	for name, c := range cands {
		fp := c.files
		rec, ok := runs[name]
		if ok && (rec.Boot != boot || rec.Files != fp) {
			ok = false
		}
		var u *observed.Unit
		if obs != nil {
			u = obs.Units[name]
		}
		switch {
		case u == nil || u.HistoryRemembered:
		case u.Active() && u.ExecMainStartTimestamp != 0:
			rec, ok = runRecord{Boot: boot, Files: fp, Start: u.ExecMainStartTimestamp, Running: true}, true
		case exitedOnItsOwn(u, c.activeOnExec) && !u.StaleRun: // a stale run is of older files
			rec, ok = runRecord{Boot: boot, Files: fp, Start: u.ExecMainStartTimestamp, Exit: u.ExecMainExitTimestamp}, true
		case u.Active() || u.PendingJob:
			// Starting, or a job queued: its record, if any, stands
			// until the start is seen.
		default:
			ok = false // stopped, failed, or never ran
		}
		if ok {
			m[name] = rec
		}
	}
	for _, oc := range out {
		c, cand := cands[oc.Step.Unit]
		if !cand {
			continue
		}
		fp := c.files
		switch oc.Step.Op {
		case actuators.OpStart, actuators.OpRestart:
			switch {
			case oc.Skipped != "":
			case oc.Err == nil || errors.Is(oc.Err, actuators.ErrNotObserved):
				// Done; or done with its effect not seen: a process that
				// exited at once and was unloaded before the read back
				// looks so (so does a start a false Condition*= skipped).
				// A start that left the unit failed is seen so by the next
				// pass, which drops the record.
				m[oc.Step.Unit] = runRecord{Boot: boot, Files: fp, Start: now}
			default:
				// Not queued, or the job failed (dependency, canceled,
				// timeout): nothing is known to have run.
				delete(m, oc.Step.Unit)
			}
		case actuators.OpStop:
			if oc.Skipped == "" {
				delete(m, oc.Step.Unit)
			}
		}
	}
	return m
}

// usec is t in µs since the epoch.
func usec(t time.Time) uint64 { return uint64(t.UnixMicro()) }
