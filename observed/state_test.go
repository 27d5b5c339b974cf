package observed

import "testing"

func TestExitedOnItsOwn(t *testing.T) {
	const start, exit = 1_000_000, 2_000_000
	for _, c := range []struct {
		name string
		u    *Unit
		want bool
	}{
		{"exited, then the unit left active", &Unit{ActiveState: "inactive", ExecMainStartTimestamp: start, ExecMainExitTimestamp: exit, ActiveExitTimestamp: exit + 10}, true},
		{"stopped: the unit left active first", &Unit{ActiveState: "inactive", ExecMainStartTimestamp: start, ExecMainExitTimestamp: exit, ActiveExitTimestamp: exit - 10}, false},
		{"exited before the unit became active, first run", &Unit{ActiveState: "inactive", ExecMainStartTimestamp: start, ExecMainExitTimestamp: start + 5}, true},
		{"exited before the unit became active, an older run's exit", &Unit{ActiveState: "inactive", ExecMainStartTimestamp: start, ExecMainExitTimestamp: start + 5, ActiveExitTimestamp: start - 100}, true},
		{"killed by a signal", &Unit{ActiveState: "inactive", ExecMainStatus: 15, ExecMainStartTimestamp: start, ExecMainExitTimestamp: exit, ActiveExitTimestamp: exit + 10}, false},
		{"exit status 1", &Unit{ActiveState: "inactive", ExecMainStatus: 1, ExecMainStartTimestamp: start, ExecMainExitTimestamp: start + 5}, false},
		{"never ran", &Unit{ActiveState: "inactive"}, false},
		{"running", &Unit{ActiveState: "active", ExecMainStartTimestamp: start}, false},
		{"failed", &Unit{ActiveState: "failed", ExecMainStartTimestamp: start, ExecMainExitTimestamp: exit, ActiveExitTimestamp: exit + 10}, false},
		{"exit before start (an older run's exit)", &Unit{ActiveState: "inactive", ExecMainStartTimestamp: start, ExecMainExitTimestamp: start - 5, ActiveExitTimestamp: start - 1}, false},
		{"nil", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.u.ExitedOnItsOwn(); got != c.want {
				t.Errorf("ExitedOnItsOwn() = %v, want %v", got, c.want)
			}
		})
	}
}
