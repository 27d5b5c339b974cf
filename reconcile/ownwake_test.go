package reconcile

import (
	"testing"
	"time"

	"resil.dev/resil/actuators"
)

func TestRequeueForRollout(t *testing.T) {
	pending := Plan{Findings: []Finding{{Reason: ReasonRolloutPending}}}
	restarted := []StepOutcome{{Step: actuators.Step{Op: actuators.OpRestart}, Result: actuators.Changed}}
	unchanged := []StepOutcome{{Step: actuators.Step{Op: actuators.OpRestart}, Result: actuators.Unchanged}}
	wrote := []StepOutcome{{Step: actuators.Step{Op: actuators.OpWriteFile}, Result: actuators.Changed}}
	tests := []struct {
		name     string
		plan     Plan
		outcomes []StepOutcome
		requeue  time.Duration
		want     time.Duration
	}{
		{"a wave restarted, others pending: soon", pending, restarted, 0, ownJobsRequeue},
		{"an earlier requeue stands", pending, restarted, time.Millisecond, time.Millisecond},
		{"a later requeue is brought forward", pending, restarted, time.Minute, ownJobsRequeue},
		{"nothing pending", Plan{}, restarted, 0, 0},
		{"nothing restarted", pending, unchanged, 0, 0},
		{"only files written", pending, wrote, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := requeueForRollout(tt.plan, tt.outcomes, tt.requeue); got != tt.want {
				t.Errorf("requeueForRollout = %v, want %v", got, tt.want)
			}
		})
	}
}
