package reconcile

import (
	"fmt"
	"sort"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/observed"
)

// StayUpWindow is how long after a pass's last start or restart `apply`
// reads the host again to judge what it started (NotStayedUp): a process
// that exits at once (a few ms after its exec) has exited by then, also
// on a loaded host. Only an apply that started or restarted something
// waits, and only what is left of the window when its pass ends.
const StayUpWindow = 50 * time.Millisecond

// StartedSomething reports whether a step of the pass started or
// restarted a unit (changed, not failed): NotStayedUp has something to
// judge.
func StartedSomething(pass Result) bool {
	for _, o := range pass.Outcomes {
		if started(o) {
			return true
		}
	}
	return false
}

func started(o StepOutcome) bool {
	return o.Err == nil && o.Skipped == "" && o.Result == actuators.Changed && (o.Step.Op == actuators.OpStart || o.Step.Op == actuators.OpRestart)
}

// NotStayedUp returns a warning finding (ReasonNotStayedUp) for each unit
// the pass started or restarted (a start or restart step that changed
// something and did not fail) that after, an observation read after the
// pass's steps, shows not up: failed, waiting to be started again after
// its process exited (SubState auto-restart), or started again by systemd
// since (NRestarts above 0: a start or restart job resets the count, so
// any restart counted is one after the pass's). systemd reports a
// Type=exec or simple service's start done once its process has exec'd,
// so a process that exits at once passes the step's own read-back; the
// read after the steps (StayUpWindow after the last start) catches it. It
// does no I/O: a process that dies after that read is not seen here
// (status and run see it). A unit after does not hold, or a nil after, yields nothing.
// Sorted by unit.
//
// Outcomes:
//   - nil: every unit the pass started was up (or still activating) when
//     read, or the pass started none.
//   - findings: one per unit that was not, with what after shows.
func NotStayedUp(pass Result, after *observed.State) []Finding {
	if after == nil {
		return nil
	}
	var out []Finding
	seen := map[string]bool{}
	for _, o := range pass.Outcomes {
		s := o.Step
		if !started(o) || seen[s.Unit] {
			continue
		}
		seen[s.Unit] = true
		u := after.Units[s.Unit]
		if u == nil || (u.ActiveState != "failed" && u.SubState != "auto-restart" && u.NRestarts == 0) {
			continue
		}
		msg := fmt.Sprintf("%s did not stay up after its %s: %s/%s", s.Unit, s.Op, u.ActiveState, u.SubState)
		if u.Result != "" && u.Result != "success" {
			msg += fmt.Sprintf(", result %s", u.Result)
		}
		if u.ExecMainStatus != 0 {
			msg += fmt.Sprintf(", exit status %d", u.ExecMainStatus)
		}
		if u.NRestarts > 0 {
			msg += fmt.Sprintf(", NRestarts=%d", u.NRestarts)
		}
		out = append(out, Finding{Object: s.Object, Unit: s.Unit, Reason: ReasonNotStayedUp, Message: msg, Warning: true})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Unit < out[j].Unit })
	return out
}
