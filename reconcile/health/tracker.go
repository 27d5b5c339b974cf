package health

// State of a probe.
type State string

// Probe states.
const (
	// Unknown: no verdict yet (initial delay, or fewer results than a
	// threshold).
	Unknown State = "unknown"
	// Passing: Successes passes in a row (or the first pass from Unknown).
	Passing State = "passing"
	// Failing: Failures failures in a row.
	Failing State = "failing"
)

// Tracker turns consecutive attempt results into a State, with the
// kubelet's thresholds. No I/O, no clock.
//
//	           successes in a row
//	Unknown ───────────────────────────▶ Passing
//	   │                                 ▲     │
//	   │ failures          successes in  │     │ failures
//	   │ in a row                 a row  │     ▼ in a row
//	   └───────────────────────────────▶ Failing
//
// From Unknown the first verdict needs the same runs as any other:
// Successes passes or Failures failures in a row.
type Tracker struct {
	failures, successes int
	fails, passes       int // current runs
	state               State
}

// NewTracker returns a tracker in state Unknown; thresholds below 1 count
// as 1.
func NewTracker(failures, successes int) *Tracker {
	return &Tracker{failures: max(failures, 1), successes: max(successes, 1), state: Unknown}
}

// Observe records one attempt and returns the state after it and whether
// it changed.
func (t *Tracker) Observe(ok bool) (State, bool) {
	prev := t.state
	if ok {
		t.passes++
		t.fails = 0
		if t.passes >= t.successes {
			t.state = Passing
		}
	} else {
		t.fails++
		t.passes = 0
		if t.fails >= t.failures {
			t.state = Failing
		}
	}
	return t.state, t.state != prev
}

// State returns the current state.
func (t *Tracker) State() State { return t.state }

// Failures returns the current run of failures.
func (t *Tracker) Failures() int { return t.fails }
