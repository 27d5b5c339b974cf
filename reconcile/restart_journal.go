package reconcile

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/observed"
)

// The restart journal (systemd backend, Config.RestartJournal) is the
// agent's memory of restarts it owes: before a pass writes the unit file
// of a service whose process runs (or that systemd may start again, being
// deactivating or activating) with a change that needs a restart, it
// records the service in the state dir (renameio: temp file, fsync,
// rename); Plan.RestartIntents are those services.
//
// It closes the one window the stale-process rule cannot see
// (observed/systemd staleProcess): systemd restarting the process itself
// (Restart=) between the agent's write and a daemon-reload that has since
// happened. That process ran the old definition yet started after the new
// file was written. With the record, the rule is plain: the service runs
// the version on disk only if its process started after systemd's last
// unit load (observed.State.UnitsLoadStart) and no reload is pending
// (systemd's manager loads units and forks processes on one thread, so a
// process started after a load runs what that load read). A record whose
// service does not is owed (restartOwed): the planner restarts the
// service (ReasonStaleProcess).
//
// A timer stopped before a schedule change is written (plan_timer.go,
// UnitChange.StopFirst) is recorded too: its record is a start owed. A
// pass that finds it inactive starts it whatever its drift policy; the
// record goes once a start succeeds, or when the planner owes none
// (Plan.StartsOwed: the timer runs, is disabled or gone; a start a
// pause lease withholds is still owed).
//
// A service that is not running (new, inactive, failed) whose file a pass
// writes to start it is recorded too: a start it would otherwise lose (a
// failed unit whose file matches is left failed; a never-run or unloaded
// one is left as is under drift: report). A stopped service with a record
// is owed one start while it has not run since the record
// (planner.startOwed), whatever its drift policy (Plan.StartsOwed); the
// record goes with the first start made (startMade), whatever its result
// (a failing new version is not started on every pass).
//
// A record goes (journalAfter) once that holds (the agent's own restart
// after its reload, or systemd's own restart after it: no needless restart
// whenever the agent was killed), after a restart or stop the pass ran
// successfully, and when there is nothing left to restart: the unit is
// gone, or inactive or failed with its file loaded and no start owed.
// Costs: one fsync'd write before a pass that writes the file of a
// service it restarts or starts (none for a pass that changes nothing, or
// only reload-only settings of running services), one after it; a
// needless restart only for an agent killed between the record and the
// file write while the manifest is then reverted; and one more run of a
// run-once service for an agent killed between its start and the write
// after it.

// RestartJournalFileName is the state dir file of the restart journal.
const RestartJournalFileName = "restart-pending.json"

// loadRestartJournal reads the journal (empty when missing; a file that
// does not parse is ignored with a warning).
func (r *Reconciler) loadRestartJournal() {
	if r.cfg.RestartJournal && r.cfg.Safety.StateDir != "" {
		r.journal = r.readTimes(RestartJournalFileName)
	}
}

// saveRestartJournal persists m when it differs from what is on disk. A
// failed write keeps the memory of what the file holds, so the next pass
// tries again.
func (r *Reconciler) saveRestartJournal(log *zap.Logger, m map[string]time.Time) {
	if !r.cfg.RestartJournal || maps.EqualFunc(m, r.journal, time.Time.Equal) {
		return
	}
	if r.cfg.Safety.StateDir == "" || r.cfg.Safety.ReadOnly {
		r.journal = m
		return
	}
	if err := writeStateJSON(r.cfg.Safety.StateDir, RestartJournalFileName, m); err != nil {
		// The stale-process rule still covers all but a narrow window.
		log.Warn("restart journal not written", zap.Error(err))
		return
	}
	r.journal = m
}

// restartPending is the planner's view of the journal (a copy: the
// planner must not see a later pass's records).
func (r *Reconciler) restartPending() map[string]time.Time {
	if len(r.journal) == 0 {
		return nil
	}
	return maps.Clone(r.journal)
}

// restartOwed reports whether a journaled service u still owes its
// restart: a reload is pending, or its process (if any) may have started
// before systemd's last unit load, or that load's time is unknown.
func restartOwed(u *observed.Unit, obs *observed.State) bool {
	if u.NeedDaemonReload || u.ExecMainStartTimestamp == 0 || obs == nil || obs.UnitsLoadStart == 0 {
		return true
	}
	return u.ExecMainStartTimestamp <= obs.UnitsLoadStart
}

// journalBefore is the journal to persist before a plan's first step: the
// records so far and the plan's intents.
func (r *Reconciler) journalBefore(plan Plan) map[string]time.Time {
	if !r.cfg.RestartJournal || len(plan.RestartIntents) == 0 {
		return r.journal
	}
	m := maps.Clone(r.journal)
	if m == nil {
		m = map[string]time.Time{}
	}
	now := r.cfg.Now().UTC()
	for _, u := range plan.RestartIntents {
		// The time of this write: a stopped service owes a start until
		// a run after it (planner.startOwed).
		m[u] = now
	}
	return m
}

// journalAfter drops the records a pass settled (see the file comment):
// a restart or stop that succeeded; a start that succeeded of a unit
// observed inactive or failed; and records the observation shows moot
// (for a stopped unit, once the pass's daemon-reload, if any, succeeded),
// except the pass's own intents: the observation predates their write.
func journalAfter(owed map[string]time.Time, obs *observed.State, intents, startsOwed []string, out []StepOutcome) map[string]time.Time {
	if len(owed) == 0 {
		return owed
	}
	unit := func(name string) *observed.Unit {
		if obs == nil {
			return nil
		}
		return obs.Units[name]
	}
	stopped := func(u *observed.Unit) bool {
		return u == nil || u.ActiveState == "inactive" || u.ActiveState == "failed" || u.ActiveState == ""
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
		if oc.Skipped != "" {
			continue
		}
		timer := strings.HasSuffix(oc.Step.Unit, ".timer")
		if oc.Err != nil {
			// A start made of a stopped service settles the start owed,
			// whatever its result: as after a pass that was not cut off,
			// a failed start is not tried again until the manifest
			// changes (or `reconciler reset`). One not made (not queued,
			// the job canceled or its dependency failed, the agent
			// stopping) is still owed.
			if oc.Step.Op == actuators.OpStart && !timer && stopped(unit(oc.Step.Unit)) && startMade(oc.Err) {
				delete(m, oc.Step.Unit)
			}
			continue
		}
		switch oc.Step.Op {
		case actuators.OpRestart:
			delete(m, oc.Step.Unit)
		case actuators.OpStop:
			if !timer { // a timer's stop comes before its owed start
				delete(m, oc.Step.Unit)
			}
		case actuators.OpStart:
			if timer || stopped(unit(oc.Step.Unit)) {
				delete(m, oc.Step.Unit)
			}
		}
	}
	for name := range m {
		if slices.Contains(intents, name) {
			continue
		}
		u := unit(name)
		if strings.HasSuffix(name, ".timer") {
			// A timer's record is a start owed: it stays while the
			// planner still owes it (enabled, not active) and no start
			// succeeded (one failed, skipped or withheld); a timer
			// running, disabled or gone owes none.
			if !slices.Contains(startsOwed, name) {
				delete(m, name)
			}
			continue
		}
		switch {
		case u == nil:
			delete(m, name)
		case u.Active():
			if !restartOwed(u, obs) {
				delete(m, name)
			}
		case !stopped(u): // deactivating: systemd may start it again
		case slices.Contains(startsOwed, name):
			// Stopped or failed, its start owed (planner.startOwed) and
			// not made by this pass (withheld by a
			// pause lease, skipped).
		case u.LoadState == "not-found" || !u.NeedDaemonReload || (reloaded && reloadOK):
			delete(m, name)
		}
	}
	return m
}

// jobResulter is the error of a unit job that finished with a result
// other than done (actuators/systemd.JobError).
type jobResulter interface{ JobResult() string }

// startMade reports whether a start step that returned err was made:
// systemd ran its job, whether or not the unit then ran (done with its
// effect not observed: a process that exited at once, a false condition;
// or failed).
func startMade(err error) bool {
	if err == nil || errors.Is(err, actuators.ErrNotObserved) || errors.Is(err, actuators.ErrJobTimeout) {
		return true // done, or queued and still running (a slow pre-start check)
	}
	var jr jobResulter
	return errors.As(err, &jr) && jr.JobResult() == "failed"
}
