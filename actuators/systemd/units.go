package systemd

import (
	"context"
	"errors"
	"fmt"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/actuators"
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
// re-check: an enabled unit yields no changes.
func (a *Applier) enable(ctx context.Context, s actuators.Step) (actuators.Result, error) {
	if err := checkUnit(s); err != nil {
		return actuators.Unchanged, err
	}
	a.count("EnableUnitFiles")
	install, changes, err := a.c.EnableUnitFilesContext(ctx, []string{s.Unit}, false, true)
	if err != nil {
		return actuators.Unchanged, fmt.Errorf("enable %s: %w", s.Unit, err)
	}
	if len(changes) > 0 {
		return actuators.Changed, nil
	}
	if !install {
		return actuators.Unchanged, fmt.Errorf("enable %s: %w", s.Unit, ErrNoInstallInfo)
	}
	return actuators.Unchanged, nil
}

// disable removes the unit's enablement symlinks in /etc. A unit file that
// no longer exists counts as disabled: disable before remove.
func (a *Applier) disable(ctx context.Context, s actuators.Step) (actuators.Result, error) {
	if err := checkUnit(s); err != nil {
		return actuators.Unchanged, err
	}
	a.count("DisableUnitFiles")
	changes, err := a.c.DisableUnitFilesContext(ctx, []string{s.Unit}, false)
	if err != nil {
		if dbusErrorName(err) == noSuchUnit {
			return actuators.Unchanged, nil
		}
		return actuators.Unchanged, fmt.Errorf("disable %s: %w", s.Unit, err)
	}
	if len(changes) > 0 {
		return actuators.Changed, nil
	}
	return actuators.Unchanged, nil
}

func (a *Applier) activeState(ctx context.Context, s actuators.Step) (string, error) {
	a.count("Get ActiveState")
	p, err := a.c.GetUnitPropertyContext(ctx, s.Unit, "ActiveState")
	if err != nil {
		return "", fmt.Errorf("%s %s: read ActiveState: %w", s.Op, s.Unit, err)
	}
	v, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("%s %s: ActiveState is %s", s.Op, s.Unit, p.Value.Signature())
	}
	return v, nil
}

// job runs a start, stop or restart job and waits for its result.
// Re-checks: start of an active, activating or reloading unit and stop of
// an inactive or failed one are Unchanged; restart always acts.
func (a *Applier) job(ctx context.Context, s actuators.Step) (actuators.Result, error) {
	if err := checkUnit(s); err != nil {
		return actuators.Unchanged, err
	}
	var call func(context.Context, string, string, chan<- string) (int, error)
	switch s.Op {
	case actuators.OpStart:
		call = a.c.StartUnitContext
	case actuators.OpStop:
		call = a.c.StopUnitContext
	case actuators.OpRestart:
		call = a.c.RestartUnitContext
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

	// Buffered to 1: go-systemd sends the result while holding its job
	// lock, so a result nobody waits for any more (timeout, ctx) must not
	// block its signal dispatcher.
	ch := make(chan string, 1)
	a.count(string(s.Op) + " unit")
	id, err := call(ctx, s.Unit, a.cfg.jobMode, ch)
	if err != nil {
		return actuators.Unchanged, fmt.Errorf("%s %s: %w", s.Op, s.Unit, err)
	}
	timer := time.NewTimer(a.cfg.jobTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r != "done" {
			return actuators.Changed, &JobError{Unit: s.Unit, Op: s.Op, Result: r, JobID: id}
		}
		return actuators.Changed, nil
	case <-ctx.Done():
		return actuators.Changed, fmt.Errorf("%s %s: waiting for job %d: %w", s.Op, s.Unit, id, ctx.Err())
	case <-timer.C:
		return actuators.Changed, fmt.Errorf("%s %s: job %d after %s: %w", s.Op, s.Unit, id, a.cfg.jobTimeout, ErrJobTimeout)
	}
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
