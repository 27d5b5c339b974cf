package process

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

func TestJobRetryAttempts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	h.run()
	h.install(timer("flaky", desired.TimerSpec{OnBoot: "1ms", Command: sh(`echo try >> ` + runs + `; exit 2`),
		Retry: &desired.Retry{Attempts: 3, Delay: "100ms"}}), true)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "flaky.timer"})
	u := h.waitUnit("flaky.service", "failed", func(u *observed.Unit) bool { return u.ActiveState == "failed" })
	time.Sleep(500 * time.Millisecond)
	if n := len(lines(t, runs)); n != 3 {
		t.Fatalf("attempts = %d, want 3", n)
	}
	// The retries are within one run, as on systemd: no restarts counted,
	// and the run fails with the last attempt's status.
	if u.NRestarts != 0 || u.ExecMainStatus != 2 || u.Result != ResultExitCode {
		t.Fatalf("job: %+v", u)
	}
}

func TestJobNeverOverlaps(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	h.run()
	// Due every second, runs 2.5 s: starts while running are skipped.
	h.install(timer("long", desired.TimerSpec{Schedule: []string{"*:*:*"},
		Command: sh(`echo start >> ` + runs + `; sleep 2.5; echo end >> ` + runs)}), true)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "long.timer"})
	waitFor(t, "two runs", func() bool { return strings.Count(strings.Join(lines(t, runs), ","), "end") >= 2 })
	l := lines(t, runs)
	for i := 1; i < len(l); i++ {
		if l[i] == l[i-1] {
			t.Fatalf("overlapping runs: %v", l)
		}
	}
}

func TestLockPreventsOverlap(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	lock := filepath.Join(h.dir, "shared.lock")
	h.run()
	h.install(service("first", desired.ServiceSpec{Command: []string{"sleep", "1000"}, Lock: lock}), false)
	h.install(service("second", desired.ServiceSpec{Command: []string{"sleep", "1000"}, Lock: lock}), false)
	ctx := context.Background()
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "first.service"}); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() {
		_, err := h.a.Apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "second.service"})
		started <- err
	}()
	time.Sleep(time.Second)
	if u := h.unit("second.service"); u.ActiveState != "activating" || u.MainPID != 0 {
		t.Fatalf("second runs while first holds the lock: %+v", u)
	}
	// The lock is held by the child (fd 3), not the agent: it survives the
	// agent but goes with the process.
	h.apply(ctx, actuators.Step{Op: actuators.OpStop, Unit: "first.service"})
	if err := <-started; err != nil {
		t.Fatalf("second start: %v", err)
	}
	if u := h.unit("second.service"); !isActive(u) {
		t.Fatalf("second: %+v", u)
	}
}
