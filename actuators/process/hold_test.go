package process

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// firstPass stands for the agent's first pass in these tests: what it does
// to a unit whose manifest changed while no agent ran, before Release.
type firstPass func(t *testing.T, h *harness, unit string)

// rewrite installs obj (write, reload) and restarts its unit, as a pass
// plans for a changed command of an activating service.
func rewrite(obj *desired.Object, restart bool) firstPass {
	return func(t *testing.T, h *harness, unit string) {
		h.install(obj, true)
		if restart {
			if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpRestart, Unit: unit}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// prune stops the unit and removes its files (the timer's job's too), then
// reloads, as a pass prunes an object whose manifest is gone.
func prune(units ...string) firstPass {
	return func(t *testing.T, h *harness, _ string) {
		ctx := context.Background()
		for _, u := range units {
			if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStop, Unit: u}); err != nil {
				t.Fatal(err)
			}
		}
		for _, u := range units {
			for _, p := range []string{u, u + ".enabled"} {
				if err := os.Remove(filepath.Join(h.s.UnitDir(), p)); err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
			}
		}
		h.apply(ctx, actuators.Step{Op: actuators.OpDaemonReload})
	}
}

// diedWithoutAgent runs obj (web.service) under an agent in dir that is
// then killed (abandoned), kills the service's process and waits until it
// is gone: a process that died while no agent ran. ran, if set, says the
// process did what it runs for (its output): the kill waits for it, as a
// process is active from its fork on. It returns the unit as the first
// agent last saw it.
func diedWithoutAgent(t *testing.T, dir string, obj *desired.Object, ran func() bool) *observed.Unit {
	t.Helper()
	h1 := newHarness(t, dir, Options{})
	h1.install(obj, true)
	h1.run()
	u := h1.waitUnit("web.service", "running", isActive)
	if ran != nil {
		waitFor(t, "its first run", ran)
	}
	h1.abandon()
	syscallKill(t, int(u.MainPID))
	waitFor(t, "process gone", func() bool { return !alive(int(u.MainPID)) })
	return u
}

// A service whose process died while no agent ran is owed an automatic
// restart at the next agent's start. Held (HoldUntilRelease), that restart
// waits for Release, and runs what the first pass left: the changed
// command, nothing once stopped or pruned, the same command when nothing
// changed; and never before its restart delay. Without the hold, the old
// command ran once more before the pass (F12).
func TestHeldRestartRunsWhatTheFirstPassLeft(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	for _, tc := range []struct {
		name string
		pass func(svc func(v string, state desired.State) *desired.Object) firstPass
		want []string
	}{
		{"unchanged", func(func(string, desired.State) *desired.Object) firstPass {
			return func(*testing.T, *harness, string) {}
		}, []string{"v1", "v1"}},
		{"command changed", func(svc func(string, desired.State) *desired.Object) firstPass {
			return rewrite(svc("v2", ""), true)
		}, []string{"v1", "v2"}},
		{"reload-only change", func(svc func(string, desired.State) *desired.Object) firstPass {
			o := svc("v1", "")
			o.Service.Restart.Delay = "310ms"
			return rewrite(o, false)
		}, []string{"v1", "v1"}},
		{"state stopped", func(svc func(string, desired.State) *desired.Object) firstPass {
			s := rewrite(svc("v1", desired.StateStopped), false)
			return func(t *testing.T, h *harness, unit string) {
				s(t, h, unit)
				if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpStop, Unit: unit}); err != nil {
					t.Fatal(err)
				}
			}
		}, []string{"v1"}},
		{"pruned", func(func(string, desired.State) *desired.Object) firstPass {
			return prune("web.service")
		}, []string{"v1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			svc := func(v string, state desired.State) *desired.Object {
				return service("web", desired.ServiceSpec{Command: sh("echo " + v + " >> " + out + "; exec sleep infinity"), State: state,
					Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: desired.Duration(delay.String())}})
			}
			diedWithoutAgent(t, dir, svc("v1", ""), func() bool { return len(lines(t, out)) == 1 })

			h2 := newHarness(t, dir, Options{HoldUntilRelease: true})
			runAt := time.Now()
			h2.run()
			if u := h2.unit("web.service"); !u.Active() || u.MainPID != 0 {
				t.Fatalf("at ready: %s/%s pid %d, want activating with no process (the first pass must not start it again)", u.ActiveState, u.SubState, u.MainPID)
			}
			// The first pass takes a while: the restart delay passes.
			time.Sleep(delay + 200*time.Millisecond)
			if got := lines(t, out); len(got) != 1 {
				t.Fatalf("before Release: %q, want only the first run", got)
			}
			tc.pass(svc)(t, h2, "web.service")
			h2.s.Release()
			if len(tc.want) > 1 {
				u := h2.waitUnit("web.service", "running again", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != 0 })
				waitFor(t, "its output", func() bool { return len(lines(t, out)) == len(tc.want) })
				if d := time.UnixMicro(int64(u.ExecMainStartTimestamp)).Sub(runAt); d < delay {
					t.Errorf("restarted %v after the agent started, before its restart delay %v", d, delay)
				}
			} else {
				time.Sleep(delay + 200*time.Millisecond)
				if u := h2.unit("web.service"); u.Active() {
					t.Errorf("after Release: %s/%s, want not running", u.ActiveState, u.SubState)
				}
				if _, ok := readTable(t, dir)["web.service"]; ok {
					t.Errorf("the dead process's row outlived the stop: a next agent would restart it")
				}
			}
			if got := lines(t, out); !slices.Equal(got, tc.want) {
				t.Fatalf("runs %q, want %q", got, tc.want)
			}
		})
	}
}

// An agent killed before Release leaves the owed restart to the next one:
// the row of the process that died is still in the table.
func TestHeldRestartSurvivesKillBeforeRelease(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	obj := service("web", desired.ServiceSpec{Command: []string{"/bin/sleep", "infinity"},
		Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "10ms"}})
	u := diedWithoutAgent(t, dir, obj, nil)
	h2 := newHarness(t, dir, Options{HoldUntilRelease: true})
	h2.run()
	h2.abandon() // killed during its first pass
	if rec, ok := readTable(t, dir)["web.service"]; !ok || rec.PID != int(u.MainPID) {
		t.Fatalf("row after an agent killed before Release: %+v (%t), want the dead process's", rec, ok)
	}
	h3 := newHarness(t, dir, Options{HoldUntilRelease: true})
	h3.run()
	h3.s.Release()
	u3 := h3.waitUnit("web.service", "restarted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != 0 })
	if u3.NRestarts != 1 {
		t.Fatalf("NRestarts %d, want 1: the restart the first agent owed", u3.NRestarts)
	}
}

// A timer started at Run holds its runs (catch-up, an elapse already due)
// until Release: they run the job the first pass left, and none once the
// pass pruned the timer. Without the hold, the job ran with its old command
// (F7).
func TestHeldTimerRunsWhatTheFirstPassLeft(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		pass func(tm func(v string) *desired.Object) firstPass
		want []string
	}{
		{"command changed", func(tm func(string) *desired.Object) firstPass { return rewrite(tm("v2"), false) }, []string{"v1", "v2"}},
		{"pruned", func(func(string) *desired.Object) firstPass { return prune("tj.timer", "tj.service") }, []string{"v1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			tm := func(v string) *desired.Object {
				return timer("tj", desired.TimerSpec{OnUnitActive: "1s", OnBoot: "10ms", Command: sh("echo " + v + " >> " + out)})
			}
			h1 := newHarness(t, dir, Options{})
			h1.install(tm("v1"), true)
			h1.run()
			waitFor(t, "the first run", func() bool { return len(lines(t, out)) == 1 })
			h1.abandon()
			time.Sleep(1100 * time.Millisecond) // its next run is due

			h2 := newHarness(t, dir, Options{HoldUntilRelease: true})
			h2.run()
			if u := h2.unit("tj.timer"); u.ActiveState != "active" {
				t.Fatalf("timer at ready: %s/%s, want active", u.ActiveState, u.SubState)
			}
			time.Sleep(300 * time.Millisecond) // the first pass
			if got := lines(t, out); len(got) != 1 {
				t.Fatalf("before Release: %q, want only the first run", got)
			}
			tc.pass(tm)(t, h2, "tj.timer")
			h2.s.Release()
			if len(tc.want) > 1 {
				waitFor(t, "the job's run", func() bool { return len(lines(t, out)) == len(tc.want) })
			} else {
				time.Sleep(1500 * time.Millisecond)
			}
			if got := lines(t, out); !slices.Equal(got[:min(len(got), len(tc.want))], tc.want) || len(got) > len(tc.want)+1 {
				t.Fatalf("runs %q, want %q first", got, tc.want)
			}
			if got := lines(t, out); slices.Contains(got[1:], "v1") {
				t.Fatalf("runs %q: the old command ran again", got)
			}
		})
	}
}

// The automatic restart of a process that died while no agent ran waits
// its restart delay, as any automatic restart does (it was started at
// once).
func TestRestartAtRunWaitsDelay(t *testing.T) {
	t.Parallel()
	const delay = 400 * time.Millisecond
	dir := t.TempDir()
	obj := service("web", desired.ServiceSpec{Command: []string{"/bin/sleep", "infinity"},
		Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: desired.Duration(delay.String())}})
	diedWithoutAgent(t, dir, obj, nil)
	h2 := newHarness(t, dir, Options{})
	runAt := time.Now()
	h2.run()
	if u := h2.unit("web.service"); u.ActiveState != "activating" || u.SubState != "auto-restart" {
		t.Errorf("at ready: %s/%s, want activating/auto-restart", u.ActiveState, u.SubState)
	}
	u2 := h2.waitUnit("web.service", "restarted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != 0 })
	if d := time.UnixMicro(int64(u2.ExecMainStartTimestamp)).Sub(runAt); d < delay || u2.NRestarts != 1 {
		t.Fatalf("restarted %v after the agent started (restart delay %v), NRestarts %d (want 1)", d, delay, u2.NRestarts)
	}
}
