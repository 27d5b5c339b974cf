package reconcile

import (
	"errors"
	"slices"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/observed"
)

func TestNotStayedUp(t *testing.T) {
	start := func(unit string, op actuators.Op, res actuators.Result, err error) StepOutcome {
		return StepOutcome{Step: actuators.Step{Op: op, Object: "Service/x", Unit: unit}, Result: res, Err: err}
	}
	state := func(units ...*observed.Unit) *observed.State {
		s := &observed.State{Units: map[string]*observed.Unit{}}
		for _, u := range units {
			s.Units[u.Name] = u
		}
		return s
	}
	crashed := &observed.Unit{Name: "c.service", ActiveState: "failed", SubState: "failed", Result: "exit-code", ExecMainStatus: 1}
	looping := &observed.Unit{Name: "l.service", ActiveState: "activating", SubState: "auto-restart", Result: "exit-code", ExecMainStatus: 1, NRestarts: 2}
	up := &observed.Unit{Name: "u.service", ActiveState: "active", SubState: "running", Result: "success"}
	restarted := &observed.Unit{Name: "r.service", ActiveState: "active", SubState: "running", Result: "success", NRestarts: 1}
	tests := []struct {
		name     string
		outcomes []StepOutcome
		after    *observed.State
		want     []string
	}{
		{"a started unit that failed at once", []StepOutcome{start("c.service", actuators.OpStart, actuators.Changed, nil)}, state(crashed),
			[]string{"c.service did not stay up after its start: failed/failed, result exit-code, exit status 1"}},
		{"a restarted unit between restarts", []StepOutcome{start("l.service", actuators.OpRestart, actuators.Changed, nil)}, state(looping),
			[]string{"l.service did not stay up after its restart: activating/auto-restart, result exit-code, exit status 1, NRestarts=2"}},
		{"a started unit systemd restarted since", []StepOutcome{start("r.service", actuators.OpStart, actuators.Changed, nil)}, state(restarted),
			[]string{"r.service did not stay up after its start: active/running, NRestarts=1"}},
		{"a started unit that is up", []StepOutcome{start("u.service", actuators.OpStart, actuators.Changed, nil)}, state(up), nil},
		{"a unit the pass did not start", []StepOutcome{start("c.service", actuators.OpStop, actuators.Changed, nil)}, state(crashed), nil},
		{"a start that changed nothing", []StepOutcome{start("c.service", actuators.OpStart, actuators.Unchanged, nil)}, state(crashed), nil},
		{"a failed start (reported by its step)", []StepOutcome{start("c.service", actuators.OpStart, actuators.Changed, errors.New("job failed"))}, state(crashed), nil},
		{"a skipped start", []StepOutcome{{Step: actuators.Step{Op: actuators.OpStart, Unit: "c.service"}, Skipped: "earlier step failed"}}, state(crashed), nil},
		{"no read after the steps", []StepOutcome{start("c.service", actuators.OpStart, actuators.Changed, nil)}, nil, nil},
		{"a unit the read does not hold", []StepOutcome{start("gone.service", actuators.OpStart, actuators.Changed, nil)}, state(crashed), nil},
		{"sorted, once per unit",
			[]StepOutcome{start("l.service", actuators.OpStart, actuators.Changed, nil), start("l.service", actuators.OpRestart, actuators.Changed, nil),
				start("c.service", actuators.OpStart, actuators.Changed, nil), start("u.service", actuators.OpStart, actuators.Changed, nil)},
			state(crashed, looping, up),
			[]string{"c.service did not stay up after its start: failed/failed, result exit-code, exit status 1",
				"l.service did not stay up after its start: activating/auto-restart, result exit-code, exit status 1, NRestarts=2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, f := range NotStayedUp(Result{Outcomes: tt.outcomes}, tt.after) {
				if f.Reason != ReasonNotStayedUp || !f.Warning || f.Object != "Service/x" && f.Object != "" {
					t.Errorf("finding %+v", f)
				}
				got = append(got, f.Message)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}
