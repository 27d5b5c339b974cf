package reconcile

import (
	"time"

	"resil.dev/resil/actuators"
)

// ownJobsRequeue is how soon a pass that restarted or started units while
// a rollout holds others back asks for the next pass.
const ownJobsRequeue = 100 * time.Millisecond

// requeueForRollout returns the requeue a pass needs after its own jobs:
// a backend may not wake the loop for the agent's own restarts (systemd:
// one pass per edit), yet a rollout's next wave is admitted by the pass
// after the current wave became ready. So a pass that started or
// restarted something while candidates are RolloutPending asks for
// another pass soon; that pass admits nothing while the wave is not
// ready (no steps, no further requeue) and a readiness change wakes the
// loop as before.
func requeueForRollout(plan Plan, outcomes []StepOutcome, requeue time.Duration) time.Duration {
	pending := false
	for _, f := range plan.Findings {
		if f.Reason == ReasonRolloutPending {
			pending = true
			break
		}
	}
	if !pending {
		return requeue
	}
	for _, oc := range outcomes {
		if oc.Result == actuators.Changed && (oc.Step.Op == actuators.OpRestart || oc.Step.Op == actuators.OpStart) {
			if requeue == 0 || ownJobsRequeue < requeue {
				return ownJobsRequeue
			}
			return requeue
		}
	}
	return requeue
}
