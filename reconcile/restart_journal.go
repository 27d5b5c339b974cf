package reconcile

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/renameio/v2"
	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/observed"
)

// The restart journal (systemd backend, Config.RestartJournal) is the
// agent's memory of restarts it owes: before a pass writes the unit file
// of a running service with a change that needs a restart, it records the
// service in the state dir (renameio: temp file, fsync, rename), and it
// drops the record once the restart (or a start or stop) succeeded.
//
// It closes the one window the stale-process rule cannot see
// (observed/systemd staleProcess): systemd restarting the process itself
// (Restart=) between the agent's write and a daemon-reload that has since
// happened. That process ran the old definition yet started after the new
// file was written, and nothing systemd or the kernel reports tells it
// apart from a process started after the reload. An agent killed in that
// window leaves the record, and the next agent restarts the service
// (ReasonStaleProcess). The cost is at most one needless restart per
// service after a crash (a kill after the restart, before the record was
// dropped), and one fsync'd write before a pass that rewrites running
// services (none for a pass that creates units or changes nothing).
//
// A record is dropped without a restart when the observation shows it
// moot: the unit is not loaded, or it is inactive or failed (no process,
// nor a Restart= one pending, runs the old definition) and systemd has
// loaded its file (no NeedDaemonReload, or the pass's daemon-reload
// succeeded).

// RestartJournalFileName is the state dir file of the restart journal.
const RestartJournalFileName = "restart-pending.json"

// loadRestartJournal reads the journal (empty when missing; a file that
// does not parse is ignored with a warning).
func (r *Reconciler) loadRestartJournal() {
	if !r.cfg.RestartJournal || r.cfg.Safety.StateDir == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(r.cfg.Safety.StateDir, RestartJournalFileName))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.log.Warn("restart journal not read", zap.Error(err))
		}
		return
	}
	var m map[string]time.Time
	if err := json.Unmarshal(b, &m); err != nil {
		r.log.Warn("restart journal ignored", zap.Error(err))
		return
	}
	r.restartOwed = m
}

// saveRestartJournal persists m when it differs from what is on disk.
func (r *Reconciler) saveRestartJournal(log *zap.Logger, m map[string]time.Time) {
	if !r.cfg.RestartJournal || maps.EqualFunc(m, r.restartOwed, time.Time.Equal) {
		return
	}
	if r.cfg.Safety.StateDir != "" && !r.cfg.Safety.ReadOnly {
		b, err := json.Marshal(m)
		if err == nil {
			if err = os.MkdirAll(r.cfg.Safety.StateDir, 0o755); err == nil {
				err = renameio.WriteFile(filepath.Join(r.cfg.Safety.StateDir, RestartJournalFileName), append(b, '\n'), 0o644)
			}
		}
		if err != nil {
			// The stale-process rule still covers all but a narrow window.
			log.Warn("restart journal not written", zap.Error(err))
		}
	}
	r.restartOwed = m
}

// restartPending is the planner's view of the journal.
func (r *Reconciler) restartPending() map[string]bool {
	if len(r.restartOwed) == 0 {
		return nil
	}
	out := make(map[string]bool, len(r.restartOwed))
	for u := range r.restartOwed {
		out[u] = true
	}
	return out
}

// restartIntents are the units a plan both rewrites and restarts: their
// processes run the old version until the restart.
func restartIntents(steps []actuators.Step) []string {
	written := map[string]bool{}
	var out []string
	for _, s := range steps {
		switch s.Op {
		case actuators.OpWriteFile:
			if s.Unit != "" {
				written[s.Unit] = true
			}
		case actuators.OpRestart:
			if written[s.Unit] && !slices.Contains(out, s.Unit) {
				out = append(out, s.Unit)
			}
		}
	}
	return out
}

// journalBefore is the journal to persist before a plan's first step: the
// records so far and the plan's intents.
func (r *Reconciler) journalBefore(plan Plan) map[string]time.Time {
	intents := restartIntents(plan.Steps)
	if !r.cfg.RestartJournal || len(intents) == 0 {
		return r.restartOwed
	}
	m := maps.Clone(r.restartOwed)
	if m == nil {
		m = map[string]time.Time{}
	}
	now := r.cfg.Now().UTC()
	for _, u := range intents {
		if _, ok := m[u]; !ok {
			m[u] = now
		}
	}
	return m
}

// journalAfter drops the records a pass settled: a restart, start or stop
// that succeeded, and records the observation shows moot (see the file
// comment) once the pass's daemon-reload, if any, succeeded.
func journalAfter(owed map[string]time.Time, obs *observed.State, out []StepOutcome) map[string]time.Time {
	if len(owed) == 0 {
		return owed
	}
	m := maps.Clone(owed)
	reloaded, reloadOK := false, true
	for _, oc := range out {
		if oc.Step.Op == actuators.OpDaemonReload {
			reloaded = true
			reloadOK = oc.Skipped == "" && oc.Err == nil
		}
	}
	for _, oc := range out {
		switch oc.Step.Op {
		case actuators.OpRestart, actuators.OpStart, actuators.OpStop:
			if oc.Skipped == "" && oc.Err == nil {
				delete(m, oc.Step.Unit)
			}
		}
	}
	for u := range m {
		var ou *observed.Unit
		if obs != nil {
			ou = obs.Units[u]
		}
		switch {
		case ou == nil:
			delete(m, u)
		case ou.ActiveState != "inactive" && ou.ActiveState != "failed":
		case ou.LoadState == "not-found" || !ou.NeedDaemonReload || (reloaded && reloadOK):
			delete(m, u)
		}
	}
	return m
}
