package systemd

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/internal/sdbus"
	"resil.dev/resil/observed"
)

// noSuchUnit is systemd's D-Bus error for a unit file that does not exist.
const noSuchUnit = "org.freedesktop.systemd1.NoSuchUnit"

func dbusErrorName(err error) string {
	var derr godbus.Error
	if errors.As(err, &derr) {
		return derr.Name
	}
	var pderr *godbus.Error
	if errors.As(err, &pderr) {
		return pderr.Name
	}
	return ""
}

// enable enables the unit file persistently (symlinks in /etc, runtime=false;
// force replaces symlinks that point elsewhere). systemd's change list is the
// re-check: an enabled unit yields no changes. Afterwards the on-disk state
// is read back (ListUnitFilesByPatterns): unless systemd then reports the
// unit enabled, the step fails with ErrNotObserved.
func (a *Applier) enable(ctx context.Context, s actuators.Step) (actuators.Result, error) {
	if err := checkUnit(s); err != nil {
		return actuators.Unchanged, err
	}
	a.count("EnableUnitFiles")
	done := a.ownFiles()
	install, changes, err := a.c.EnableUnitFilesContext(ctx, []string{s.Unit}, false, true)
	done(enableChanges(changes))
	if err != nil {
		return actuators.Unchanged, fmt.Errorf("enable %s: %w", s.Unit, err)
	}
	res := actuators.Unchanged
	if len(changes) > 0 {
		res = actuators.Changed
	} else if !install {
		return actuators.Unchanged, fmt.Errorf("enable %s: %w", s.Unit, ErrNoInstallInfo)
	}
	state, err := a.unitFileState(ctx, s.Unit)
	if err != nil {
		return res, fmt.Errorf("enable %s: %w", s.Unit, err)
	}
	if state != "enabled" && state != "enabled-runtime" {
		return res, fmt.Errorf("enable %s: the unit file is %s afterwards: %w", s.Unit, orNone(state), ErrNotObserved)
	}
	return res, nil
}

// disable removes the unit's enablement symlinks in /etc. A unit file that
// no longer exists counts as disabled: disable before remove. Afterwards
// the on-disk state is read back: a unit systemd still reports enabled
// fails with ErrNotObserved.
func (a *Applier) disable(ctx context.Context, s actuators.Step) (actuators.Result, error) {
	if err := checkUnit(s); err != nil {
		return actuators.Unchanged, err
	}
	a.count("DisableUnitFiles")
	done := a.ownFiles()
	changes, err := a.c.DisableUnitFilesContext(ctx, []string{s.Unit}, false)
	done(disableChanges(changes))
	if err != nil {
		if dbusErrorName(err) == noSuchUnit {
			return actuators.Unchanged, nil
		}
		return actuators.Unchanged, fmt.Errorf("disable %s: %w", s.Unit, err)
	}
	res := actuators.Unchanged
	if len(changes) > 0 {
		res = actuators.Changed
	}
	state, err := a.unitFileState(ctx, s.Unit)
	if err != nil {
		return res, fmt.Errorf("disable %s: %w", s.Unit, err)
	}
	if state == "enabled" || state == "enabled-runtime" {
		return res, fmt.Errorf("disable %s: the unit file is %s afterwards: %w", s.Unit, state, ErrNotObserved)
	}
	return res, nil
}

// unitFileState reads a unit's enablement from disk as systemd computes it
// now ("" when there is no unit file), not the UnitFileState property,
// which only daemon-reload refreshes.
func (a *Applier) unitFileState(ctx context.Context, unit string) (string, error) {
	a.count("ListUnitFilesByPatterns")
	files, err := a.c.ListUnitFilesByPatternsContext(ctx, nil, []string{unit})
	if err != nil {
		return "", fmt.Errorf("read unit file state: %w", err)
	}
	for _, f := range files {
		if path.Base(f.Path) == unit {
			return f.Type, nil
		}
	}
	return "", nil
}

func orNone(s string) string {
	if s == "" {
		return "absent"
	}
	return s
}

func (a *Applier) activeState(ctx context.Context, s actuators.Step) (string, error) {
	return a.unitProp(ctx, s, "ActiveState")
}

// unitProp reads one string property of the Unit interface.
func (a *Applier) unitProp(ctx context.Context, s actuators.Step, name string) (string, error) {
	a.count("Get " + name)
	p, err := a.c.GetUnitPropertyContext(ctx, s.Unit, name)
	if err != nil {
		return "", fmt.Errorf("%s %s: read %s: %w", s.Op, s.Unit, name, err)
	}
	v, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("%s %s: %s is %s", s.Op, s.Unit, name, p.Value.Signature())
	}
	return v, nil
}

// mainStart reads a service's ExecMainStartTimestamp (µs; 0 for other unit
// types and for a service that never ran).
func (a *Applier) mainStart(ctx context.Context, s actuators.Step) (uint64, error) {
	if !strings.HasSuffix(s.Unit, ".service") {
		return 0, nil
	}
	a.count("Get ExecMainStartTimestamp")
	v, err := sdbus.MainStart(ctx, a.c, s.Unit)
	if err != nil {
		return 0, fmt.Errorf("%s %s: read ExecMainStartTimestamp: %w", s.Op, s.Unit, err)
	}
	return v, nil
}

// jobOf is the job of a start, stop or restart step: a restart of a
// service reads its ExecMainStartTimestamp just before (checkJobState).
func (a *Applier) jobOf(s actuators.Step) sdbus.Job {
	j := sdbus.Job{Method: jobMethod(s.Op), Unit: s.Unit, Mode: a.cfg.jobMode}
	if s.Op == actuators.OpRestart && strings.HasSuffix(s.Unit, ".service") {
		j.MainStartBefore = true
		a.count("Get ExecMainStartTimestamp")
	}
	a.count(string(s.Op) + " unit")
	return j
}

// mainStartUnread logs a restart whose ExecMainStartTimestamp could not be
// read before its job: the job ran (failing the step would restart it
// again next pass); its effect check then leaves out the comparison of
// start times (r.MainStart is 0).
func (a *Applier) mainStartUnread(s actuators.Step, r sdbus.JobResult) {
	if r.MainStartErr != nil {
		a.log.Warn("restart not checked against the main process's start before it", zap.Stringer("step", s), zap.Error(r.MainStartErr))
	}
}

// job runs a start, stop or restart job, waits for its result, then checks
// its effect.
// Re-checks: start of an active, activating or reloading unit and stop of
// an inactive or failed one are Unchanged; restart always acts.
// Effect checks (a "done" job whose effect is not seen fails with
// ErrNotObserved): after a start or restart the unit is active, activating
// or reloading (or, for a Type=oneshot service, inactive with result
// success),
// not failed; after a restart of a service its main process started anew
// (ExecMainStartTimestamp moved); after a stop it is inactive or failed.
func (a *Applier) job(ctx context.Context, s actuators.Step) (actuators.Result, error) {
	if err := checkUnit(s); err != nil {
		return actuators.Unchanged, err
	}
	if s.Op != actuators.OpRestart {
		state, err := a.activeState(ctx, s)
		if err != nil {
			return actuators.Unchanged, err
		}
		switch {
		case s.Op == actuators.OpStart && (state == "active" || state == "activating" || state == "reloading"):
			return actuators.Unchanged, nil
		case s.Op == actuators.OpStop && (state == "inactive" || state == "failed"):
			return actuators.Unchanged, nil
		}
	}

	settled := ""
	finished := a.jobQueued(s.Unit)
	defer func() { finished(settled, "") }()
	results, werr := a.c.RunJobsContext(ctx, []sdbus.Job{a.jobOf(s)}, a.cfg.jobTimeout)
	r := results[0]
	if r.Err != nil {
		return actuators.Unchanged, fmt.Errorf("%s %s: %w", s.Op, s.Unit, r.Err)
	} else if err := a.jobOutcome(s, r, werr); err != nil {
		return actuators.Changed, err
	}
	a.mainStartUnread(s, r)
	state, err := a.activeState(ctx, s)
	if err != nil {
		return actuators.Changed, err
	}
	settled = state
	return actuators.Changed, a.checkJobState(ctx, s, r.MainStart, state)
}

// checkJobState checks the effect of a "done" job on a unit now in
// ActiveState state; see job.
func (a *Applier) checkJobState(ctx context.Context, s actuators.Step, before uint64, state string) error {
	switch s.Op {
	case actuators.OpStop:
		if state != "inactive" && state != "failed" {
			return fmt.Errorf("stop %s: job done but the unit is %s: %w", s.Unit, state, ErrNotObserved)
		}
		return nil
	}
	switch state {
	case "active", "activating", "reloading":
	case "inactive":
		// A oneshot service is inactive after a successful run, and so is
		// a service whose process the job started and that exited by
		// itself with status 0 (restart policy on-failure or never).
		if done, err := a.finishedRun(ctx, s, before); err != nil || done {
			return err
		}
		return fmt.Errorf("%s %s: job done but the unit is inactive: %w", s.Op, s.Unit, ErrNotObserved)
	default:
		return fmt.Errorf("%s %s: job done but the unit is %s: %w", s.Op, s.Unit, state, ErrNotObserved)
	}
	if s.Op == actuators.OpRestart && before != 0 {
		after, err := a.mainStart(ctx, s)
		if err != nil {
			return err
		}
		if after == before {
			return fmt.Errorf("restart %s: job done but the main process was not started again: %w", s.Unit, ErrNotObserved)
		}
	}
	return nil
}

// finishedRun reports whether s.Unit is a service whose run the job
// started and that has finished well: a Type=oneshot service with result
// success, or a service whose main process started after before (the
// main process's start before the job, 0 when unknown) and exited by
// itself with status 0 (observed.Unit.ExitedOnItsOwn: it exited before
// the unit left the active state).
func (a *Applier) finishedRun(ctx context.Context, s actuators.Step, before uint64) (bool, error) {
	if !strings.HasSuffix(s.Unit, ".service") {
		return false, nil
	}
	str := func(name string) (string, error) {
		a.count("Get " + name)
		p, err := a.c.GetUnitTypePropertyContext(ctx, s.Unit, "Service", name)
		if err != nil {
			return "", fmt.Errorf("%s %s: read %s: %w", s.Op, s.Unit, name, err)
		}
		v, _ := p.Value.Value().(string)
		return v, nil
	}
	typ, err := str("Type")
	if err != nil {
		return false, err
	}
	res, err := str("Result")
	if err != nil || res != "success" {
		return false, err
	}
	if typ == "oneshot" {
		return true, nil
	}
	u := &observed.Unit{ActiveState: "inactive"}
	for _, f := range []struct {
		iface, name string
		set         func(v any)
	}{
		{"Service", "ExecMainStartTimestamp", func(v any) { u.ExecMainStartTimestamp, _ = v.(uint64) }},
		{"Service", "ExecMainStatus", func(v any) { u.ExecMainStatus, _ = v.(int32) }},
		{"Service", "ExecMainExitTimestamp", func(v any) { u.ExecMainExitTimestamp, _ = v.(uint64) }},
		{"", "ActiveExitTimestamp", func(v any) { u.ActiveExitTimestamp, _ = v.(uint64) }},
	} {
		a.count("Get " + f.name)
		var p *sddbus.Property
		if f.iface == "" {
			p, err = a.c.GetUnitPropertyContext(ctx, s.Unit, f.name)
		} else {
			p, err = a.c.GetUnitTypePropertyContext(ctx, s.Unit, f.iface, f.name)
		}
		if err != nil {
			// Not told: the effect check reports the unit inactive.
			a.log.Debug("finished run not told", zap.String("unit", s.Unit), zap.String("property", f.name), zap.Error(err))
			return false, nil
		}
		f.set(p.Value.Value())
		if u.ExecMainStartTimestamp <= before {
			return false, nil // the job started no process
		}
	}
	// A Type=exec or simple unit is active once its process has exec'd: a
	// run that ended before systemd saw it active (a busy PID 1) is one
	// that exited by itself (observed.Unit.ExitedBeforeActive).
	exited := u.ExitedOnItsOwn() || (typ == "exec" || typ == "simple") && u.ExitedBeforeActive()
	return exited && u.ExecMainStartTimestamp > before, nil
}

// resetFailed clears a failed unit's state, result and restart counters.
// A unit that is not failed is left alone.
func (a *Applier) resetFailed(ctx context.Context, s actuators.Step) (actuators.Result, error) {
	if err := checkUnit(s); err != nil {
		return actuators.Unchanged, err
	}
	state, err := a.activeState(ctx, s)
	if err != nil {
		return actuators.Unchanged, err
	}
	if state != "failed" {
		return actuators.Unchanged, nil
	}
	a.count("ResetFailedUnit")
	if err := a.c.ResetFailedUnitContext(ctx, s.Unit); err != nil {
		return actuators.Unchanged, fmt.Errorf("reset-failed %s: %w", s.Unit, err)
	}
	return actuators.Changed, nil
}
