package systemd

// Tests against a real systemd 252 booted by e2e/sandbox. They skip when the
// host cannot run a sandbox (not root, no namespaces or overlayfs), unless
// RESIL_E2E_REQUIRE=1.
//
// The test process dials the sandbox's system bus from the host,
// /proc/PID/root/run/dbus/system_bus_socket (EXTERNAL auth, then Hello).
// Its private socket /proc/PID/root/run/systemd/private cannot be used
// from the host: systemd resets the connection of a peer outside its PID
// namespace (its PID reads as 0). Unit files are written through
// /proc/PID/root/etc/systemd/system, which systemd sees as
// /etc/systemd/system.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators"
	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/internal/ownmark/ownmarktest"
	"resil.dev/resil/internal/sdbus"
	"resil.dev/resil/internal/sdbus/sdbustest"
)

type sbEnv struct {
	sb      *sandbox.Sandbox
	conn    *sdbus.Conn
	a       *Applier
	unitDir string
}

func newSandbox(t *testing.T, opts ...Option) *sbEnv {
	t.Helper()
	sb := sandbox.New(t, sandbox.Options{})
	conn := sdbustest.DialSandbox(t, sb)
	unitDir := filepath.Join(sb.Root(), "etc/systemd/system")
	return &sbEnv{
		sb: sb, conn: conn, unitDir: unitDir,
		a: New(conn, unitDir, filepath.Join(sb.Root(), "etc/systemd/system.conf.d"), zaptest.NewLogger(t), opts...),
	}
}

func (e *sbEnv) show(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	m, err := e.sb.Show(context.Background(), unit, props...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *sbEnv) applyAll(t *testing.T, steps []actuators.Step) []actuators.Result {
	t.Helper()
	var out []actuators.Result
	for _, s := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r, err := e.a.Apply(ctx, s)
		cancel()
		if err != nil {
			t.Fatalf("Apply(%s) = %s, %v", s, r, err)
		}
		out = append(out, r)
	}
	return out
}

func TestSandboxUnitLifecycle(t *testing.T) {
	e := newSandbox(t)
	path := filepath.Join(e.unitDir, "worker.service")
	data := ownmarktest.Unit(t, "Service/worker", "/bin/sleep", "infinity")
	converge := []actuators.Step{
		{Op: actuators.OpWriteFile, Unit: "worker.service", Path: path, Data: data, Reason: "absent"},
		{Op: actuators.OpDaemonReload, Reason: "files changed"},
		{Op: actuators.OpEnable, Unit: "worker.service", Reason: "disabled, want enabled"},
		{Op: actuators.OpStart, Unit: "worker.service", Reason: "inactive, want active"},
	}
	got := e.applyAll(t, converge)
	for i, r := range got {
		if r != actuators.Changed {
			t.Errorf("first apply %s = %s, want changed", converge[i], r)
		}
	}
	p := e.show(t, "worker.service", "ActiveState", "SubState", "UnitFileState", "MainPID")
	if p["ActiveState"] != "active" || p["UnitFileState"] != "enabled" || p["MainPID"] == "0" {
		t.Fatalf("after apply: %v", p)
	}
	if target, err := os.Readlink(filepath.Join(e.unitDir, "multi-user.target.wants/worker.service")); err != nil || target != "/etc/systemd/system/worker.service" {
		t.Errorf("enable symlink = %q, %v", target, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("unit file mode = %v, %v", fi, err)
	}

	// Second apply of the same plan, minus the reload the planner only
	// plans after a write: nothing to do.
	again := []actuators.Step{converge[0], converge[2], converge[3]}
	for i, r := range e.applyAll(t, again) {
		if r != actuators.Unchanged {
			t.Errorf("second apply %s = %s, want unchanged", again[i], r)
		}
	}
	if e.a.Reloads() != 1 {
		t.Errorf("Reloads() = %d, want 1", e.a.Reloads())
	}

	pid := p["MainPID"]
	e.applyAll(t, []actuators.Step{{Op: actuators.OpRestart, Unit: "worker.service", Reason: "test"}})
	if p := e.show(t, "worker.service", "ActiveState", "MainPID"); p["ActiveState"] != "active" || p["MainPID"] == pid || p["MainPID"] == "0" {
		t.Errorf("after restart: %v (MainPID before %s)", p, pid)
	}

	stop := actuators.Step{Op: actuators.OpStop, Unit: "worker.service", Reason: "test"}
	if r := e.applyAll(t, []actuators.Step{stop, stop}); r[0] != actuators.Changed || r[1] != actuators.Unchanged {
		t.Errorf("stop, stop = %v", r)
	}
	if p := e.show(t, "worker.service", "ActiveState"); p["ActiveState"] != "inactive" {
		t.Errorf("after stop: %v", p)
	}

	disable := actuators.Step{Op: actuators.OpDisable, Unit: "worker.service", Reason: "test"}
	if r := e.applyAll(t, []actuators.Step{disable, disable}); r[0] != actuators.Changed || r[1] != actuators.Unchanged {
		t.Errorf("disable, disable = %v", r)
	}
	if _, err := os.Lstat(filepath.Join(e.unitDir, "multi-user.target.wants/worker.service")); !os.IsNotExist(err) {
		t.Errorf("enable symlink still there: %v", err)
	}

	rm := actuators.Step{Op: actuators.OpRemoveFile, Unit: "worker.service", Path: path, Reason: "not desired"}
	reload := actuators.Step{Op: actuators.OpDaemonReload, Reason: "files changed"}
	if r := e.applyAll(t, []actuators.Step{rm, reload, rm}); r[0] != actuators.Changed || r[2] != actuators.Unchanged {
		t.Errorf("remove, reload, remove = %v", r)
	}
	if p := e.show(t, "worker.service", "LoadState"); p["LoadState"] != "not-found" {
		t.Errorf("after remove and reload: %v", p)
	}
}

func TestSandboxRemoveRefusesForeign(t *testing.T) {
	e := newSandbox(t)
	foreign := []byte("[Service]\nExecStart=/bin/true\n")
	if err := e.sb.WriteFile("/etc/systemd/system/admin.service", foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.unitDir, "admin.service")
	for _, s := range []actuators.Step{
		{Op: actuators.OpRemoveFile, Path: path, Reason: "test"},
		{Op: actuators.OpWriteFile, Path: path, Data: ownmarktest.Unit(t, "Service/admin"), Reason: "test"},
	} {
		if r, err := e.a.Apply(context.Background(), s); !errors.Is(err, ErrNotOwned) || r != actuators.Unchanged {
			t.Errorf("Apply(%s) = %s, %v; want unchanged, ErrNotOwned", s, r, err)
		}
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != string(foreign) {
		t.Errorf("foreign file = %q, %v", got, err)
	}
}

func TestSandboxJobFailureAndResetFailed(t *testing.T) {
	e := newSandbox(t)
	path := filepath.Join(e.unitDir, "broken.service")
	e.applyAll(t, []actuators.Step{
		{Op: actuators.OpWriteFile, Path: path, Data: ownmarktest.Oneshot(t, "Service/broken", "/bin/false"), Reason: "test"},
		{Op: actuators.OpDaemonReload, Reason: "test"},
	})
	_, err := e.a.Apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "broken.service", Reason: "test"})
	var je *JobError
	if !errors.As(err, &je) || je.Result != "failed" || je.Unit != "broken.service" || je.Op != actuators.OpStart {
		t.Fatalf("start = %v, want *JobError with result failed", err)
	}
	if want := `start broken.service: job result "failed"`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if p := e.show(t, "broken.service", "ActiveState", "Result"); p["ActiveState"] != "failed" || p["Result"] != "exit-code" {
		t.Fatalf("after failed start: %v", p)
	}

	reset := actuators.Step{Op: actuators.OpResetFailed, Unit: "broken.service", Reason: "test"}
	if r := e.applyAll(t, []actuators.Step{reset, reset}); r[0] != actuators.Changed || r[1] != actuators.Unchanged {
		t.Errorf("reset-failed twice = %v", r)
	}
	if p := e.show(t, "broken.service", "ActiveState"); p["ActiveState"] != "inactive" {
		t.Errorf("after reset-failed: %v", p)
	}

	// A job systemd cannot even queue is a D-Bus error, not a JobError.
	_, err = e.a.Apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "nonexistent.service", Reason: "test"})
	if err == nil || errors.As(err, &je) {
		t.Errorf("start of a missing unit = %v", err)
	}
}

func TestSandboxJobTimeout(t *testing.T) {
	e := newSandbox(t, WithJobTimeout(200*time.Millisecond))
	path := filepath.Join(e.unitDir, "slow.service")
	e.applyAll(t, []actuators.Step{
		{Op: actuators.OpWriteFile, Path: path, Data: ownmarktest.Oneshot(t, "Service/slow", "/bin/sleep", "5"), Reason: "test"},
		{Op: actuators.OpDaemonReload, Reason: "test"},
	})
	begin := time.Now()
	_, err := e.a.Apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "slow.service", Reason: "test"})
	if !errors.Is(err, ErrJobTimeout) || time.Since(begin) > 2*time.Second {
		t.Errorf("start = %v after %v, want ErrJobTimeout after ~200ms", err, time.Since(begin))
	}
	// The job runs on in systemd; the start re-check now sees "activating".
	if r, err := e.a.Apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "slow.service", Reason: "test"}); r != actuators.Unchanged || err != nil {
		t.Errorf("second start = %s, %v; want unchanged (activating)", r, err)
	}
}

func TestSandboxSetManager(t *testing.T) {
	e := newSandbox(t)
	ctx := context.Background()
	step := actuators.Step{Op: actuators.OpSetManager, Props: map[string]string{"RuntimeWatchdogUSec": "20s", "RebootWatchdogUSec": "10min"}, Reason: "test"}
	if r := e.applyAll(t, []actuators.Step{step, step}); r[0] != actuators.Changed || r[1] != actuators.Unchanged {
		t.Errorf("set-manager twice = %v", r)
	}
	v, err := e.conn.GetManagerPropertyContext(ctx, "RuntimeWatchdogUSec")
	if err != nil || sdbus.PropertyText(v) != "20000000" {
		t.Errorf("RuntimeWatchdogUSec = %v, %v", v, err)
	}

	_, err = e.a.Apply(ctx, actuators.Step{Op: actuators.OpSetManager, Props: map[string]string{"WatchdogDevice": "/dev/watchdog7"}, Reason: "test"})
	var re *ReexecError
	if !errors.As(err, &re) || !errors.Is(err, ErrReexecRequired) {
		t.Errorf("set WatchdogDevice = %v, want *ReexecError", err)
	}

	// 0 drops the runtime override: systemd falls back to system.conf.d,
	// which here sets 30s.
	if err := e.sb.WriteFile("/etc/systemd/system.conf.d/50-resil-watchdog.conf", []byte("# X-Resil-Object=Watchdog/host\n[Manager]\nRuntimeWatchdogSec=30s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.applyAll(t, []actuators.Step{{Op: actuators.OpDaemonReload, Reason: "test"}})
	if v, _ := e.conn.GetManagerPropertyContext(ctx, "RuntimeWatchdogUSec"); sdbus.PropertyText(v) != "20000000" {
		t.Errorf("after drop-in and reload: RuntimeWatchdogUSec = %v, want the runtime override 20s to win", v)
	}
	_, err = e.a.Apply(ctx, actuators.Step{Op: actuators.OpSetManager, Props: map[string]string{"RuntimeWatchdogUSec": "0"}, Reason: "test"})
	if !errors.Is(err, ErrNotApplied) || !strings.Contains(err.Error(), "30000000") {
		t.Errorf("set 0 = %v, want ErrNotApplied naming the drop-in's 30000000", err)
	}
}

// An enable that systemd accepts, with changes, but after which the unit is
// not enabled (its [Install] only has Also=, so systemd enables the other
// unit and reports this one "indirect") fails with ErrNotObserved; and an
// enable after the symlink was removed by hand, without a reload, acts and
// is seen.
func TestSandboxEnableEffectChecked(t *testing.T) {
	e := newSandbox(t)
	ctx := context.Background()
	write := func(name, content string) {
		t.Helper()
		if err := e.sb.WriteFile("/etc/systemd/system/"+name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.service", "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nAlso=b.service\n")
	write("b.service", "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n")
	if _, err := e.sb.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	res, err := e.a.Apply(ctx, actuators.Step{Op: actuators.OpEnable, Unit: "a.service", Reason: "test"})
	if !errors.Is(err, ErrNotObserved) || res != actuators.Changed {
		t.Fatalf("enable a.service = %s, %v; want changed and ErrNotObserved", res, err)
	}

	e.applyAll(t, []actuators.Step{{Op: actuators.OpEnable, Unit: "b.service", Reason: "test"}})
	if err := e.sb.Remove("/etc/systemd/system/multi-user.target.wants/b.service"); err != nil {
		t.Fatal(err)
	}
	if r := e.applyAll(t, []actuators.Step{{Op: actuators.OpEnable, Unit: "b.service", Reason: "test"}}); r[0] != actuators.Changed {
		t.Fatalf("enable after the symlink was removed: %s, want changed", r[0])
	}
	if r := e.applyAll(t, []actuators.Step{{Op: actuators.OpDisable, Unit: "b.service", Reason: "test"}}); r[0] != actuators.Changed {
		t.Fatalf("disable: %s, want changed", r[0])
	}
}
