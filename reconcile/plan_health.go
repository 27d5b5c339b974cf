package reconcile

import (
	"fmt"
	"strings"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile/health"
)

// LivenessRestartReason begins the reason of a restart step planned for a
// failed liveness probe; the restart ledger records such a restart with
// cause liveness (IsLivenessRestart).
const LivenessRestartReason = "liveness probe failed"

// IsLivenessRestart reports whether s is a restart planned for a failed
// liveness probe.
func IsLivenessRestart(s actuators.Step) bool {
	return s.Op == actuators.OpRestart && strings.HasPrefix(s.Reason, LivenessRestartReason)
}

// probeStatus returns the status of unit's probe of kind for the process
// u runs now; a status of another process (the one a restart replaced,
// not yet re-targeted) is none.
func (p *planner) probeStatus(unit, kind string, u *observed.Unit) (health.Status, bool) {
	if u == nil || u.MainPID == 0 {
		return health.Status{}, false
	}
	for _, s := range p.in.Health {
		if s.Unit == unit && s.Kind == kind && s.MainPID == u.MainPID {
			return s, true
		}
	}
	return health.Status{}, false
}

// liveness plans the restart of a running service whose liveness probe
// failed Failures times in a row (action restart), or only reports it
// (action report). It returns true when it planned the restart.
func (p *planner) liveness(o *desired.Object, unit string, u *observed.Unit) bool {
	h := o.Service.Health
	if h == nil || u == nil || u.ActiveState != "active" {
		return false
	}
	for _, kind := range []string{desired.ProbeLiveness, desired.ProbeReadiness} {
		if st, ok := p.probeStatus(unit, kind, u); ok && st.CannotProbe {
			p.find(o.ID(), unit, ReasonProbeError, fmt.Sprintf("the agent cannot run the %s probe of %s: %s; the service is not judged by it", kind, unit, OrDash(st.LastError)), true, false)
		}
	}
	if h.Liveness == nil {
		return false
	}
	st, ok := p.probeStatus(unit, desired.ProbeLiveness, u)
	if !ok || st.State != health.Failing {
		return false
	}
	probe := h.Liveness.Effective(desired.ProbeLiveness)
	// The threshold, not the running count, goes into the wording: a
	// reported failure keeps one event (its count bumped) while it lasts.
	why := fmt.Sprintf("%s %d times: %s", LivenessRestartReason, probe.Failures, OrDash(st.LastError))
	// Each failing process is an occurrence of its own (its PID), in one
	// event row for the unit (Finding.Occurrence).
	msg := fmt.Sprintf("%s failed its liveness probe %d times in a row: %s", unit, probe.Failures, OrDash(st.LastError))
	pid := fmt.Sprintf("pid %d", u.MainPID)
	if probe.Action == desired.ProbeReport {
		p.findOccurrence(o.ID(), unit, ReasonUnhealthy, msg+"; action report: left running", pid, true)
		return false
	}
	p.findOccurrence(o.ID(), unit, ReasonUnhealthy, msg+"; restarting", pid, true)
	p.findings[len(p.findings)-1].Enforced = true
	p.rt(actuators.OpRestart, o, unit, why)
	return true
}
