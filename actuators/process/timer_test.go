package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

func TestTimerCalendarFires(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	h.run()
	h.install(timer("tick", desired.TimerSpec{Schedule: []string{"*:*:0/2"}, Command: sh(`echo tick >> ` + runs)}), true)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "tick.timer"})
	u := h.unit("tick.timer")
	if u.ActiveState != "active" || u.NextElapseUSecRealtime == 0 || len(u.Triggers) != 1 || u.Triggers[0] != "tick.service" {
		t.Fatalf("timer: %+v", u)
	}
	waitFor(t, "two runs", func() bool { return len(lines(t, runs)) >= 2 })
	if u := h.unit("tick.timer"); u.LastTriggerUSec == 0 {
		t.Fatalf("LastTriggerUSec not set: %+v", u)
	}
	if u := h.unit("tick.service"); u.ActiveState == "failed" {
		t.Fatalf("job: %+v", u)
	}
}

// backdate writes a timer stamp as if the agent last fired it at t.
func backdate(t *testing.T, dir, timer string, at time.Time) {
	os.MkdirAll(filepath.Join(dir, "timers"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "timers", timer+".stamp"), []byte(at.Format(time.RFC3339Nano)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPersistentCatchUpOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	// Two daily schedules, due 90 and 60 minutes ago (so no regular run
	// falls inside the test); last run two hours ago: two misses, one run.
	due := time.Now().UTC().Add(-time.Hour)
	daily := fmt.Sprintf("*-*-* %02d:%02d:00 UTC", due.Hour(), due.Minute())
	alsoDue := time.Now().UTC().Add(-90 * time.Minute)
	daily2 := fmt.Sprintf("*-*-* %02d:%02d:00 UTC", alsoDue.Hour(), alsoDue.Minute())
	backdate(t, h.dir, "nightly.timer", time.Now().Add(-2*time.Hour))
	h.install(timer("nightly", desired.TimerSpec{Schedule: []string{daily, daily2}, Persistent: true,
		Command: sh(`echo run >> ` + runs)}), true)
	h.run()
	waitFor(t, "catch-up run", func() bool { return len(lines(t, runs)) >= 1 })
	time.Sleep(1500 * time.Millisecond)
	if n := len(lines(t, runs)); n != 1 {
		t.Fatalf("catch-up ran %d times, want 1", n)
	}
	if at := h.s.readStamp("nightly.timer"); time.Since(at) > time.Minute {
		t.Fatalf("stamp not advanced: %v", at)
	}
}

func TestCatchUpSkips(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		spec desired.TimerSpec
	}{
		{"maxLateness", desired.TimerSpec{Schedule: []string{"2020-01-01 00:00:00"}, Persistent: true, MaxLateness: "1h"}},
		{"catchUp skip", desired.TimerSpec{Schedule: []string{"2020-01-01 00:00:00"}, Persistent: true, CatchUp: desired.CatchUpSkip}},
		{"not persistent", desired.TimerSpec{Schedule: []string{"2020-01-01 00:00:00"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, "", Options{})
			runs := filepath.Join(h.dir, "runs")
			backdate(t, h.dir, "old.timer", time.Date(2019, 12, 31, 0, 0, 0, 0, time.UTC))
			tc.spec.Command = sh(`echo run >> ` + runs)
			h.install(timer("old", tc.spec), true)
			h.run()
			h.waitUnit("old.timer", "started", func(u *observed.Unit) bool { return u.ActiveState == "active" })
			time.Sleep(time.Second)
			if n := len(lines(t, runs)); n != 0 {
				t.Fatalf("ran %d times, want 0", n)
			}
			h.s.mu.Lock()
			u := h.s.units["old.timer"]
			h.s.mu.Unlock()
			want := 0
			if tc.name == "maxLateness" {
				want = 1
			}
			if got := u.status().Missed; got != want {
				t.Fatalf("missed runs reported = %d, want %d", got, want)
			}
		})
	}
	t.Run("within maxLateness", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, "", Options{})
		runs := filepath.Join(h.dir, "runs")
		backdate(t, h.dir, "old.timer", time.Date(2019, 12, 31, 0, 0, 0, 0, time.UTC))
		h.install(timer("old", desired.TimerSpec{Schedule: []string{"2020-01-01 00:00:00"}, Persistent: true,
			MaxLateness: "87600h", Command: sh(`echo run >> ` + runs)}), true)
		h.run()
		waitFor(t, "catch-up", func() bool { return len(lines(t, runs)) == 1 })
	})
}

// The lateness of a catch-up is the earliest missed run's, as the planner
// judges it for systemd: a timer whose last run was two hours ago, with
// maxLateness 10m, skips (the run due 1.5 h ago is late, though another
// was due seconds ago), refreshes its stamp and reports
// TimerMissed; within maxLateness it runs once and reports TimerCatchUp.
func TestCatchUpLatenessOfEarliestMissed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, maxLateness, reason string
		runs                      int
		byPass                    bool // started by a pass's step: the planner reports it, not the supervisor
	}{
		{"over", "10m", "TimerMissed", 0, false},
		{"within", "3h", "TimerCatchUp", 1, false},
		{"over, started by a pass", "10m", "", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var got []string
			h := newHarness(t, "", Options{Event: func(reason, object, unit string, warning bool, msg string) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, fmt.Sprintf("%s %s %s %v %s", reason, object, unit, warning, msg))
			}})
			runs := filepath.Join(h.dir, "runs")
			backdate(t, h.dir, "often.timer", time.Now().Add(-2*time.Hour))
			// Hourly at a minute 30 minutes away (missed 1.5 h ago), daily
			// 5 s ago (missed just now): no regular run within the test.
			at, just := time.Now().UTC().Add(30*time.Minute), time.Now().UTC().Add(-5*time.Second)
			spec := desired.TimerSpec{Schedule: []string{fmt.Sprintf("*-*-* *:%02d:00 UTC", at.Minute()),
				fmt.Sprintf("*-*-* %02d:%02d:%02d UTC", just.Hour(), just.Minute(), just.Second())},
				Persistent: true, MaxLateness: desired.Duration(tc.maxLateness), Command: sh(`echo run >> ` + runs)}
			if tc.byPass {
				h.run()
				h.install(timer("often", spec), false)
				if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "often.timer"}); err != nil {
					t.Fatal(err)
				}
			} else {
				h.install(timer("often", spec), true)
				h.run()
			}
			h.waitUnit("often.timer", "started", func(u *observed.Unit) bool { return u.ActiveState == "active" })
			if !tc.byPass {
				waitFor(t, tc.reason+" event", func() bool {
					mu.Lock()
					defer mu.Unlock()
					return len(got) > 0
				})
			}
			time.Sleep(time.Second)
			mu.Lock()
			events := strings.Join(got, "\n")
			n := len(got)
			mu.Unlock()
			switch {
			case tc.byPass && n != 0:
				t.Errorf("the supervisor reported a pass's start (the planner does):\n%s", events)
			case !tc.byPass && (n != 1 || !strings.HasPrefix(events, tc.reason+" Timer/often often.timer "+fmt.Sprint(tc.reason == "TimerMissed"))):
				t.Errorf("events:\n%s", events)
			}
			if n := len(lines(t, runs)); n != tc.runs {
				t.Errorf("ran %d times, want %d", n, tc.runs)
			}
			if st := h.s.readStamp("often.timer"); time.Since(st) > time.Minute {
				t.Errorf("stamp not refreshed: %v", st)
			}
		})
	}
}

// The stamp is observed like systemd's (so the planner can report
// TimerCatchUp/TimerMissed), and refresh-stamp touches only that stamp.
func TestTimerStampObservedAndRefreshed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	old := time.Date(2019, 12, 31, 0, 0, 0, 0, time.UTC)
	backdate(t, h.dir, "old.timer", old)
	h.install(timer("old", desired.TimerSpec{Schedule: []string{"daily"}, Persistent: true, Command: sh(`true`)}), true)
	u := h.unit("old.timer")
	want := h.s.stampPath("old.timer")
	if u.StampPath != want || u.StampUSec != uint64(old.UnixMicro()) {
		t.Fatalf("observed stamp %q %d, want %q %d", u.StampPath, u.StampUSec, want, old.UnixMicro())
	}
	ctx := context.Background()
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpRefreshStamp, Unit: "old.timer", Path: filepath.Join(h.dir, "elsewhere")}); err == nil {
		t.Fatal("refresh-stamp of a foreign path succeeded")
	}
	before := time.Now()
	if res, err := h.apply(ctx, actuators.Step{Op: actuators.OpRefreshStamp, Unit: "old.timer", Path: want}); err != nil || res != actuators.Changed {
		t.Fatalf("refresh-stamp: %v %v", res, err)
	}
	if got := h.s.readStamp("old.timer"); got.Before(before.Add(-time.Second)) {
		t.Fatalf("stamp %v not refreshed", got)
	}
	if u := h.unit("old.service"); u.StampPath != "" {
		t.Fatalf("a service has a stamp: %q", u.StampPath)
	}
}

// An enabled timer is active in the first Observe after Ready, every time
// the supervisor starts (the command was taken before the timer had
// started, so `apply` after `apply` planned "start hourly.timer (inactive,
// want active)" now and then, and `run` recorded a TimerInactive drift).
func TestEnabledTimerActiveAtReady(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, dir, Options{})
	var names []string
	for k := 0; k < 20; k++ {
		name := fmt.Sprintf("hourly-%02d", k)
		h.install(timer(name, desired.TimerSpec{Schedule: []string{"hourly"}, Command: sh(`true`)}), true)
		names = append(names, name+".timer")
	}
	for i := 0; i < 20; i++ {
		h := newHarness(t, dir, Options{})
		h.run()
		st, err := h.s.Observe(context.Background(), names)
		h.abandon()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if u := st.Units[n]; u.ActiveState != "active" {
				t.Fatalf("start %d: %s %s/%s at ready, want active", i+1, n, u.ActiveState, u.SubState)
			}
		}
	}
}

// A changed onBoot is scheduled again (relative to the boot's first agent, as
// systemd's to boot: already past, it elapses at once); an unchanged one
// that fired does not fire again when the timer restarts for another
// change. (bootDone kept any new onBoot from ever firing.)
func TestTimerOnBootChangeSchedulesAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	h.run()
	job := sh(`echo run >> ` + runs)
	h.install(timer("tb", desired.TimerSpec{OnBoot: "1ms", Command: job}), true)
	ctx := context.Background()
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "tb.timer"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first run", func() bool { return len(lines(t, runs)) == 1 })
	// Changed, still ahead: scheduled.
	ahead := time.Since(h.s.boot) + 1500*time.Millisecond
	h.install(timer("tb", desired.TimerSpec{OnBoot: desired.Duration(ahead.String()), Command: job}), true)
	waitFor(t, "a run for the changed onBoot", func() bool { return len(lines(t, runs)) == 2 })
	h.install(timer("tb", desired.TimerSpec{OnBoot: desired.Duration(ahead.String()), Command: sh(`echo run >> ` + runs + `; true`)}), true)
	time.Sleep(time.Second)
	if n := len(lines(t, runs)); n != 2 {
		t.Fatalf("%d runs after a change that kept onBoot, want 2", n)
	}
	// Changed, already past, on a timer that fired: dropped, as systemd's
	// daemon-reload drops a one-time trigger in the past (the e2e
	// TestTimerChangeKeepsLastTrigger).
	h.install(timer("tb", desired.TimerSpec{OnBoot: "2ms", Command: job}), true)
	time.Sleep(time.Second)
	if n := len(lines(t, runs)); n != 2 {
		t.Fatalf("%d runs after onBoot changed to a time already past, want 2", n)
	}
	h.waitUnit("tb.timer", "elapsed (nothing left to wait for)", func(u *observed.Unit) bool { return u.SubState == "elapsed" })
}

// A timer's onBoot counts from the boot's first agent: an agent restarted
// within the same boot (kill -9, upgrade) neither fires a boot job that
// already ran nor moves one still ahead; a new boot, or an agent after one
// that stopped every service on its way out, fires it again.
func TestAgentRestartKeepsOnBoot(t *testing.T) {
	setBoot := fakeBootID(t)
	for _, tc := range []struct {
		name       string
		bootAfter  string
		stopOnExit bool
		wantRuns   int
	}{
		{"same boot", "boot-1", false, 1},
		{"another boot", "boot-2", false, 2},
		{"after stop on exit", "boot-1", true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setBoot("boot-1")
			dir := t.TempDir()
			runs := filepath.Join(dir, "runs")
			h1 := newHarness(t, dir, Options{StopOnExit: tc.stopOnExit})
			h1.run()
			h1.install(timer("once", desired.TimerSpec{OnBoot: "1ms", Command: sh(`echo run >> ` + runs)}), true)
			h1.install(timer("later", desired.TimerSpec{OnBoot: "1h", Command: []string{"true"}}), true)
			for _, n := range []string{"once.timer", "later.timer"} {
				if _, err := h1.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: n}); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "the boot job's run", func() bool { return len(lines(t, runs)) == 1 })
			h1.waitUnit("once.timer", "elapsed", func(u *observed.Unit) bool { return u.SubState == "elapsed" })
			next := h1.unit("later.timer").NextElapseUSecRealtime
			if next == 0 {
				t.Fatal("later.timer has no next elapse")
			}
			boot := h1.s.boot
			h1.abandon()

			setBoot(tc.bootAfter)
			h2 := newHarness(t, dir, Options{})
			h2.run()
			if tc.wantRuns > 1 {
				waitFor(t, "the boot job's run at the new boot", func() bool { return len(lines(t, runs)) == tc.wantRuns })
				if !h2.s.boot.After(boot) {
					t.Errorf("boot %v after a new boot, want after %v", h2.s.boot, boot)
				}
				return
			}
			h2.waitUnit("later.timer", "waiting", func(u *observed.Unit) bool { return u.SubState == "waiting" })
			if got := h2.unit("later.timer").NextElapseUSecRealtime; got != next {
				t.Errorf("onBoot 1h elapses at %d after the agent restart, want %d (the boot's)", got, next)
			}
			time.Sleep(500 * time.Millisecond)
			if n := len(lines(t, runs)); n != 1 {
				t.Fatalf("the boot job ran %d times after an agent restart in the same boot, want 1", n)
			}
			if !h2.s.boot.Equal(boot.Truncate(time.Microsecond)) {
				t.Errorf("boot %v after an agent restart, want the first agent's %v", h2.s.boot, boot)
			}
		})
	}
}

// A table an older agent of this boot wrote (no bootStart) counts the boot
// from the kernel's, so the upgrade does not fire a boot job that ran.
func TestOlderTableCountsBootFromTheKernel(t *testing.T) {
	setBoot := fakeBootID(t)
	setBoot("boot-1")
	dir := t.TempDir()
	stat := filepath.Join(t.TempDir(), "stat")
	if err := os.WriteFile(stat, []byte("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := statPath
	statPath = stat
	t.Cleanup(func() { statPath = old })
	if err := os.WriteFile(filepath.Join(dir, "processes.json"), []byte(`{"bootID":"boot-1","processes":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, dir, Options{})
	h.run()
	if want := time.Unix(1700000000, 0); !h.s.boot.Equal(want) {
		t.Errorf("boot %v, want the kernel's %v", h.s.boot, want)
	}
	b, err := os.ReadFile(filepath.Join(dir, "processes.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"bootStart":1700000000000000`) {
		t.Errorf("table not rewritten with the boot: %s", b)
	}
}

// reset with start of a stopped timer starts it (systemctl reset-failed +
// start); without start it is left as it is.
func TestResetWithStartStartsTimer(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	h.run()
	h.install(timer("tock", desired.TimerSpec{Schedule: []string{"hourly"}, Command: sh(`true`)}), true)
	if u := h.unit("tock.timer"); u.ActiveState == "active" {
		t.Fatalf("timer active before any start: %+v", u)
	}
	if err := RequestReset(h.dir, "tock.timer", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request taken", func() bool {
		_, err := os.Stat(filepath.Join(h.dir, "reset", "tock.timer"))
		return os.IsNotExist(err)
	})
	if u := h.unit("tock.timer"); u.ActiveState == "active" {
		t.Fatalf("reset without start started the timer: %+v", u)
	}
	if err := RequestReset(h.dir, "tock.timer", true); err != nil {
		t.Fatal(err)
	}
	h.waitUnit("tock.timer", "started by reset", func(u *observed.Unit) bool { return u.ActiveState == "active" && u.NextElapseUSecRealtime != 0 })
}
