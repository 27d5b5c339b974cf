package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/observed"
)

func TestServiceStartStop(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	h.run()
	h.install(service("hello", desired.ServiceSpec{Command: sh(`echo "hello $GREETING"; exec sleep 1000`),
		Environment: map[string]string{"GREETING": "world"}}), false)
	ctx := context.Background()
	if u := h.unit("hello.service"); u.LoadState != "loaded" || u.ActiveState != "inactive" || u.UnitFileState != "disabled" || u.Owner != "Service/hello" {
		t.Fatalf("before start: %+v", u)
	}
	if res, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "hello.service"}); err != nil || res != actuators.Changed {
		t.Fatalf("start: %v %v", res, err)
	}
	u := h.unit("hello.service")
	if !isActive(u) || u.MainPID == 0 || u.ExecMainStartTimestamp == 0 {
		t.Fatalf("after start: %+v", u)
	}
	if res, _ := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "hello.service"}); res != actuators.Unchanged {
		t.Fatalf("second start: %v", res)
	}
	waitFor(t, "prefixed output", func() bool { return strings.Contains(h.out.String(), "hello: hello world\n") })
	if res, err := h.apply(ctx, actuators.Step{Op: actuators.OpStop, Unit: "hello.service"}); err != nil || res != actuators.Changed {
		t.Fatalf("stop: %v %v", res, err)
	}
	if u := h.unit("hello.service"); u.ActiveState != "inactive" || u.Result != ResultSuccess || alive(int(u.MainPID)) {
		t.Fatalf("after stop: %+v", u)
	}
	if res, _ := h.apply(ctx, actuators.Step{Op: actuators.OpStop, Unit: "hello.service"}); res != actuators.Unchanged {
		t.Fatalf("second stop: %v", res)
	}
}

func TestCrashLoopStartLimitAndReset(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	h.run()
	h.install(service("crash", desired.ServiceSpec{Command: sh(`echo run >> ` + runs + `; exit 3`),
		Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "0s",
			Limit: &desired.StartLimit{Burst: 3, Interval: "1m"}}}), false)
	// Like Type=exec: start succeeds once the process runs; it crashes later.
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "crash.service"})
	u := h.waitUnit("crash.service", "start-limit-hit", func(u *observed.Unit) bool { return u.Result == ResultStartLimitHit })
	if u.ActiveState != "failed" || u.NRestarts != 2 || u.ExecMainStatus != 3 || u.ExecMainExitTimestamp < u.ExecMainStartTimestamp {
		t.Fatalf("failed unit: %+v", u)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(lines(t, runs)); n != 3 {
		t.Fatalf("runs = %d, want 3 (burst)", n)
	}
	// A manual start is refused too, until reset.
	if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "crash.service"}); err == nil || !strings.Contains(err.Error(), ResultStartLimitHit) {
		t.Fatalf("start after limit: %v", err)
	}
	if err := RequestReset(h.dir, "crash", false); err != nil {
		t.Fatal(err)
	}
	u = h.waitUnit("crash.service", "reset", func(u *observed.Unit) bool { return u.ActiveState == "inactive" })
	if u.Result != ResultSuccess {
		t.Fatalf("after reset: %+v", u)
	}
	if n := len(lines(t, runs)); n != 3 {
		t.Fatalf("reset restarted the unit: runs = %d", n)
	}
}

// reset with start (the manifest says running): the unit goes from failed
// straight to activating in one command, never reading inactive in between
// (a pass that saw it stopped would record StoppedOutOfBand and, under
// drift: report, leave it stopped).
func TestResetWithStartStartsIt(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	broken := filepath.Join(h.dir, "broken")
	if err := os.WriteFile(broken, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.run()
	h.install(service("fixme", desired.ServiceSpec{Command: sh(`[ -e ` + broken + ` ] && exit 3; exec sleep 1000`),
		Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "0s",
			Limit: &desired.StartLimit{Burst: 2, Interval: "1m"}}}), false)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "fixme.service"})
	h.waitUnit("fixme.service", "start-limit-hit", func(u *observed.Unit) bool { return u.Result == ResultStartLimitHit })
	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	if err := RequestReset(h.dir, "fixme", true); err != nil {
		t.Fatal(err)
	}
	var seen []string
	u := h.waitUnit("fixme.service", "started by reset", func(u *observed.Unit) bool {
		if len(seen) == 0 || seen[len(seen)-1] != u.ActiveState {
			seen = append(seen, u.ActiveState)
		}
		return isActive(u)
	})
	if slices.Contains(seen, "inactive") || u.NRestarts != 0 {
		t.Fatalf("states %v on the way to active; NRestarts %d", seen, u.NRestarts)
	}
}

func TestRestartDelay(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	h.run()
	h.install(service("slow", desired.ServiceSpec{
		Command: sh(`date +%s%N >> ` + runs + `; [ $(wc -l < ` + runs + `) -ge 2 ] && exec sleep 1000; exit 1`),
		Restart: &desired.RestartSpec{Policy: desired.RestartOnFailure, Delay: "1500ms"}}), true)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "slow.service"})
	h.waitUnit("slow.service", "auto-restart", func(u *observed.Unit) bool { return u.SubState == "auto-restart" })
	u := h.waitUnit("slow.service", "restarted", isActive)
	if u.NRestarts != 1 {
		t.Fatalf("NRestarts = %d", u.NRestarts)
	}
	// Active once the process runs, maybe before its first line.
	waitFor(t, "second run's line", func() bool { return len(lines(t, runs)) >= 2 })
	l := lines(t, runs)
	a, _ := strconv.ParseInt(l[0], 10, 64)
	b, _ := strconv.ParseInt(l[1], 10, 64)
	if gap := time.Duration(b - a); gap < 1500*time.Millisecond {
		t.Fatalf("restarted after %v, before the 1.5s delay", gap)
	}
	// A restart job zeroes the count, as systemd's does (NRestarts counts
	// the restarts by policy since the last start by a job: a rollout
	// tells a new version that crashed by it).
	if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpRestart, Unit: "slow.service"}); err != nil {
		t.Fatal(err)
	}
	if u := h.waitUnit("slow.service", "restarted by a job", isActive); u.NRestarts != 0 {
		t.Errorf("NRestarts = %d after a restart job, want 0", u.NRestarts)
	}
}

func TestPreStart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	dir := h.dir
	h.run()
	flaky := filepath.Join(dir, "flaky")
	h.install(service("ok", desired.ServiceSpec{Command: []string{"sleep", "1000"},
		PreStart: []desired.Check{{Command: sh(`echo try >> ` + flaky + `; [ $(wc -l < ` + flaky + `) -ge 2 ]`), Retries: 3, Delay: "100ms"}}}), false)
	bad := filepath.Join(dir, "bad")
	h.install(service("bad", desired.ServiceSpec{Command: []string{"sleep", "1000"},
		PreStart: []desired.Check{{Command: sh(`echo try >> ` + bad + `; exit 7`), Retries: 2, Delay: "100ms"}}}), false)
	ctx := context.Background()
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "ok.service"}); err != nil {
		t.Fatalf("start with a check passing on the 2nd try: %v", err)
	}
	if u := h.unit("ok.service"); !isActive(u) || len(lines(t, flaky)) != 2 {
		t.Fatalf("ok: %+v, tries %d", u, len(lines(t, flaky)))
	}
	_, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "bad.service"})
	if err == nil || !strings.Contains(err.Error(), "exit-code") {
		t.Fatalf("start with a failing check: %v", err)
	}
	u := h.unit("bad.service")
	if u.ActiveState != "failed" || u.Result != ResultExitCode || u.ExecMainStatus != 7 {
		t.Fatalf("bad: %+v", u)
	}
	if n := len(lines(t, bad)); n != 3 {
		t.Fatalf("tries = %d, want 3 (1 + 2 retries)", n)
	}
}

func TestWatchdogKillAndRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	d := h.dir
	h.run()
	// First run: ready, two pings, then silence. Later runs ping forever.
	script := `echo run >> ` + d + `/runs
systemd-notify --ready
if [ $(wc -l < ` + d + `/runs) -eq 1 ]; then n=2; else n=1000000; fi
while [ $n -gt 0 ]; do sleep 0.2; systemd-notify WATCHDOG=1; n=$((n-1)); done
exec sleep 1000`
	h.install(service("dog", desired.ServiceSpec{Command: sh(script),
		Watchdog: &desired.ServiceWatchdog{Timeout: "3s", NotifyAccess: "all"},
		Restart:  &desired.RestartSpec{Policy: desired.RestartOnFailure, Delay: "0s"}}), false)
	if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "dog.service"}); err != nil {
		t.Fatalf("start (waits for READY=1): %v", err)
	}
	first := h.unit("dog.service").MainPID
	u := h.waitUnit("dog.service", "watchdog restart", func(u *observed.Unit) bool {
		return u.Result == ResultWatchdog && u.NRestarts == 1 && isActive(u)
	})
	if u.MainPID == first || alive(int(first)) {
		t.Fatalf("first process %d not replaced (now %d)", first, u.MainPID)
	}
	time.Sleep(4 * time.Second) // pinging keeps it alive
	if u := h.unit("dog.service"); !isActive(u) || u.NRestarts != 1 {
		t.Fatalf("pinging service: %+v", u)
	}
}

func TestNotifyAccessMain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	h.run()
	// A helper process that is not the main PID is refused under main: the
	// start times out only after 90s, so check the state instead.
	h.install(service("strict", desired.ServiceSpec{Command: sh(`sleep 0.1 & wait; /bin/sh -c 'systemd-notify --pid=$$ --ready'; exec sleep 1000`),
		Watchdog: &desired.ServiceWatchdog{Timeout: "10s"}}), false)
	go func() {
		_, _ = h.a.Apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "strict.service"})
	}()
	time.Sleep(1500 * time.Millisecond)
	if u := h.unit("strict.service"); u.ActiveState != "activating" {
		t.Fatalf("READY=1 from another PID accepted under NotifyAccess=main: %+v", u)
	}
	// systemd-notify run by the main shell claims the shell's PID (as root,
	// via SCM_CREDENTIALS), so main accepts it.
	sandbox.RequireRoot(t, "to claim the parent PID")
	h.install(service("mainok", desired.ServiceSpec{Command: sh(`systemd-notify --ready; exec sleep 1000`),
		Watchdog: &desired.ServiceWatchdog{Timeout: "10s"}}), false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "mainok.service"}); err != nil {
		t.Fatalf("systemd-notify --ready from the main shell: %v", err)
	}
}

func TestIdentityEnvironmentDirectory(t *testing.T) {
	t.Parallel()
	sandbox.RequireRoot(t, "to switch users")
	h := newHarness(t, "", Options{})
	envFile := filepath.Join(h.dir, "env")
	os.WriteFile(envFile, []byte("# comment\nFROM_FILE=\"yes\"\nOVERRIDE=file\n"), 0o644)
	wd := filepath.Join(h.dir, "wd")
	os.MkdirAll(wd, 0o755)
	os.Chmod(h.dir, 0o755) // t.TempDir is 0700: nobody could not enter wd
	os.Chmod(filepath.Dir(h.dir), 0o755)
	h.run()
	h.install(service("who", desired.ServiceSpec{
		Command:          sh(`echo "uid=$(id -u) pwd=$(pwd) file=$FROM_FILE override=$OVERRIDE user=$USER"; exec sleep 1000`),
		User:             "nobody",
		WorkingDirectory: wd,
		EnvironmentFiles: []string{envFile, "-" + filepath.Join(h.dir, "missing")},
		Environment:      map[string]string{"OVERRIDE": "manifest"},
	}), false)
	if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "who.service"}); err != nil {
		t.Fatal(err)
	}
	want := "who: uid=65534 pwd=" + wd + " file=yes override=manifest user=nobody\n"
	waitFor(t, "identity line", func() bool { return strings.Contains(h.out.String(), want) })
}

func TestStopEscalatesToKill(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	h.run()
	h.install(service("stubborn", desired.ServiceSpec{Command: sh(`trap '' TERM; sleep 1000 & wait; wait`), StopTimeout: "500ms"}), false)
	ctx := context.Background()
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "stubborn.service"}); err != nil {
		t.Fatal(err)
	}
	pid := int(h.unit("stubborn.service").MainPID)
	waitFor(t, "helper", func() bool { return len(groupMembers("/proc", pid, 0)) == 2 })
	members := groupMembers("/proc", pid, 0)
	if res, err := h.apply(ctx, actuators.Step{Op: actuators.OpStop, Unit: "stubborn.service"}); err != nil || res != actuators.Changed {
		t.Fatalf("stop: %v %v", res, err)
	}
	// The whole group got SIGKILL; a member may still be on its way out
	// when the stop returns (the stop waits for the main process).
	for _, p := range members {
		waitFor(t, fmt.Sprintf("pid %d killed by the stop", p), func() bool { return !alive(p) })
	}
	if u := h.unit("stubborn.service"); u.ActiveState != "inactive" || u.ExecMainStatus != 9 {
		t.Fatalf("after stop: %+v", u)
	}
}

// A watchdog service whose user changes keeps working after its restart:
// the notify socket (kept across restarts, 0660) is handed to the new
// user (it stayed the old one's, READY=1 was refused, and the watchdog
// killed the service in a loop).
func TestNotifySocketFollowsUserChange(t *testing.T) {
	t.Parallel()
	sandbox.RequireRoot(t, "to switch users")
	h := newHarness(t, "", Options{})
	os.Chmod(h.dir, 0o755) // t.TempDir is 0700: nobody could not reach the socket
	os.Chmod(filepath.Dir(h.dir), 0o755)
	h.run()
	spec := desired.ServiceSpec{Command: sh(`systemd-notify --ready; while sleep 0.2; do systemd-notify WATCHDOG=1; done`),
		Watchdog: &desired.ServiceWatchdog{Timeout: "5s", NotifyAccess: "all"}}
	h.install(service("nw", spec), false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "nw.service"}); err != nil {
		t.Fatalf("start as root: %v", err)
	}
	spec.User = "nobody"
	h.install(service("nw", spec), false)
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpRestart, Unit: "nw.service"}); err != nil {
		t.Fatalf("restart as nobody (waits for READY=1): %v", err)
	}
	if u := h.unit("nw.service"); !isActive(u) {
		t.Fatalf("after the user change: %+v", u)
	}
}

// With no workingDirectory a service runs in / (systemd's default for
// system services), not in the agent's own working directory.
func TestDefaultWorkingDirectoryIsRoot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	h.run()
	out := filepath.Join(h.dir, "pwd")
	h.install(service("wd", desired.ServiceSpec{Command: sh(`pwd > ` + out + `; exec sleep 1000`)}), false)
	if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "wd.service"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pwd written", func() bool { b, _ := os.ReadFile(out); return len(b) > 0 })
	if b, _ := os.ReadFile(out); string(b) != "/\n" {
		t.Fatalf("working directory %q, want /", b)
	}
}

// stopTimeout: unset is the default (10s), an explicit 0 waits for good
// (systemd's TimeoutStopSec=0: no SIGKILL), anything else is itself.
func TestStopTimeout(t *testing.T) {
	for _, tt := range []struct {
		set  desired.Duration
		want time.Duration
	}{{"", 10 * time.Second}, {"0s", 0}, {"0", 0}, {"3s", 3 * time.Second}} {
		r := &runner{spec: &Spec{StopTimeout: tt.set}}
		if got := r.stopTimeout(); got != tt.want {
			t.Errorf("stopTimeout %q: %v, want %v", tt.set, got, tt.want)
		}
	}
}
