package process

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/observed"
)

// startProc starts argv outside the supervisor (a forger, a victim) and
// kills and reaps it when the test ends.
func startProc(t *testing.T, env []string, attr *syscall.SysProcAttr, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Dir, cmd.SysProcAttr = env, "/", attr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// killedBy sends cmd SIGUSR1 (fatal: no handler) and returns the signal it
// died of: a fatal signal sent before (SIGTERM, SIGKILL) fixed the exit
// status when it was sent, so anything else means someone signalled it.
func killedBy(t *testing.T, cmd *exec.Cmd) syscall.Signal {
	t.Helper()
	_ = cmd.Process.Signal(syscall.SIGUSR1)
	_ = cmd.Wait()
	if cmd.ProcessState == nil {
		t.Fatalf("%v was reaped by someone else: it was signalled", cmd.Args)
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		t.Fatalf("%v: not killed by a signal: %v", cmd.Args, cmd.ProcessState)
	}
	return ws.Signal()
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// The state files holding secrets (the process table: launch IDs; the
// supervisor ID) are the agent's alone, and nobody else may list the state
// dir - also one an older agent created world-readable. The supervisor ID
// is random, not derived from the path.
func TestStateFilesPrivate(t *testing.T) {
	t.Parallel()
	for _, older := range []bool{false, true} {
		dir := t.TempDir()
		if older { // an older agent's state dir and table, world-readable
			os.Chmod(dir, 0o755)
			writeTable(t, dir, map[string]procRecord{})
			os.Chmod(filepath.Join(dir, "processes.json"), 0o644)
		}
		h := newHarness(t, dir, Options{})
		h.install(service("svc", desired.ServiceSpec{Command: sh(`exec sleep 1000`)}), true)
		h.run()
		h.waitUnit("svc.service", "running", isActive)
		for path, want := range map[string]os.FileMode{
			dir: 0o711, filepath.Join(dir, "run"): 0o711,
			filepath.Join(dir, "processes.json"): 0o600, filepath.Join(dir, idFile): 0o600,
		} {
			if got := mode(t, path); got != want {
				t.Errorf("older %v: %s: mode %v, want %v", older, path, got, want)
			}
		}
		id, err := readStateID(dir)
		if err != nil || id != h.s.id || id == legacyStateID(h.s.dir) {
			t.Fatalf("supervisor id %q (%v), supervisor has %q", id, err, h.s.id)
		}
		// The ID survives agents.
		h.abandon()
		h2 := newHarness(t, dir, Options{})
		h2.run()
		h2.waitUnit("svc.service", "adopted", isActive)
		if h2.s.id != id {
			t.Fatalf("id changed from %q to %q", id, h2.s.id)
		}
		h2.stopUnits()
	}
}

// Concurrent creators of the supervisor ID agree on one.
func TestEnsureStateIDOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ids := make(chan string, 8)
	for i := 0; i < cap(ids); i++ {
		go func() {
			id, _, err := ensureStateID(dir)
			if err != nil {
				t.Error(err)
			}
			ids <- id
		}()
	}
	first := <-ids
	for i := 1; i < cap(ids); i++ {
		if id := <-ids; id != first || len(id) != 32 {
			t.Fatalf("ids %q and %q", first, id)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("state dir holds %d entries, want the id file alone", len(ents))
	}
}

// Scenario: the agent died between an intent and its fork; another user
// learnt the launch ID and the supervisor ID and started a process with
// those markers. The next agent must not adopt it as the unit's main
// process (its UID is neither root nor the unit's user): it starts the
// unit anew and leaves that process alone.
func TestForgedMarkerNotAdopted(t *testing.T) {
	t.Parallel()
	sandbox.RequireRoot(t, "to run a process as another user")
	dir := t.TempDir()
	id, _, err := ensureStateID(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, dir, Options{})
	h.install(service("web", desired.ServiceSpec{Command: sh(`exec sleep 1000`)}), true)
	nonce := newNonce()
	writeTable(t, dir, map[string]procRecord{"web.service": {Unit: "web.service", Nonce: nonce, Started: 1}})
	forged := startProc(t, []string{envInvocation + "=" + nonce, envSupervisor + "=" + id, envUnit + "=web.service"},
		&syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}, "/bin/sleep", "1000")
	h.run()
	u := h.waitUnit("web.service", "running", isActive)
	if int(u.MainPID) == forged.Process.Pid {
		t.Fatalf("the forged process %d was adopted", forged.Process.Pid)
	}
	if !alive(forged.Process.Pid) {
		t.Fatal("another user's process was signalled")
	}
	// The same process is ours when the unit runs as its user.
	owner := func(unit string, uid int) bool { return uid == 0 || uid == 65534 }
	found := false
	for _, m := range scanMarked("/proc", []string{id}, owner) {
		found = found || m.pid == forged.Process.Pid
	}
	if !found {
		t.Fatal("a process of the unit's user was not recognised")
	}
}

// Scenario: a stray of ours joined another process group of its session
// whose leader is not ours. The next agent stops the stray, and only it.
func TestStrayInForeignGroupSignalledAlone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	id, _, err := ensureStateID(dir)
	if err != nil {
		t.Fatal(err)
	}
	victim := startProc(t, nil, &syscall.SysProcAttr{Setpgid: true}, "/bin/sleep", "1000")
	stray := startProc(t, []string{envInvocation + "=" + newNonce(), envSupervisor + "=" + id, envUnit + "=gone.service"},
		&syscall.SysProcAttr{Setpgid: true, Pgid: victim.Process.Pid}, "/bin/sleep", "1000")
	h := newHarness(t, dir, Options{})
	h.run()
	waitFor(t, "stray stopped", func() bool { return !alive(stray.Process.Pid) })
	if sig := killedBy(t, victim); sig != syscall.SIGUSR1 {
		t.Fatalf("the group the stray joined got %v", sig)
	}
}

// A stray's group recorded at the scan whose members are all gone by the
// signal (its ID possibly reused) is not signalled; and a closed quit ends
// the wait for strays without a SIGKILL.
func TestStopStraysChecksGroupAndQuit(t *testing.T) {
	t.Parallel()
	s, err := New(t.TempDir(), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The "reused" group: a live group leader that is not the recorded one.
	victim := startProc(t, nil, &syscall.SysProcAttr{Setpgid: true}, "/bin/sleep", "1000")
	pg := victim.Process.Pid
	st, err := readProcStat("/proc", pg)
	if err != nil {
		t.Fatal(err)
	}
	nonce := newNonce()
	marks := []marked{
		{pid: pg, pgid: pg, start: st.StartTime + 1, unit: "x.service", nonce: nonce}, // the old leader
		{pid: 1 << 30, pgid: pg, start: 1, unit: "x.service", nonce: nonce},           // gone
	}
	quit := make(chan struct{})
	close(quit)
	s.stopStrays(quit, marks, map[string]bool{}, map[int]bool{})
	if sig := killedBy(t, victim); sig != syscall.SIGUSR1 {
		t.Fatalf("a group none of the strays is in any more got %v", sig)
	}

	// A stray ignoring SIGTERM: the agent stopping (quit) does not wait for
	// it, nor kill it; the next agent finishes.
	ready := filepath.Join(t.TempDir(), "ready")
	stubborn := startProc(t, nil, &syscall.SysProcAttr{Setpgid: true}, "/bin/sh", "-c", `trap '' TERM; : > `+ready+`; while :; do sleep 0.05; done`)
	sp := stubborn.Process.Pid
	waitFor(t, "trap set", func() bool { _, err := os.Stat(ready); return err == nil })
	sst, err := readProcStat("/proc", sp)
	if err != nil {
		t.Fatal(err)
	}
	s.stopStrays(quit, []marked{{pid: sp, pgid: sp, start: sst.StartTime, unit: "y.service", nonce: newNonce()}}, map[string]bool{}, map[int]bool{})
	if sig := killedBy(t, stubborn); sig != syscall.SIGUSR1 {
		t.Fatalf("stray got %v", sig)
	}
}

// Killed after SIGTERM of a stop, the process exiting while no agent ran:
// the next agent cannot adopt a dead PID, but the stop stands - an enabled
// unit is not started again. Tables of older agents (no reason) mean a stop.
func TestInterruptedStopOfExitedProcessStands(t *testing.T) {
	t.Parallel()
	for _, why := range []string{stopStop, ""} {
		dir := t.TempDir()
		h := newHarness(t, dir, Options{})
		h.install(service("svc", desired.ServiceSpec{Command: sh(`exec sleep 1000`)}), true)
		dead := exec.Command("/bin/true")
		if err := dead.Run(); err != nil {
			t.Fatal(err)
		}
		writeTable(t, dir, map[string]procRecord{"svc.service": {Unit: "svc.service", PID: dead.Process.Pid, PGID: dead.Process.Pid,
			StartTime: 1, Started: 1, Nonce: newNonce(), Stopping: true, StopReason: why}})
		h.run()
		// Commands go through the unit's goroutine in order: a start
		// queued at startup has begun by now.
		h.apply(context.Background(), actuators.Step{Op: actuators.OpResetFailed, Unit: "svc.service"})
		if u := h.unit("svc.service"); u.ActiveState != "inactive" {
			t.Fatalf("reason %q: the stopped unit is %s/%s", why, u.ActiveState, u.SubState)
		}
		if _, ok := readTable(t, dir)["svc.service"]; ok {
			t.Fatal("row kept")
		}
	}
}

// Killed during a restart whose process exited meanwhile: the next agent
// completes the restart (starts it), even when the unit is not enabled.
func TestInterruptedRestartOfExitedProcessCompleted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, dir, Options{})
	h.install(service("svc", desired.ServiceSpec{Command: sh(`exec sleep 1000`)}), false)
	dead := exec.Command("/bin/true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	writeTable(t, dir, map[string]procRecord{"svc.service": {Unit: "svc.service", PID: dead.Process.Pid, PGID: dead.Process.Pid,
		StartTime: 1, Started: 1, Nonce: newNonce(), Stopping: true, StopReason: stopRestart}})
	h.run()
	if u := h.waitUnit("svc.service", "restarted", isActive); !u.OwedRestart {
		t.Errorf("the restart a killed agent began reads as not owed (the ledger counts it manual): %+v", u)
	}
	// A later restart by a pass is the agent's too (TestRestartJobMarksItsProcess).
	if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpRestart, Unit: "svc.service"}); err != nil {
		t.Fatal(err)
	}
	if u := h.unit("svc.service"); !u.OwedRestart {
		t.Errorf("a pass's restart reads as not the agent's: %+v", u)
	}
}

// Killed during a restart of a process that ignores SIGTERM: the row says
// restart, and the next agent finishes the stop and starts it again.
func TestInterruptedRestartOfLiveProcessCompleted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	v, u1 := killedWhileStopping(t, dir, actuators.OpRestart, func(r procRecord) bool { return r.StopReason == stopRestart })
	files, _ := Render(v("100ms"))
	if err := os.WriteFile(filepath.Join(dir, "units", "slow.service"), files[0].Data, 0o644); err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, dir, Options{})
	h2.run()
	u2 := h2.waitUnit("slow.service", "restarted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != u1.MainPID })
	if !u2.OwedRestart {
		t.Errorf("the restart a killed agent began reads as not owed (the ledger counts it manual): %+v", u2)
	}
	if alive(int(u1.MainPID)) {
		t.Fatalf("old process %d alive beside %d", u1.MainPID, u2.MainPID)
	}
	h2.stopUnits()
}

// Upgrading from an agent whose supervisor ID was the state dir's hash:
// the first new agent still resolves that agent's intent to its launch.
func TestLegacyMarkersAcceptedOnUpgrade(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, dir, Options{})
	h.install(service("svc", desired.ServiceSpec{Command: sh(`exec sleep 1000`)}), true)
	os.Remove(filepath.Join(dir, idFile)) // written by the install: the old agent had none
	nonce := newNonce()
	writeTable(t, dir, map[string]procRecord{"svc.service": {Unit: "svc.service", Nonce: nonce, Started: 1}})
	old := startProc(t, []string{envInvocation + "=" + nonce, envSupervisor + "=" + legacyStateID(h.s.dir), envUnit + "=svc.service"},
		&syscall.SysProcAttr{Setpgid: true}, "/bin/sleep", "1000")
	h2 := newHarness(t, dir, Options{})
	h2.run()
	if u := h2.waitUnit("svc.service", "running", isActive); int(u.MainPID) != old.Process.Pid {
		t.Fatalf("pid %d, want the old agent's launch %d", u.MainPID, old.Process.Pid)
	}
	if h2.s.id == legacyStateID(h2.s.dir) {
		t.Fatal("the new agent kept the guessable id")
	}
}

// A process a restart job started is marked as the agent's restart
// (observed.Unit.OwedRestart), in the table too: an agent killed right
// after the restart, before its ledger observed it, leaves the next agent
// a restart it counts as the agent's, not manual (which counts toward
// restart storms). A start job's process and an automatic restart's are
// not marked.
func TestRestartJobMarksItsProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, dir, Options{})
	h.run()
	flag := filepath.Join(dir, "crash-once")
	h.install(service("svc", desired.ServiceSpec{Command: sh(`[ -e ` + flag + ` ] && rm ` + flag + ` && exit 1; exec sleep 1000`),
		Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "0s"}}), true)
	ctx := context.Background()
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "svc.service"}); err != nil {
		t.Fatal(err)
	}
	u1 := h.waitUnit("svc.service", "started", isActive)
	if u1.OwedRestart {
		t.Errorf("a start job's process reads as a restart's: %+v", u1)
	}
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpRestart, Unit: "svc.service"}); err != nil {
		t.Fatal(err)
	}
	u2 := h.waitUnit("svc.service", "restarted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != u1.MainPID })
	if !u2.OwedRestart {
		t.Errorf("a restart job's process is not marked: %+v", u2)
	}
	// Agent killed: the next one adopts it, mark and all.
	h.abandon()
	h2 := newHarness(t, dir, Options{})
	h2.run()
	if u := h2.waitUnit("svc.service", "adopted", isActive); u.MainPID != u2.MainPID || !u.OwedRestart {
		t.Errorf("adopted after the agent's kill: %+v, want pid %d marked", u, u2.MainPID)
	}
	// Its automatic restart is not the agent's.
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Kill(int(u2.MainPID), syscall.SIGKILL)
	u3 := h2.waitUnit("svc.service", "restarted by policy", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != u2.MainPID && u.NRestarts > 0 })
	if u3.OwedRestart {
		t.Errorf("an automatic restart reads as the agent's: %+v", u3)
	}
	h2.stopUnits()
}

// A descriptor the agent inherited without close-on-exec (a shell's
// `7>>file`, QA found fds 10 and 251 in every service) does not reach the
// services it starts: they get stdin, stdout and stderr only.
func TestServicesGetNoInheritedDescriptors(t *testing.T) {
	leak, err := unix.Open(filepath.Join(t.TempDir(), "inherited"), unix.O_RDWR|unix.O_CREAT, 0o600) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(leak)
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "fds")
	h := newHarness(t, dir, Options{})
	h.install(service("svc", desired.ServiceSpec{Command: sh(`ls /proc/self/fd > ` + out + `.tmp; mv ` + out + `.tmp ` + out + `; exec sleep 1000`)}), true)
	h.run()
	h.waitUnit("svc.service", "running", isActive)
	var data []byte
	for deadline := time.Now().Add(waitLong); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if data, err = os.ReadFile(out); err == nil {
			break
		}
	}
	// ls's own directory descriptor is the one more than 0, 1, 2.
	fds := strings.Fields(string(data))
	if len(fds) != 4 || fds[0] != "0" || fds[1] != "1" || fds[2] != "2" {
		t.Fatalf("the service's descriptors: %q (the agent's inherited fd %d must not be among them)", fds, leak)
	}
	if slices.Contains(fds, strconv.Itoa(leak)) {
		t.Fatalf("inherited fd %d reached the service: %q", leak, fds)
	}
}
