package process

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

func TestStopOnExitReverseOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{StopOnExit: true})
	order := filepath.Join(h.dir, "order")
	h.run()
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		// The service reports when its TERM trap is set: a start returns
		// once the process runs, before the shell ran a line, and a SIGTERM
		// before the trap kills it without a trace (the old flake: "b,a").
		ready := filepath.Join(h.dir, n+".ready")
		h.install(service(n, desired.ServiceSpec{
			Command:     sh(`trap 'echo ` + n + ` >> ` + order + `; exit 0' TERM; : > ` + ready + `; while :; do sleep 0.05; done`),
			StopTimeout: "5s"}), true)
		if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: n + ".service"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, n+" trap set", func() bool { _, err := os.Stat(ready); return err == nil })
	}
	var pids []int
	for _, n := range []string{"a", "b", "c"} {
		pids = append(pids, int(h.unit(n+".service").MainPID))
	}
	h.abandon() // with StopOnExit, Run stops everything before returning
	if got := strings.Join(lines(t, order), ","); got != "c,b,a" {
		t.Fatalf("stop order %q, want c,b,a", got)
	}
	for _, p := range pids {
		if alive(p) {
			t.Fatalf("pid %d alive after Run returned", p)
		}
	}
	b, _ := os.ReadFile(filepath.Join(h.dir, "processes.json"))
	var tab processTable
	json.Unmarshal(b, &tab)
	if len(tab.Processes) != 0 {
		t.Fatalf("process table not empty: %s", b)
	}
}

// An agent restart within one boot is not a boot: a service that was not
// running when the last agent died (a pass stopped it for state: stopped)
// is not started by Run; the pass decides. After another boot, or after
// an agent that stopped everything on its way out (StopOnExit), enabled
// services start as at boot. Timers start either way.
func TestAgentRestartStartsOnlyAsAtBoot(t *testing.T) {
	setBoot := fakeBootID(t)
	setBoot("boot-1")

	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		bootAfter  string
		stopOnExit bool
		wantStart  bool
	}{
		{"same boot", "boot-1", false, false},
		{"another boot", "boot-2", false, true},
		{"after stop on exit", "boot-1", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setBoot("boot-1")
			dir := t.TempDir()
			marker := filepath.Join(dir, "starts")
			h1 := newHarness(t, dir, Options{StopOnExit: tc.stopOnExit})
			h1.run()
			h1.install(service("stopme", desired.ServiceSpec{Command: sh(`echo x >> ` + marker + `; exec sleep 1000`)}), true)
			h1.install(service("runs", desired.ServiceSpec{Command: []string{"sleep", "1000"}}), true)
			h1.install(service("crasher", desired.ServiceSpec{Command: sh(`exit 3`),
				Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "10ms", Limit: &desired.StartLimit{Burst: 2, Interval: "1h"}}}), true)
			h1.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "crasher.service"})
			h1.waitUnit("crasher.service", "start-limit-hit", func(u *observed.Unit) bool { return u.ActiveState == "failed" && u.Result == ResultStartLimitHit })
			if _, err := h1.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "runs.service"}); err != nil {
				t.Fatal(err)
			}
			if _, err := h1.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "stopme.service"}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "stopme ran", func() bool { return len(lines(t, marker)) == 1 })
			if _, err := h1.apply(ctx, actuators.Step{Op: actuators.OpStop, Unit: "stopme.service"}); err != nil {
				t.Fatal(err)
			}
			runsPID := h1.unit("runs.service").MainPID
			h1.abandon()

			setBoot(tc.bootAfter)
			h2 := newHarness(t, dir, Options{})
			h2.run()
			if !tc.stopOnExit && tc.bootAfter == "boot-1" {
				if u := h2.unit("runs.service"); !isActive(u) || u.MainPID != runsPID {
					t.Errorf("running service not adopted: %+v (pid was %d)", u, runsPID)
				}
			} else {
				h2.waitUnit("runs.service", "started again", isActive)
			}
			if tc.wantStart {
				h2.waitUnit("crasher.service", "started as at boot", func(u *observed.Unit) bool { return u.NRestarts > 0 || u.ActiveState != "failed" })
				h2.waitUnit("stopme.service", "started as at boot", isActive)
				waitFor(t, "stopme ran again", func() bool { return len(lines(t, marker)) == 2 })
				return
			}
			time.Sleep(300 * time.Millisecond)
			if u := h2.unit("stopme.service"); u.ActiveState != "inactive" {
				t.Errorf("stopped service started by an agent restart: %s/%s", u.ActiveState, u.SubState)
			}
			if n := len(lines(t, marker)); n != 1 {
				t.Errorf("stopped service ran %d times, want 1", n)
			}
			// Failed stays failed: no start until reset-failed.
			if u := h2.unit("crasher.service"); u.ActiveState != "failed" || u.Result != ResultStartLimitHit || u.MainPID != 0 {
				t.Errorf("failed service after an agent restart: %s/%s result %s pid %d", u.ActiveState, u.SubState, u.Result, u.MainPID)
			}
			if res, err := h2.apply(ctx, actuators.Step{Op: actuators.OpResetFailed, Unit: "crasher.service"}); err != nil || res != actuators.Changed {
				t.Errorf("reset-failed: %v %v", res, err)
			}
			h3dir := dir
			h2.abandon()
			h3 := newHarness(t, h3dir, Options{})
			h3.run()
			// Reset: no longer held; started as before (a start since).
			h3.waitUnit("crasher.service", "started after reset", func(u *observed.Unit) bool { return u.ExecMainStartTimestamp != 0 })
		})
	}
}

// The idle records hold only for the unit file they were made from, and
// only a stop request or a failure makes one: a failed service whose unit
// file changed before the agent died (its start cut off), and a service
// caught in its preStart checks, are started by the next agent of the
// same boot as before.
func TestAgentRestartIdleRecordsNarrow(t *testing.T) {
	fakeBootID(t)("boot-1")
	ctx := context.Background()

	t.Run("failed, file changed", func(t *testing.T) {
		dir := t.TempDir()
		h1 := newHarness(t, dir, Options{})
		h1.run()
		limit := &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "10ms", Limit: &desired.StartLimit{Burst: 2, Interval: "1h"}}
		h1.install(service("crasher", desired.ServiceSpec{Command: sh(`exit 3`), Restart: limit}), true)
		h1.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "crasher.service"})
		h1.waitUnit("crasher.service", "start-limit-hit", func(u *observed.Unit) bool { return u.ActiveState == "failed" })
		// The manifest changed: the new file is written, then the agent dies.
		h1.install(service("crasher", desired.ServiceSpec{Command: []string{"sleep", "1000"}, Restart: limit}), true)
		h1.abandon()
		h2 := newHarness(t, dir, Options{})
		h2.run()
		h2.waitUnit("crasher.service", "the new version started", isActive)
	})
	t.Run("in its preStart", func(t *testing.T) {
		dir := t.TempDir()
		h1 := newHarness(t, dir, Options{})
		h1.run()
		checking := filepath.Join(dir, "checking")
		h1.install(service("slow", desired.ServiceSpec{Command: []string{"sleep", "1000"},
			PreStart: []desired.Check{{Command: sh(`: > ` + checking + `; sleep 2`)}}}), true)
		started := make(chan struct{})
		go func() {
			defer close(started)
			_, _ = h1.a.Apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "slow.service"}) // ends with the supervisor
		}()
		waitFor(t, "preStart running", func() bool { _, err := os.Stat(checking); return err == nil })
		h1.abandon()
		<-started
		h2 := newHarness(t, dir, Options{})
		h2.run()
		h2.waitUnit("slow.service", "started by the next agent", isActive)
	})
}

// A service whose process exited by itself with status 0 under a policy
// that does not restart a clean exit is reported done
// (observed.Unit.ExitedOnItsOwn) and stays so after an agent restart; a
// stop request is not "on its own"; a service the manifest wants stopped
// is not run by an agent restart even if never stopped before; a process
// of a never-restarted service that died while no agent ran is not
// started again (failed, result unknown).
func TestAgentRestartLeavesDoneServicesAlone(t *testing.T) {
	fakeBootID(t)("boot-1")

	ctx := context.Background()
	dir := t.TempDir()
	runs := func(name string) int { return len(lines(t, filepath.Join(dir, name+".runs"))) }
	cmd := func(name, tail string) []string {
		return sh(`echo x >> ` + filepath.Join(dir, name+".runs") + `; ` + tail)
	}
	h1 := newHarness(t, dir, Options{})
	h1.run()
	h1.install(service("once", desired.ServiceSpec{Command: cmd("once", "exit 0"), Restart: &desired.RestartSpec{Policy: desired.RestartNever}}), true)
	h1.install(service("clean", desired.ServiceSpec{Command: cmd("clean", "exit 0")}), true) // on-failure
	h1.install(service("stopped", desired.ServiceSpec{Command: cmd("stopped", "exec sleep 1000"), State: desired.StateStopped}), true)
	h1.install(service("lost", desired.ServiceSpec{Command: cmd("lost", "exec sleep 1000"), Restart: &desired.RestartSpec{Policy: desired.RestartNever}}), true)
	h1.install(service("held", desired.ServiceSpec{Command: cmd("held", "exec sleep 1000")}), true)
	h1.install(service("bad", desired.ServiceSpec{Command: cmd("bad", "exit 3"), Restart: &desired.RestartSpec{Policy: desired.RestartNever}}), true)
	edited := func(tail string) *desired.Object {
		return service("edited", desired.ServiceSpec{Command: cmd("edited", tail), Restart: &desired.RestartSpec{Policy: desired.RestartNever}})
	}
	h1.install(edited("exit 0"), true)
	for _, n := range []string{"once", "clean", "lost", "held", "bad", "edited"} {
		if _, err := h1.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: n + ".service"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"once", "clean", "edited"} {
		h1.waitUnit(n+".service", "exited on its own", func(u *observed.Unit) bool { return u.ExitedOnItsOwn() })
	}
	waitFor(t, "held and lost ran", func() bool { return runs("held") == 1 && runs("lost") == 1 })
	if _, err := h1.apply(ctx, actuators.Step{Op: actuators.OpStop, Unit: "held.service"}); err != nil {
		t.Fatal(err)
	}
	if u := h1.unit("held.service"); u.ExitedOnItsOwn() {
		t.Errorf("a stopped service reads as exited on its own: %+v", u)
	}
	h1.waitUnit("bad.service", "failed", func(u *observed.Unit) bool { return u.ActiveState == "failed" })
	badExit := h1.unit("bad.service").ExecMainExitTimestamp
	lostPID := int(h1.unit("lost.service").MainPID)
	h1.abandon()
	if err := syscall.Kill(lostPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "lost's process gone", func() bool { ps, err := readProcStat("/proc", lostPID); return err != nil || ps.State == 'Z' })

	// Read with no agent running (diff): done, but only for the unit file
	// the record was made from; edited since (a pass wrote it and was
	// killed before its start), the run is stale (observed.Unit.StaleRun):
	// the next agent starts it, and diff plans that start.
	ro := newHarness(t, dir, Options{})
	if u := ro.unit("once.service"); !u.ExitedOnItsOwn() || u.StaleRun {
		t.Errorf("once read offline: %s/%s stale run %v", u.ActiveState, u.SubState, u.StaleRun)
	}
	// lost's process died while no agent ran: failed (result unknown), as
	// the next agent leaves it, so diff plans no start run would not make.
	if u := ro.unit("lost.service"); u.ActiveState != "failed" || u.Result != ResultUnknown {
		t.Errorf("lost read offline: %s/%s result %s, want failed (unknown)", u.ActiveState, u.SubState, u.Result)
	}
	// apply's one-shot supervisor leaves it so too.
	one := newHarness(t, dir, Options{OneShot: true})
	one.run()
	if u := one.unit("lost.service"); u.ActiveState != "failed" || u.Result != ResultUnknown {
		t.Errorf("lost under apply's supervisor: %s/%s result %s, want failed (unknown)", u.ActiveState, u.SubState, u.Result)
	}
	one.abandon()
	ro.install(edited("exit 0 # edited"), true)
	if u := ro.unit("edited.service"); !u.StaleRun {
		t.Errorf("edited read offline with its unit file changed: %s/%s, not a stale run", u.ActiveState, u.SubState)
	}

	h2 := newHarness(t, dir, Options{})
	h2.run()
	time.Sleep(300 * time.Millisecond)
	for name, want := range map[string]int{"once": 1, "clean": 1, "stopped": 0, "lost": 1, "held": 1, "bad": 1, "edited": 2} {
		if got := runs(name); got != want {
			t.Errorf("%s ran %d times, want %d", name, got, want)
		}
	}
	for _, n := range []string{"once", "clean", "edited"} {
		if u := h2.unit(n + ".service"); !u.ExitedOnItsOwn() || u.StaleRun {
			t.Errorf("%s after the agent restart: %s/%s exit %d start %d exit %d active-exit %d", n, u.ActiveState, u.SubState,
				u.ExecMainStatus, u.ExecMainStartTimestamp, u.ExecMainExitTimestamp, u.ActiveExitTimestamp)
		}
	}
	if u := h2.unit("lost.service"); u.ActiveState != "failed" || u.Result != ResultUnknown {
		t.Errorf("lost after the agent restart: %s/%s result %s", u.ActiveState, u.SubState, u.Result)
	}
	// A failed run keeps its exit status and time (they name the failed
	// run in its event: not a second event after an agent restart).
	if u := h2.unit("bad.service"); u.ActiveState != "failed" || u.ExecMainStatus != 3 || u.ExecMainExitTimestamp != badExit {
		t.Errorf("bad after the agent restart: %s/%s status %d exit %d (was %d)", u.ActiveState, u.Result, u.ExecMainStatus, u.ExecMainExitTimestamp, badExit)
	}
	if u := h2.unit("stopped.service"); u.ActiveState != "inactive" {
		t.Errorf("stopped after the agent restart: %s/%s", u.ActiveState, u.SubState)
	}
}

// A run-once service whose unit file a pass rewrote and whose start a
// crash cut off: the next one-shot command's Supervisor (apply: services
// are left to the pass's steps) reports its last run as stale
// (observed.Unit.StaleRun), which the planner starts; the run the start
// makes is not stale.
func TestStaleRunAfterAgentRestart(t *testing.T) {
	fakeBootID(t)("boot-1")
	ctx := context.Background()
	dir := t.TempDir()
	runs := func() int { return len(lines(t, filepath.Join(dir, "job.runs"))) }
	job := func(v string) *desired.Object {
		return service("job", desired.ServiceSpec{Command: sh(`echo x >> ` + filepath.Join(dir, "job.runs") + `; exit 0`),
			Environment: map[string]string{"V": v}, Restart: &desired.RestartSpec{Policy: desired.RestartNever}})
	}
	h1 := newHarness(t, dir, Options{})
	h1.run()
	h1.install(job("1"), true)
	if _, err := h1.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "job.service"}); err != nil {
		t.Fatal(err)
	}
	h1.waitUnit("job.service", "exited on its own", func(u *observed.Unit) bool { return u.ExitedOnItsOwn() })
	if u := h1.unit("job.service"); u.StaleRun {
		t.Fatalf("a run of the file on disk reads as stale")
	}
	h1.abandon()
	// A changed environment, written by a pass that was killed before its
	// start.
	ro := newHarness(t, dir, Options{})
	ro.install(job("2"), true)
	if u := ro.unit("job.service"); !u.ExitedOnItsOwn() || !u.StaleRun {
		t.Errorf("read offline (diff) with the file changed: %s/%s stale run %v", u.ActiveState, u.SubState, u.StaleRun)
	}
	h2 := newHarness(t, dir, Options{OneShot: true})
	h2.run()
	if u := h2.unit("job.service"); !u.ExitedOnItsOwn() || !u.StaleRun {
		t.Errorf("under apply with the file changed: %s/%s stale run %v", u.ActiveState, u.SubState, u.StaleRun)
	}
	if n := runs(); n != 1 {
		t.Fatalf("job ran %d times before the pass's start, want 1", n)
	}
	if _, err := h2.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "job.service"}); err != nil {
		t.Fatal(err)
	}
	h2.waitUnit("job.service", "exited on its own again", func(u *observed.Unit) bool {
		return u.ExitedOnItsOwn() && u.ExecMainStartTimestamp != 0 && runs() == 2
	})
	if u := h2.unit("job.service"); u.StaleRun {
		t.Errorf("the new run reads as stale")
	}
	h2.abandon()
	h3 := newHarness(t, dir, Options{OneShot: true})
	h3.run()
	if u := h3.unit("job.service"); !u.ExitedOnItsOwn() || u.StaleRun {
		t.Errorf("the next agent: %s/%s stale run %v", u.ActiveState, u.SubState, u.StaleRun)
	}
}

// fakeBootID points the supervisor's boot ID at a file of the test's and
// returns what sets it. bootIDPath is package state: the test must not
// run in parallel.
func fakeBootID(t *testing.T) func(id string) {
	t.Helper()
	bootFile := filepath.Join(t.TempDir(), "boot_id")
	old := bootIDPath
	bootIDPath = bootFile
	t.Cleanup(func() { bootIDPath = old })
	return func(id string) {
		if err := os.WriteFile(bootFile, []byte(id+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A restart whose new start fails before any process forks (an unknown
// user) reports that start as the last run, with systemd's exit status
// (217/USER), not the exit status and time of the process the restart
// stopped.
func TestFailedSpawnIsTheLastRun(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, t.TempDir(), Options{})
	h.run()
	// Restart policy never: a failed start stays failed (with a policy
	// that restarts, it is restarted: TestSpawnFailureRestartedByPolicy).
	never := &desired.RestartSpec{Policy: desired.RestartNever}
	h.install(service("web", desired.ServiceSpec{Command: sh("exec sleep 1000"), Restart: never}), true)
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "web.service"}); err != nil {
		t.Fatal(err)
	}
	h.waitUnit("web.service", "running", func(u *observed.Unit) bool { return u.ActiveState == "active" && u.MainPID != 0 })
	before := h.unit("web.service").ExecMainStartTimestamp
	h.install(service("web", desired.ServiceSpec{Command: sh("exec sleep 1000"), User: "no-such-user-resil", Restart: never}), true)
	_, err := h.apply(ctx, actuators.Step{Op: actuators.OpRestart, Unit: "web.service"})
	if err == nil || !strings.Contains(err.Error(), "unknown user no-such-user-resil") {
		t.Fatalf("restart as an unknown user: %v, want its lookup error", err)
	}
	u := h.unit("web.service")
	if u.ActiveState != "failed" || u.ExecMainStatus != 217 || u.ExecMainStartTimestamp <= before ||
		u.ExecMainExitTimestamp < u.ExecMainStartTimestamp || u.MainPID != 0 {
		t.Errorf("after the failed start: %s, status %d, start %d (before %d), exit %d, pid %d; want failed, 217, a new start and exit, no pid",
			u.ActiveState, u.ExecMainStatus, u.ExecMainStartTimestamp, before, u.ExecMainExitTimestamp, u.MainPID)
	}
	// A working directory that does not exist: 200/CHDIR.
	h.install(service("web", desired.ServiceSpec{Command: sh("exec sleep 1000"), WorkingDirectory: "/nonexistent-resil-dir", Restart: never}), true)
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "web.service"}); err == nil {
		t.Fatal("start in a missing working directory succeeded")
	}
	if u := h.unit("web.service"); u.ActiveState != "failed" || u.ExecMainStatus != 200 {
		t.Errorf("missing working directory: %s, status %d; want failed, 200", u.ActiveState, u.ExecMainStatus)
	}
}

func TestDiedUnsupervised(t *testing.T) {
	never := &RestartSpec{Policy: desired.RestartNever}
	rec := procRecord{PID: 42}
	for _, tt := range []struct {
		name string
		rec  procRecord
		spec *Spec
		want bool
	}{
		{"never-restarted service", rec, &Spec{Restart: never}, true},
		{"default policy: restarted", rec, &Spec{}, false},
		{"stopping when the agent died", procRecord{PID: 42, Stopping: true}, &Spec{Restart: never}, false},
		{"state: stopped (run leaves it inactive)", rec, &Spec{Restart: never, Stopped: true}, false},
		{"a timer", rec, &Spec{Restart: never, Timer: &TimerSpec{}}, false},
		{"no process recorded", procRecord{}, &Spec{Restart: never}, false},
		{"no spec", rec, nil, false},
	} {
		if got := diedUnsupervised(tt.rec, tt.spec); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
