package observed

import "testing"

func TestExitedOnItsOwn(t *testing.T) {
	const start, exit = 1_000_000, 2_000_000
	for _, c := range []struct {
		name              string
		u                 *Unit
		own, beforeActive bool
	}{
		{"exited, then the unit left active", &Unit{ActiveState: "inactive", ExecMainStartTimestamp: start, ExecMainExitTimestamp: exit, ActiveExitTimestamp: exit + 10}, true, false},
		{"stopped: the unit left active first", &Unit{ActiveState: "inactive", ExecMainStartTimestamp: start, ExecMainExitTimestamp: exit, ActiveExitTimestamp: exit - 10}, false, false},
		{"exited before the unit became active, first run", &Unit{ActiveState: "inactive", ExecMainStartTimestamp: start, ExecMainExitTimestamp: start + 5}, false, true},
		{"exited before the unit became active, an older run's exit", &Unit{ActiveState: "inactive", ExecMainStartTimestamp: start, ExecMainExitTimestamp: start + 5, ActiveExitTimestamp: start - 100}, false, true},
		{"killed by a signal", &Unit{ActiveState: "inactive", ExecMainStatus: 15, ExecMainStartTimestamp: start, ExecMainExitTimestamp: exit, ActiveExitTimestamp: exit + 10}, false, false},
		{"exit status 1 before active", &Unit{ActiveState: "inactive", ExecMainStatus: 1, ExecMainStartTimestamp: start, ExecMainExitTimestamp: start + 5}, false, false},
		{"never ran", &Unit{ActiveState: "inactive"}, false, false},
		{"running", &Unit{ActiveState: "active", ExecMainStartTimestamp: start}, false, false},
		{"failed", &Unit{ActiveState: "failed", ExecMainStartTimestamp: start, ExecMainExitTimestamp: exit, ActiveExitTimestamp: exit + 10}, false, false},
		{"exit before start (an older run's exit)", &Unit{ActiveState: "inactive", ExecMainStartTimestamp: start, ExecMainExitTimestamp: start - 5, ActiveExitTimestamp: start - 1}, false, false},
		{"nil", nil, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.u.ExitedOnItsOwn(); got != c.own {
				t.Errorf("ExitedOnItsOwn() = %v, want %v", got, c.own)
			}
			if got := c.u.ExitedBeforeActive(); got != c.beforeActive {
				t.Errorf("ExitedBeforeActive() = %v, want %v", got, c.beforeActive)
			}
		})
	}
}
