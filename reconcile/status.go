package reconcile

import (
	"fmt"
	"strings"

	"resil.dev/resil/actuators"
)

// ObjectState is an object's state after a pass, as `reconciler status`
// and the resil_objects metric show it.
type ObjectState string

// Object states.
const (
	StateConverged  ObjectState = "Converged"
	StateConverging ObjectState = "Converging" // steps applied this pass; the next pass confirms
	StateDrifted    ObjectState = "Drifted"    // drift reported, not corrected (drift: report, foreign drop-in)
	StateFailed     ObjectState = "Failed"     // unit failed, a step failed, or a foreign unit blocks it
	StateInvalid    ObjectState = "Invalid"    // its manifest is broken; the last good version stays in force
	StatePaused     ObjectState = "Paused"     // under a pause lease: drift reported, not corrected (reconciler pause)
)

// States lists every object state, in the order metrics export them.
var States = []ObjectState{StateConverged, StateConverging, StateDrifted, StateFailed, StateInvalid, StatePaused}

// Problem reports whether the state keeps the host from counting as
// converged (Drifted, Failed, Invalid).
func (s ObjectState) Problem() bool {
	return s == StateDrifted || s == StateFailed || s == StateInvalid
}

// ObjectStatus is the classification of one desired object after a pass.
type ObjectStatus struct {
	State ObjectState
	// Failed: a failure finding or a failed step. Drift: a warning left
	// uncorrected, or an invalid manifest.
	Failed, Drift bool
	// Message joins the findings and step errors behind the state.
	Message string
}

// Classify returns the status of every desired object of one pass, by
// object ID, and of every object held back by a broken manifest
// (ReasonLastGoodRetained) that has no last good version. It does no I/O. Warnings decide by category: failure →
// Failed, invalid → Invalid, any other warning the plan does not correct
// (drift, informational) → Drifted; a step applied → Converging.
func Classify(res Result) map[string]ObjectStatus {
	findings := map[string][]Finding{}
	for _, f := range res.Plan.Findings {
		findings[f.Object] = append(findings[f.Object], f)
	}
	applied := map[string]bool{}
	stepErr := map[string]string{}
	for _, o := range res.Outcomes {
		switch {
		case o.Err != nil:
			if _, ok := stepErr[o.Step.Object]; !ok {
				stepErr[o.Step.Object] = fmt.Sprintf("%s: %v", o.Step, o.Err)
			}
		case o.Skipped == "" && o.Result == actuators.Changed:
			applied[o.Step.Object] = true
		}
	}
	out := map[string]ObjectStatus{}
	for _, o := range res.Unsupported {
		var msgs []string
		for _, f := range findings[o.ID()] {
			msgs = append(msgs, string(f.Reason)+": "+f.Message)
		}
		out[o.ID()] = ObjectStatus{State: StateInvalid, Drift: true, Message: strings.Join(msgs, "; ")}
	}
	for _, o := range res.Desired {
		id := o.ID()
		var st ObjectStatus
		var msgs []string
		failed, invalid, drift, paused := false, false, false, false
		for _, f := range findings[id] {
			if f.Reason == ReasonPaused {
				paused = true
				msgs = append(msgs, string(f.Reason)+": "+f.Message)
				continue
			}
			if !f.Warning {
				continue
			}
			switch c := f.Reason.Category(); {
			case c == CategoryFailure:
				failed = true
			case c == CategoryInvalid:
				invalid = true
			case !f.Enforced:
				drift = true
			default:
				continue // being corrected this pass
			}
			msgs = append(msgs, string(f.Reason)+": "+f.Message)
		}
		if e, ok := stepErr[id]; ok {
			failed = true
			msgs = append(msgs, string(ReasonApplyFailed)+": "+e)
		}
		switch {
		case failed:
			st.State = StateFailed
		case invalid:
			st.State = StateInvalid
		case paused:
			st.State = StatePaused
		case drift:
			st.State = StateDrifted
		case applied[id]:
			st.State = StateConverging
		default:
			st.State = StateConverged
		}
		st.Failed, st.Drift = failed, drift || invalid
		st.Message = strings.Join(msgs, "; ")
		out[id] = st
	}
	// An object whose manifest is broken and that has no last good version
	// is in neither list: what is on the host of it stays, and it is
	// Invalid all the same.
	for _, f := range res.Plan.Findings {
		if _, ok := out[f.Object]; ok || f.Object == "" || f.Reason != ReasonLastGoodRetained {
			continue
		}
		var msgs []string
		for _, g := range findings[f.Object] {
			msgs = append(msgs, string(g.Reason)+": "+g.Message)
		}
		out[f.Object] = ObjectStatus{State: StateInvalid, Drift: true, Message: strings.Join(msgs, "; ")}
	}
	return out
}
