package process

import (
	"time"

	"resil.dev/resil/desired"
)

// Decision is what the restart tracker says to do after a process exited.
type Decision int

// Decisions.
const (
	// DecisionRestart: wait the returned delay (SubState auto-restart), then start again.
	DecisionRestart Decision = iota
	// DecisionStop: the unit becomes inactive (dead); nothing failed.
	DecisionStop
	// DecisionFail: the unit becomes failed; the policy does not restart it.
	DecisionFail
	// DecisionLimit: the unit becomes failed with Result start-limit-hit; no
	// more restarts until its spec changes or it is reset.
	DecisionLimit
)

func (d Decision) String() string {
	switch d {
	case DecisionRestart:
		return "restart"
	case DecisionStop:
		return "stop"
	case DecisionFail:
		return "fail"
	case DecisionLimit:
		return "start-limit-hit"
	}
	return "unknown"
}

// Reason explains a decision; it ends up in logs and events.
type Reason string

// Reasons.
const (
	ReasonStopRequested  Reason = "stop requested"
	ReasonCleanExit      Reason = "exited cleanly, policy does not restart on success"
	ReasonPolicyNever    Reason = "failed, restart policy is never"
	ReasonPolicyAlways   Reason = "exited, restart policy is always"
	ReasonPolicyFailure  Reason = "failed, restart policy is on-failure"
	ReasonStartLimit     Reason = "start limit hit"
	ReasonStartAllowed   Reason = "start allowed"
	ReasonOneshotSuccess Reason = "job finished"
)

// Tracker decides restarts like systemd's Restart=, RestartSec=,
// StartLimitBurst= and StartLimitIntervalSec=. It does no I/O and reads time
// only through the injected clock, so it is tested with a fake one.
//
// Unit lifecycle driven by the tracker (the supervisor acts, the tracker decides):
//
//	           start (AllowStart)                 exit
//	inactive ──────────────► activating ──► active ─────► Decide
//	  ▲  ▲    refused: failed  (start-pre,   (running)       │
//	  │  │    start-limit-hit   start)                       │
//	  │  │                                                   ├─ DecisionRestart ─► auto-restart ──(delay)──► activating
//	  │  └───────────── DecisionStop (clean exit / stop) ◄───┤
//	  │                                                      ├─ DecisionFail ────► failed
//	  └── reset / new spec ◄── failed ◄── DecisionLimit ◄────┘
//
// A start is counted when it happens (Started). A restart is refused when
// Burst starts already happened within Interval: the unit fails with
// start-limit-hit. With Interval unset and Burst > 0, starts are counted
// since the last Reset (a timer job's attempts per activation). Burst <= 0
// means no limit.
type Tracker struct {
	now    func() time.Time
	spec   RestartSpec
	starts []time.Time
}

// NewTracker returns a tracker for spec reading time from now.
func NewTracker(spec RestartSpec, now func() time.Time) *Tracker {
	if now == nil {
		now = time.Now
	}
	return &Tracker{now: now, spec: spec}
}

// Started records a start at the current time.
func (t *Tracker) Started() {
	t.prune()
	t.starts = append(t.starts, t.now())
}

// SetSpec changes the policy and keeps the recorded starts (a daemon-reload
// between two automatic restarts does not reset the start limit, as in systemd).
func (t *Tracker) SetSpec(spec RestartSpec) { t.spec = spec }

// Reset forgets all starts (reset-failed, new spec, new timer activation).
func (t *Tracker) Reset() { t.starts = nil }

// Starts is the number of starts still inside the limit window.
func (t *Tracker) Starts() int { t.prune(); return len(t.starts) }

// AllowStart reports whether one more start fits in the limit:
//
//	(true, ReasonStartAllowed) - start it
//	(false, ReasonStartLimit)  - refuse; the unit fails with start-limit-hit
func (t *Tracker) AllowStart() (bool, Reason) {
	if t.spec.Burst <= 0 {
		return true, ReasonStartAllowed
	}
	t.prune()
	if len(t.starts) >= t.spec.Burst {
		return false, ReasonStartLimit
	}
	return true, ReasonStartAllowed
}

// Decide says what follows an exit. clean is systemd's notion of a
// successful exit (status 0, or SIGHUP/SIGINT/SIGTERM/SIGPIPE); requested
// means the supervisor itself stopped the process. Outcomes:
//
//	(DecisionStop, 0, ReasonStopRequested|ReasonCleanExit) - inactive, dead
//	(DecisionFail, 0, ReasonPolicyNever)                    - failed
//	(DecisionRestart, delay, ReasonPolicyAlways|ReasonPolicyFailure) - restart after delay
//	(DecisionLimit, 0, ReasonStartLimit)                    - failed, start-limit-hit
func (t *Tracker) Decide(clean, requested bool) (Decision, time.Duration, Reason) {
	if requested {
		return DecisionStop, 0, ReasonStopRequested
	}
	var reason Reason
	switch t.spec.Policy {
	case desired.RestartAlways:
		reason = ReasonPolicyAlways
	case desired.RestartNever:
		if clean {
			return DecisionStop, 0, ReasonCleanExit
		}
		return DecisionFail, 0, ReasonPolicyNever
	default: // on-failure
		if clean {
			return DecisionStop, 0, ReasonCleanExit
		}
		reason = ReasonPolicyFailure
	}
	if ok, r := t.AllowStart(); !ok {
		return DecisionLimit, 0, r
	}
	return DecisionRestart, t.spec.Delay.D(), reason
}

func (t *Tracker) prune() {
	iv := t.spec.Interval.D()
	if iv <= 0 {
		return
	}
	cut := t.now().Add(-iv)
	i := 0
	for i < len(t.starts) && !t.starts[i].After(cut) {
		i++
	}
	t.starts = t.starts[i:]
}
