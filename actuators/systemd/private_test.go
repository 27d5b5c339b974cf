package systemd

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"
	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators"
	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/internal/ownmark/ownmarktest"
	"resil.dev/resil/internal/sdbus"
	sdobserve "resil.dev/resil/observed/systemd"
)

// innerEnv marks the run of this test binary inside a sandbox.
const innerEnv = "RESIL_SD_PRIVATE_INNER"

// TestSandboxPrivateSocket covers the path the agent takes as root:
// sdbus.Dial on systemd's private socket, where there is no bus daemon,
// no Hello, no AddMatch, and systemd sends every signal unasked. The host
// cannot use a sandbox's private socket (systemd resets peers outside its
// PID namespace), so this test binary is bound into the sandbox and runs
// TestPrivateSocketInner there, in all of the sandbox's namespaces.
func TestSandboxPrivateSocket(t *testing.T) {
	if os.Getenv(innerEnv) == "1" {
		t.Skip("inside the sandbox already") // not a prerequisite: the inner run of this test
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const target = "/opt/resil-test/systemd.test"
	sb := sandbox.New(t, sandbox.Options{Binds: []sandbox.Bind{{Host: exe, Target: target, ReadOnly: true}}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := sb.Command(ctx, target, "-test.run=^TestPrivateSocketInner$", "-test.v", "-test.count=1")
	cmd.Env = append(cmd.Env, innerEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("inside the sandbox:\n%s", out)
	if err != nil || !strings.Contains(string(out), "--- PASS: TestPrivateSocketInner") {
		t.Fatalf("inner run: %v", err)
	}
}

func TestPrivateSocketInner(t *testing.T) {
	if os.Getenv(innerEnv) != "1" {
		t.Skip("runs inside a sandbox, started by TestSandboxPrivateSocket") // not a prerequisite: a helper run
	}
	ctx := context.Background()
	conn, err := sdbus.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !conn.Private() {
		t.Fatal("Dial as root did not use the private socket")
	}

	const unitDir = "/etc/systemd/system"
	a := New(conn, unitDir, "/etc/systemd/system.conf.d", zaptest.NewLogger(t))
	path := unitDir + "/p.service"
	for i, s := range []actuators.Step{
		{Op: actuators.OpWriteFile, Path: path, Data: ownmarktest.Unit(t, "Service/p", "/bin/sleep", "infinity"), Reason: "test"},
		{Op: actuators.OpDaemonReload, Reason: "test"},
		{Op: actuators.OpEnable, Unit: "p.service", Reason: "test"},
		{Op: actuators.OpStart, Unit: "p.service", Reason: "test"},
		{Op: actuators.OpStart, Unit: "p.service", Reason: "again"},
	} {
		r, err := a.Apply(ctx, s)
		if want := map[bool]actuators.Result{true: actuators.Unchanged, false: actuators.Changed}[i == 4]; err != nil || r != want {
			t.Fatalf("Apply(%s) = %s, %v; want %s", s, r, err, want)
		}
	}

	o := sdobserve.New(conn, unitDir)
	wire0 := conn.Wire().Calls()
	st, err := o.Observe(ctx, []string{"p.service"})
	if err != nil {
		t.Fatal(err)
	}
	if u := st.Units["p.service"]; u.ActiveState != "active" || u.UnitFileState != "enabled" || u.Owner != "Service/p" {
		t.Fatalf("p.service = %+v", u)
	}
	t.Logf("Observe of 1 unit + manager: %d calls on the private socket", conn.Wire().Calls()-wire0)

	wakes := make(chan struct{}, 64)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- o.Subscribe(sctx, func() { wakes <- struct{}{} }) }()
	time.Sleep(100 * time.Millisecond)
	idle0 := conn.Wire().Calls()
	time.Sleep(500 * time.Millisecond)
	if d := conn.Wire().Calls() - idle0; d != 0 {
		t.Errorf("idle with Subscribe running: %d calls", d)
	}
	if r, err := a.Apply(ctx, actuators.Step{Op: actuators.OpStop, Unit: "p.service", Reason: "test"}); err != nil || r != actuators.Changed {
		t.Fatalf("stop = %s, %v", r, err)
	}
	select {
	case <-wakes:
	case <-time.After(5 * time.Second):
		t.Error("no wake on stop over the private socket")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Subscribe = %v", err)
	}

	if err := os.WriteFile(unitDir+"/f.service", ownmarktest.Oneshot(t, "Service/f", "/bin/false"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, actuators.Step{Op: actuators.OpDaemonReload, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	_, err = a.Apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "f.service", Reason: "test"})
	var je *JobError
	if !errors.As(err, &je) || je.Result != "failed" {
		t.Errorf("start f.service = %v, want a JobError", err)
	}
	privateJobs(t, conn, a, unitDir, "")
	// Again with a watch running: the reload and the jobs then go on the
	// watch's connection (sdbus watch.go).
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- o.Subscribe(wctx, func() {}) }()
	time.Sleep(200 * time.Millisecond)
	w0 := conn.Wire().WatchActs()
	privateJobs(t, conn, a, unitDir, "w")
	if n := conn.Wire().WatchActs() - w0; n < 8 { // 2 reloads, 3+4 starts, 3 restarts, ...
		t.Errorf("%d reloads and jobs on the watch's connection, want them all there", n)
	}
	readsOnWatch(t, conn)
	wcancel()
	if err := <-wdone; err != nil {
		t.Errorf("Subscribe = %v", err)
	}
}

// privateJobs: jobs queued and awaited on the private socket's property
// pipe (sdbus.Conn.RunJobsContext): a batch of starts and restarts (each
// restarted service gets a new main PID), a failed job in a batch, a job
// past the job timeout, and a unit that does not exist.
func privateJobs(t *testing.T, conn *sdbus.Conn, a *Applier, unitDir, tag string) {
	ctx := context.Background()
	names := []string{"q1" + tag + ".service", "q2" + tag + ".service", "q3" + tag + ".service"}
	for _, n := range names {
		if err := os.WriteFile(unitDir+"/"+n, ownmarktest.Unit(t, "Service/"+strings.TrimSuffix(n, ".service"), "/bin/sleep", "infinity"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	slow := "[Service]\nExecStartPre=/bin/sleep 30\nExecStart=/bin/sleep infinity\n"
	if err := os.WriteFile(unitDir+"/slow.service", []byte(slow), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, actuators.Step{Op: actuators.OpDaemonReload, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	mainPID := func(unit string) uint32 {
		p, err := conn.GetUnitTypePropertyContext(ctx, unit, "Service", "MainPID")
		if err != nil {
			t.Fatal(err)
		}
		v, _ := p.Value.Value().(uint32)
		return v
	}
	batch := func(op actuators.Op, units ...string) ([]actuators.Result, []error) {
		var steps []actuators.Step
		for _, u := range units {
			steps = append(steps, actuators.Step{Op: op, Unit: u, Reason: "test"})
		}
		return a.ApplyBatch(ctx, steps)
	}
	// The go-systemd connection: dialed for an enable, closed once idle
	// (systemd would send it every signal), dialed again when needed.
	waitClosed := func(what string) {
		for deadline := time.Now().Add(10 * time.Second); conn.GodbusOpen(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the go-systemd connection is still open %s", what)
			}
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := a.Apply(ctx, actuators.Step{Op: actuators.OpEnable, Unit: names[0], Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		waitClosed("after an enable")
	}
	res, errs := batch(actuators.OpStart, append(names, "f.service")...)
	for i, n := range names {
		if res[i] != actuators.Changed || errs[i] != nil || mainPID(n) == 0 {
			t.Errorf("batch start %s = %s, %v, main PID %d", n, res[i], errs[i], mainPID(n))
		}
	}
	var je *JobError
	if !errors.As(errs[3], &je) || je.Result != "failed" {
		t.Errorf("batch start f.service = %v, want a JobError", errs[3])
	}
	before := map[string]uint32{}
	for _, n := range names {
		before[n] = mainPID(n)
	}
	res, errs = batch(actuators.OpRestart, names...)
	for i, n := range names {
		if after := mainPID(n); res[i] != actuators.Changed || errs[i] != nil || after == 0 || after == before[n] {
			t.Errorf("batch restart %s = %s, %v; main PID %d before, %d after", n, res[i], errs[i], before[n], after)
		}
	}

	// A job's MainStartBefore is read with its call, before the job: a
	// batch mixing jobs with and without it gets each value in its place.
	mainStart := func(unit string) uint64 {
		v, err := sdbus.MainStart(ctx, conn, unit)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	starts := map[string]uint64{}
	for _, n := range names {
		starts[n] = mainStart(n)
	}
	jobs := []sdbus.Job{
		{Method: sdbus.MethodRestartUnit, Unit: names[1], Mode: "replace", MainStartBefore: true},
		{Method: sdbus.MethodStartUnit, Unit: names[2], Mode: "replace"},
		{Method: sdbus.MethodRestartUnit, Unit: names[0], Mode: "replace", MainStartBefore: true},
		{Method: sdbus.MethodRestartUnit, Unit: "no-such/unit.service", Mode: "replace", MainStartBefore: true},
	}
	jr, err := conn.RunJobsContext(ctx, jobs, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i, j := range jobs[:3] {
		want := uint64(0)
		if j.MainStartBefore {
			want = starts[j.Unit]
		}
		if r := jr[i]; r.Err != nil || r.Result != "done" || r.MainStartErr != nil || r.MainStart != want || want == 0 && j.MainStartBefore {
			t.Errorf("job %d (%s %s): %+v, want done with MainStart %d", i, j.Method, j.Unit, r, want)
		}
	}
	if r := jr[3]; r.Err == nil || r.MainStartErr == nil {
		t.Errorf("restart of an invalid name: %+v, want the job's error and the read's", r)
	}
	for _, n := range []string{names[0], names[1]} {
		if after := mainStart(n); after <= starts[n] {
			t.Errorf("%s: ExecMainStartTimestamp %d after its restart, %d before", n, after, starts[n])
		}
	}
	if after := mainStart(names[2]); after != starts[names[2]] {
		t.Errorf("%s: ExecMainStartTimestamp moved (%d → %d) on a start of an active unit", names[2], starts[names[2]], after)
	}

	if conn.GodbusOpen() {
		t.Error("jobs on the private socket dialed the go-systemd connection")
	}

	short := New(conn, unitDir, "/etc/systemd/system.conf.d", zaptest.NewLogger(t), WithJobTimeout(300*time.Millisecond))
	t0 := time.Now()
	_, err = short.Apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "slow.service", Reason: "test"})
	if !errors.Is(err, ErrJobTimeout) || time.Since(t0) > 20*time.Second {
		t.Errorf("start slow.service = %v after %s, want ErrJobTimeout", err, time.Since(t0))
	}
	// The connection still works after a wait that timed out.
	if r, err := a.Apply(ctx, actuators.Step{Op: actuators.OpStop, Unit: "slow.service", Reason: "test"}); r != actuators.Changed || err != nil {
		t.Errorf("stop slow.service = %s, %v", r, err)
	}
	if r, err := a.Apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "no-such-unit.service", Reason: "test"}); r != actuators.Unchanged || err == nil || errors.As(err, &je) {
		t.Errorf("start no-such-unit.service = %s, %v; want an error of the call", r, err)
	}
}

// readsOnWatch: with a watch running, a unit list and a property read
// go on the watch's connection (none dialed after a reload closed the idle
// pipe) and answer what they answer on a pipe; systemd's error for an
// unknown property comes back as such.
func readsOnWatch(t *testing.T, conn *sdbus.Conn) {
	t.Helper()
	ctx := context.Background()
	names := []string{"q1w.service", "no-such.service"}
	w0, c0 := conn.Wire().WatchCalls(), conn.Wire().Calls()
	list, err := conn.ListUnitsByNamesContext(ctx, names)
	if err != nil || len(list) != 2 || list[0].Name != "q1w.service" || list[0].ActiveState != "active" || list[1].LoadState != "not-found" {
		t.Fatalf("list on the watch: %v %+v", err, list)
	}
	pid, err := conn.GetUnitTypePropertyContext(ctx, "q1w.service", "Service", "MainPID")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := pid.Value.Value().(uint32); v == 0 {
		t.Errorf("MainPID of q1w.service on the watch = %v", pid.Value)
	}
	_, err = conn.GetUnitTypePropertyContext(ctx, "q1w.service", "Service", "NoSuchProperty")
	var derr godbus.Error
	if !errors.As(err, &derr) || derr.Name != "org.freedesktop.DBus.Error.UnknownProperty" {
		t.Errorf("NoSuchProperty on the watch: %v, want UnknownProperty", err)
	}
	if w, c := conn.Wire().WatchCalls()-w0, conn.Wire().Calls()-c0; w != 3 || c != 3 {
		t.Errorf("%d of 3 reads on the watch's connection, %d calls in all (none again elsewhere)", w, c)
	}
}
