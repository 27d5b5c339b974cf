package process

import (
	"context"
	"os/signal"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// TestRunWaitsForItsGoroutines is not parallel: it counts goroutines.
func TestRunWaitsForItsGoroutines(t *testing.T) {
	signal.Stop(notifySIGCHLD()) // os/signal's own loop goroutine lives forever once started
	before := runtime.NumGoroutine()
	for _, stop := range []bool{false, true} {
		h := newHarness(t, "", Options{StopOnExit: stop})
		h.run()
		h.install(service("svc", desired.ServiceSpec{Command: sh(`while :; do echo x; sleep 0.05; done`),
			Watchdog: &desired.ServiceWatchdog{Timeout: "1h", NotifyAccess: "all"}}), false)
		h.install(timer("tmr", desired.TimerSpec{OnBoot: "1ms", OnUnitActive: "1h", Command: []string{"true"}}), true)
		go func() {
			_, _ = h.a.Apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "svc.service"})
		}() // never READY: stays activating
		h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "tmr.timer"})
		h.waitUnit("svc.service", "activating", func(u *observed.Unit) bool { return u.ActiveState == "activating" && u.MainPID != 0 })
		pid := h.unit("svc.service").MainPID
		h.abandon()
		if !stop {
			signalGroup(int(pid), 9)
			reapAfter(int(pid))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Run returned, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func reapAfter(pid int) {
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	reapIfChildNow(pid)
}

func TestTimerOnUnitActive(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	h.run()
	// onBoot fires once; onUnitActive keeps it going every 300ms after that.
	h.install(timer("every", desired.TimerSpec{OnBoot: "1ms", OnUnitActive: "300ms", RandomizedDelay: "50ms",
		Command: sh(`echo run >> ` + runs)}), true)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "every.timer"})
	waitFor(t, "three runs", func() bool { return len(lines(t, runs)) >= 3 })
	u := h.unit("every.timer")
	if u.ActiveState != "active" || u.NextElapseUSecRealtime <= u.LastTriggerUSec {
		t.Fatalf("timer: %+v", u)
	}
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStop, Unit: "every.timer"})
	n := len(lines(t, runs))
	time.Sleep(time.Second)
	if m := len(lines(t, runs)); m > n+1 { // a run triggered just before the stop may still write
		t.Fatalf("stopped timer kept firing: %d -> %d", n, m)
	}
	if u := h.unit("every.timer"); u.ActiveState != "inactive" || u.NextElapseUSecRealtime != 0 {
		t.Fatalf("stopped timer: %+v", u)
	}
}
