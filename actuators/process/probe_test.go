package process

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// A startup probe holds the start in activating/start-post until it
// passes: the start step returns only then (what orders the steps after
// it), and only after the probed condition holds.
func TestStartupProbeGatesStart(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir, Options{})
	h.run()
	flag, gate := filepath.Join(dir, "healthy"), filepath.Join(dir, "gate")
	h.install(service("web", desired.ServiceSpec{
		Command: sh("while [ ! -e " + gate + " ]; do sleep 0.02; done; touch " + flag + "; exec sleep 1000"),
		Health:  &desired.HealthSpec{Startup: &desired.Probe{Exec: []string{"/usr/bin/test", "-e", flag}, Interval: "100ms", Timeout: "60s"}},
	}), true)
	done := make(chan error, 1)
	go func() {
		_, err := h.a.Apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "web.service"})
		done <- err
	}()
	u := h.waitUnit("web.service", "start-post", func(u *observed.Unit) bool { return u.SubState == "start-post" })
	if u.ActiveState != "activating" || u.MainPID == 0 {
		t.Fatalf("while probing: %s/%s pid %d, want activating/start-post with a main process", u.ActiveState, u.SubState, u.MainPID)
	}
	select {
	case err := <-done:
		t.Fatalf("start returned before the probe passed: %v", err)
	default:
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("start: %v", err)
	}
	if _, err := os.Stat(flag); err != nil {
		t.Fatalf("start done but the probed file is missing: %v", err)
	}
	if u := h.unit("web.service"); !isActive(u) {
		t.Fatalf("after the probe passed: %s/%s, want active/running", u.ActiveState, u.SubState)
	}
}

// A startup probe that never passes fails the start: the process is
// stopped, the unit fails with exit-code, and the restart policy applies
// (on-failure: restarted, each start probed again, until the start limit).
func TestStartupProbeFailsStart(t *testing.T) {
	tests := []struct {
		name     string
		restart  *desired.RestartSpec
		restarts uint32 // NRestarts once failed
		result   string
	}{
		{"restart never", &desired.RestartSpec{Policy: desired.RestartNever}, 0, ResultExitCode},
		{"on-failure until the limit", &desired.RestartSpec{Policy: desired.RestartOnFailure, Delay: "10ms", Limit: &desired.StartLimit{Burst: 2, Interval: "1h"}}, 1, ResultStartLimitHit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			h := newHarness(t, dir, Options{})
			h.run()
			h.install(service("web", desired.ServiceSpec{
				Command: []string{"sleep", "1000"},
				Restart: tt.restart,
				Health:  &desired.HealthSpec{Startup: &desired.Probe{TCP: "127.0.0.1:1", Interval: "100ms", Timeout: "300ms"}},
			}), true)
			_, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "web.service"})
			if err == nil || !strings.Contains(err.Error(), "exit-code") {
				t.Fatalf("start: %v, want a failure with exit-code", err)
			}
			u := h.waitUnit("web.service", "failed", func(u *observed.Unit) bool { return u.ActiveState == "failed" })
			if u.Result != tt.result || u.MainPID != 0 || u.NRestarts != tt.restarts {
				t.Fatalf("failed unit: result %s pid %d restarts %d, want %s, 0, %d", u.Result, u.MainPID, u.NRestarts, tt.result, tt.restarts)
			}
		})
	}
}

// An agent killed while a start waited for its startup probe: the next
// one adopts the process and probes it again (activating/start-post)
// until it passes; it does not take the process for started.
func TestStartupProbeAfterAdoption(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	web := service("web", desired.ServiceSpec{
		Command: []string{"sleep", "1000"},
		Health:  &desired.HealthSpec{Startup: &desired.Probe{Exec: []string{"/usr/bin/test", "-e", gate}, Interval: "100ms", Timeout: "10m"}},
	})
	h := newHarness(t, dir, Options{})
	h.run()
	h.install(web, true)
	started := make(chan error, 1)
	go func() {
		_, err := h.a.Apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "web.service"})
		started <- err
	}()
	pid := h.waitUnit("web.service", "start-post", func(u *observed.Unit) bool { return u.SubState == "start-post" }).MainPID
	h.abandon()
	if err := <-started; err == nil {
		t.Fatal("the abandoned start succeeded")
	}
	t.Cleanup(func() { signalGroup(int(pid), 9); reapAfter(int(pid)) })

	h2 := newHarness(t, dir, Options{})
	h2.run()
	u := h2.waitUnit("web.service", "adopted", func(u *observed.Unit) bool { return u.MainPID == pid })
	if u.ActiveState != "activating" || u.SubState != "start-post" {
		t.Fatalf("adopted mid-probe: %s/%s, want activating/start-post", u.ActiveState, u.SubState)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	u = h2.waitUnit("web.service", "active", isActive)
	if u.MainPID != pid {
		t.Fatalf("pid %d after the probe passed, want the adopted %d", u.MainPID, pid)
	}
}
