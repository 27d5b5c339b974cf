package systemd

import (
	"context"
	"fmt"
	"path"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"resil.dev/resil/actuators"
	"resil.dev/resil/internal/sdbus"
)

// Batches reports the ops ApplyBatch takes: enable, disable, start, stop
// and restart. It makes the Applier a reconcile.BatchApplier.
func (a *Applier) Batches(op actuators.Op) bool {
	switch op {
	case actuators.OpEnable, actuators.OpDisable, actuators.OpStart, actuators.OpStop, actuators.OpRestart:
		return true
	}
	return false
}

// ApplyBatch runs steps of one op (each for a different unit) together and
// returns, per step, what Apply would have returned for it alone:
//
//   - enable, disable: one EnableUnitFiles or DisableUnitFiles call with
//     every file, then one ListUnitFilesByPatterns to read the on-disk
//     enablement of all of them back (the checks of enable and disable).
//     systemd refuses the whole call when one file is bad (no such unit);
//     then each step is retried alone, so its outcome is its own call's
//     and a bad file fails only its own step.
//   - start, stop, restart: one ListUnitsByNames for the re-checks of start
//     and stop (restart reads each service's ExecMainStartTimestamp), then
//     every job is queued before any is waited for; the results come from
//     systemd's JobRemoved signals as the jobs finish, under one job
//     timeout for the batch; then one ListUnitsByNames reads every unit
//     back for the effect checks of job (plus, per unit, the reads job
//     does for a oneshot or a restarted service).
//
// A failure of a call the whole batch depends on (the re-check or read
// back of every unit) is the error of every step it covered.
func (a *Applier) ApplyBatch(ctx context.Context, steps []actuators.Step) ([]actuators.Result, []error) {
	res := make([]actuators.Result, len(steps))
	errs := make([]error, len(steps))
	var valid []int
	for i, s := range steps {
		res[i] = actuators.Unchanged
		switch {
		case !a.Batches(s.Op) || (len(valid) > 0 && s.Op != steps[valid[0]].Op):
			errs[i] = fmt.Errorf("apply %s: %w: not in a batch of %s", s, ErrInvalidStep, steps[0].Op)
		default:
			if errs[i] = checkUnit(s); errs[i] == nil {
				valid = append(valid, i)
			}
		}
	}
	if len(valid) == 0 {
		return res, errs
	}
	switch steps[valid[0]].Op {
	case actuators.OpEnable, actuators.OpDisable:
		a.unitFilesBatch(ctx, steps, valid, res, errs)
	default:
		a.jobBatch(ctx, steps, valid, res, errs)
	}
	for _, i := range valid {
		a.logOutcome(steps[i], res[i], errs[i])
	}
	return res, errs
}

// unitFilesBatch enables or disables steps[idx] in one call; see ApplyBatch.
func (a *Applier) unitFilesBatch(ctx context.Context, steps []actuators.Step, idx []int, res []actuators.Result, errs []error) {
	op := steps[idx[0]].Op
	units := make([]string, len(idx))
	for j, i := range idx {
		units[j] = steps[i].Unit
	}
	changed := map[string]bool{}
	mark := func(paths ...string) {
		for _, p := range paths {
			if p != "" {
				changed[path.Base(p)] = true
			}
		}
	}
	var err error
	install := true
	if op == actuators.OpEnable {
		a.count("EnableUnitFiles")
		var changes []sddbus.EnableUnitFileChange
		done := a.ownFiles()
		install, changes, err = a.c.EnableUnitFilesContext(ctx, units, false, true)
		done(enableChanges(changes))
		for _, c := range changes {
			mark(c.Filename, c.Destination)
		}
	} else {
		a.count("DisableUnitFiles")
		var changes []sddbus.DisableUnitFileChange
		done := a.ownFiles()
		changes, err = a.c.DisableUnitFilesContext(ctx, units, false)
		done(disableChanges(changes))
		for _, c := range changes {
			mark(c.Filename, c.Destination)
		}
	}
	if err != nil {
		// One bad file (no such unit) fails the whole call: each step
		// alone then says which.
		for _, i := range idx {
			if op == actuators.OpEnable {
				res[i], errs[i] = a.enable(ctx, steps[i])
			} else {
				res[i], errs[i] = a.disable(ctx, steps[i])
			}
		}
		return
	}
	states, err := a.unitFileStates(ctx, units)
	for _, i := range idx {
		s := steps[i]
		if changed[s.Unit] {
			res[i] = actuators.Changed
		}
		if err != nil {
			errs[i] = fmt.Errorf("%s %s: %w", op, s.Unit, err)
			continue
		}
		state := states[s.Unit]
		enabled := state == "enabled" || state == "enabled-runtime"
		switch {
		case op == actuators.OpEnable && !enabled && !changed[s.Unit] && (state == "static" || !install):
			errs[i] = fmt.Errorf("enable %s: %w", s.Unit, ErrNoInstallInfo)
		case op == actuators.OpEnable && !enabled:
			errs[i] = fmt.Errorf("enable %s: the unit file is %s afterwards: %w", s.Unit, orNone(state), ErrNotObserved)
		case op == actuators.OpDisable && enabled:
			errs[i] = fmt.Errorf("disable %s: the unit file is %s afterwards: %w", s.Unit, state, ErrNotObserved)
		}
	}
}

// unitFileStates reads the on-disk enablement of units in one call ("" for
// a unit without a unit file); see unitFileState.
func (a *Applier) unitFileStates(ctx context.Context, units []string) (map[string]string, error) {
	a.count("ListUnitFilesByPatterns")
	files, err := a.c.ListUnitFilesByPatternsContext(ctx, nil, units)
	if err != nil {
		return nil, fmt.Errorf("read unit file state: %w", err)
	}
	want := make(map[string]bool, len(units))
	for _, u := range units {
		want[u] = true
	}
	out := make(map[string]string, len(units))
	for _, f := range files {
		if n := path.Base(f.Path); want[n] {
			out[n] = f.Type
		}
	}
	return out, nil
}

// unitStates reads the status of units in one ListUnitsByNames call.
func (a *Applier) unitStates(ctx context.Context, units []string) (map[string]sddbus.UnitStatus, error) {
	a.count("ListUnitsByNames")
	list, err := a.c.ListUnitsByNamesContext(ctx, units)
	if err != nil {
		return nil, fmt.Errorf("read unit states: %w", err)
	}
	out := make(map[string]sddbus.UnitStatus, len(units))
	// One status per name, in order (an alias's status carries the
	// unit's primary name).
	if len(list) == len(units) {
		for j, s := range list {
			out[units[j]] = s
		}
		return out, nil
	}
	for _, s := range list {
		out[s.Name] = s
	}
	return out, nil
}

// queued is one job of a batch.
type queued struct {
	i        int // step index
	before   uint64
	finished func(active, sub string) // OwnJobs
}

// jobMethod is the D-Bus method of a job step's op.
func jobMethod(op actuators.Op) string {
	switch op {
	case actuators.OpStart:
		return sdbus.MethodStartUnit
	case actuators.OpStop:
		return sdbus.MethodStopUnit
	}
	return sdbus.MethodRestartUnit
}

// jobOutcome is the error of a queued job's step from its result: nil
// for "done"; a JobError for another result; ErrJobTimeout or the wait's
// error (werr, RunJobsContext's) when it had not finished.
func (a *Applier) jobOutcome(s actuators.Step, r sdbus.JobResult, werr error) error {
	switch {
	case r.Result == "done":
		return nil
	case r.Result != "":
		return &JobError{Unit: s.Unit, Op: s.Op, Result: r.Result, JobID: r.ID}
	case werr != nil:
		return fmt.Errorf("%s %s: waiting for job %d: %w", s.Op, s.Unit, r.ID, werr)
	}
	return fmt.Errorf("%s %s: job %d after %s: %w", s.Op, s.Unit, r.ID, a.cfg.jobTimeout, ErrJobTimeout)
}

// jobBatch runs the start, stop or restart jobs of steps[idx]; see
// ApplyBatch.
func (a *Applier) jobBatch(ctx context.Context, steps []actuators.Step, idx []int, res []actuators.Result, errs []error) {
	op := steps[idx[0]].Op
	units := make([]string, len(idx))
	for j, i := range idx {
		units[j] = steps[i].Unit
	}

	// Re-checks (a restart's is the ExecMainStartTimestamp its job reads
	// just before it is queued).
	act := make([]queued, 0, len(idx))
	if op == actuators.OpRestart {
		for _, i := range idx {
			act = append(act, queued{i: i})
		}
	} else {
		states, err := a.unitStates(ctx, units)
		if err != nil {
			for _, i := range idx {
				errs[i] = fmt.Errorf("%s %s: %w", op, steps[i].Unit, err)
			}
			return
		}
		for _, i := range idx {
			state := states[steps[i].Unit].ActiveState
			switch {
			case op == actuators.OpStart && (state == "active" || state == "activating" || state == "reloading"):
			case op == actuators.OpStop && (state == "inactive" || state == "failed"):
			default:
				act = append(act, queued{i: i})
			}
		}
	}

	// Queue every job, then wait for each.
	var done []queued
	settled := map[int][2]string{} // step index → ActiveState, SubState read back
	jobs := make([]sdbus.Job, len(act))
	for j, q := range act {
		s := steps[q.i]
		jobs[j] = a.jobOf(s)
		act[j].finished = a.jobQueued(s.Unit)
	}
	defer func() {
		for _, q := range act {
			st := settled[q.i]
			q.finished(st[0], st[1])
		}
	}()
	results, werr := a.c.RunJobsContext(ctx, jobs, a.cfg.jobTimeout)
	for j, q := range act {
		s, r := steps[q.i], results[j]
		if r.Err != nil {
			errs[q.i] = fmt.Errorf("%s %s: %w", s.Op, s.Unit, r.Err)
			continue
		}
		res[q.i] = actuators.Changed
		q.before = r.MainStart
		if errs[q.i] = a.jobOutcome(s, r, werr); errs[q.i] == nil {
			a.mainStartUnread(s, r)
			done = append(done, q)
		}
	}
	if len(done) == 0 {
		return
	}

	// Effect checks.
	names := make([]string, len(done))
	for j, q := range done {
		names[j] = steps[q.i].Unit
	}
	states, err := a.unitStates(ctx, names)
	for _, q := range done {
		s := steps[q.i]
		if err != nil {
			errs[q.i] = fmt.Errorf("%s %s: %w", s.Op, s.Unit, err)
			continue
		}
		st := states[s.Unit]
		settled[q.i] = [2]string{st.ActiveState, st.SubState}
		errs[q.i] = a.checkJobState(ctx, s, q.before, st.ActiveState)
	}
}
