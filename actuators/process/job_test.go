package process

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// The lock file is opened as the service's user, as systemd's unit opens it
// in the service's shell: a lock path in a folder the service owns that it
// turned into a symlink to a root-only file does not hand it that file for
// writing (it did, as fd 3, opened by the agent as root); its own lock
// file there works and is its own.
func TestLockOpenedAsTheServiceUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (make test runs as root): the check is about a root agent")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	h := newHarness(t, "", Options{})
	// t.TempDir's folders are 0700: nobody could not reach its own folder.
	for _, d := range []string{filepath.Dir(h.dir), h.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	own := filepath.Join(h.dir, "svc")
	if err := os.Mkdir(own, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(own, uid, -1); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(h.dir, "secret")
	if err := os.WriteFile(secret, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(own, "evil.lock")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(own, "evil.lock"), uid, -1); err != nil {
		t.Fatal(err)
	}
	h.run()
	h.install(service("evil", desired.ServiceSpec{User: "nobody", Lock: filepath.Join(own, "evil.lock"),
		Command: sh(`echo PWNED >&3; sleep 1000`), Restart: &desired.RestartSpec{Policy: "never"}}), false)
	h.install(service("fair", desired.ServiceSpec{User: "nobody", Lock: filepath.Join(own, "fair.lock"),
		Command: []string{"sleep", "1000"}}), false)
	ctx := context.Background()
	_, _ = h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "evil.service"})
	time.Sleep(300 * time.Millisecond) // time for the shell's echo, had it the file
	if b, _ := os.ReadFile(secret); string(b) != "secret\n" {
		t.Fatalf("a service running as nobody wrote to a root-only file through its lock: %q", b)
	}
	if u := h.unit("evil.service"); isActive(u) {
		t.Fatalf("evil runs: %+v", u)
	}
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "fair.service"}); err != nil {
		t.Fatal(err)
	}
	h.waitUnit("fair.service", "running", isActive)
	fi, err := os.Stat(filepath.Join(own, "fair.lock"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
		t.Fatalf("fair.lock owned by uid %d, want the service's %d", st.Uid, uid)
	}
}
