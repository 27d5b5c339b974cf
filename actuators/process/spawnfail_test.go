package process

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// A main process whose exec fails (203/EXEC: its binary is missing) is a
// failed run, as systemd has it for Type=exec: the start fails, and the
// restart policy restarts it until the start limit; policy never leaves it
// failed. A binary that appears meanwhile runs at the next restart.
func TestSpawnFailureRestartedByPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		policy    desired.RestartPolicy
		appear    bool // the binary is installed after the first failure
		wantState string
		wantRes   string
	}{
		{"on-failure, start limit", desired.RestartOnFailure, false, "failed", ResultStartLimitHit},
		{"always, start limit", desired.RestartAlways, false, "failed", ResultStartLimitHit},
		{"never", desired.RestartNever, false, "failed", ResultExitCode},
		{"on-failure, binary installed", desired.RestartOnFailure, true, "active", ResultExitCode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			h := newHarness(t, "", Options{})
			h.run()
			bin := filepath.Join(h.dir, "prog")
			delay := "20ms"
			if tc.appear {
				delay = "500ms"
			}
			h.install(service("web", desired.ServiceSpec{Command: []string{bin},
				Restart: &desired.RestartSpec{Policy: tc.policy, Delay: desired.Duration(delay), Limit: &desired.StartLimit{Burst: 3, Interval: "1m"}}}), true)
			if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "web.service"}); err == nil {
				t.Fatal("start of a missing binary succeeded")
			}
			if u := h.unit("web.service"); u.ExecMainStatus != 203 {
				t.Fatalf("after the failed start: status %d, want 203", u.ExecMainStatus)
			}
			if tc.appear {
				if err := os.WriteFile(bin, []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755); err != nil {
					t.Fatal(err)
				}
				u := h.waitUnit("web.service", "running", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != 0 })
				if u.NRestarts != 1 {
					t.Fatalf("NRestarts %d, want 1 (the restart after the failed exec)", u.NRestarts)
				}
				return
			}
			u := h.waitUnit("web.service", tc.wantState, func(u *observed.Unit) bool { return u.ActiveState == tc.wantState })
			if u.Result != tc.wantRes || u.ExecMainStatus != 203 {
				t.Fatalf("%s: result %s, status %d; want %s, 203", u.ActiveState, u.Result, u.ExecMainStatus, tc.wantRes)
			}
		})
	}
}
