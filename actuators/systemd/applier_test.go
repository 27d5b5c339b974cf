package systemd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators"
	"resil.dev/resil/internal/ownmark/ownmarktest"
	"resil.dev/resil/internal/sdbus/sdbustest"
)

var _ Client = (*sdbustest.Fake)(nil)

type env struct {
	unitDir, confDir string
	f                *sdbustest.Fake
	a                *Applier
}

func newEnv(t *testing.T, opts ...Option) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{
		unitDir: filepath.Join(root, "etc/systemd/system"),
		confDir: filepath.Join(root, "etc/systemd/system.conf.d"),
		f:       sdbustest.New(),
	}
	if err := os.MkdirAll(e.unitDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.a = New(e.f, e.unitDir, e.confDir, zaptest.NewLogger(t), opts...)
	return e
}

func (e *env) apply(t *testing.T, s actuators.Step) (actuators.Result, error) {
	t.Helper()
	return e.a.Apply(context.Background(), s)
}

func (e *env) must(t *testing.T, s actuators.Step, want actuators.Result) {
	t.Helper()
	got, err := e.apply(t, s)
	if err != nil || got != want {
		t.Fatalf("Apply(%s) = %s, %v; want %s, nil", s, got, err, want)
	}
}

func write(path string, data []byte) actuators.Step {
	return actuators.Step{Op: actuators.OpWriteFile, Path: path, Data: data, Reason: "test"}
}

func remove(path string) actuators.Step {
	return actuators.Step{Op: actuators.OpRemoveFile, Path: path, Reason: "test"}
}

func unitStep(op actuators.Op, unit string) actuators.Step {
	return actuators.Step{Op: op, Unit: unit, Reason: "test"}
}

func TestWriteFile(t *testing.T) {
	e := newEnv(t)
	p := filepath.Join(e.unitDir, "worker.service")
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	e.must(t, write(p, ownmarktest.Unit(t, "Service/worker")), actuators.Changed)
	e.must(t, write(p, ownmarktest.Unit(t, "Service/worker")), actuators.Unchanged)
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode = %v, %v; want 0644 despite umask 077", fi.Mode(), err)
	}
	v2 := append(ownmarktest.Unit(t, "Service/worker"), "Environment=A=1\n"...)
	e.must(t, write(p, v2), actuators.Changed)
	if got, _ := os.ReadFile(p); string(got) != string(v2) {
		t.Errorf("content = %q", got)
	}

	// Manager drop-in: its directory does not exist yet.
	conf := filepath.Join(e.confDir, "50-resil-watchdog.conf")
	e.must(t, write(conf, []byte("# X-Resil-Object=Watchdog/host\n[Manager]\nRuntimeWatchdogSec=30s\n")), actuators.Changed)
	// Unit drop-in directory.
	e.must(t, write(filepath.Join(e.unitDir, "worker.service.d", "10-resil.conf"), ownmarktest.Unit(t, "Service/worker")), actuators.Changed)

	// Data without the marker would leave a file resil cannot manage.
	if _, err := e.apply(t, write(filepath.Join(e.unitDir, "bare.service"), []byte("[Service]\n"))); !errors.Is(err, ErrInvalidStep) {
		t.Errorf("write without marker = %v, want ErrInvalidStep", err)
	}

	entries, _ := os.ReadDir(e.unitDir)
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), ".") {
			t.Errorf("temporary file left behind: %s", en.Name())
		}
	}
	if e.f.CallCount("") != 0 {
		t.Errorf("file steps made D-Bus calls: %v", e.f.Calls())
	}
}

func TestWriteFileRefusesForeign(t *testing.T) {
	e := newEnv(t)
	p := filepath.Join(e.unitDir, "sshd.service")
	foreign := []byte("[Service]\nExecStart=/usr/sbin/sshd -D\n")
	if err := os.WriteFile(p, foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err := e.apply(t, write(p, ownmarktest.Unit(t, "Service/sshd"))); !errors.Is(err, ErrNotOwned) || res != actuators.Unchanged {
		t.Fatalf("Apply = %s, %v; want Unchanged, ErrNotOwned", res, err)
	}
	if got, _ := os.ReadFile(p); string(got) != string(foreign) {
		t.Fatal("foreign file changed")
	}
	// A mask symlink is not ours either.
	masked := filepath.Join(e.unitDir, "masked.service")
	if err := os.Symlink("/dev/null", masked); err != nil {
		t.Fatal(err)
	}
	if _, err := e.apply(t, write(masked, ownmarktest.Unit(t, "Service/masked"))); !errors.Is(err, ErrNotOwned) {
		t.Fatalf("write over symlink = %v, want ErrNotOwned", err)
	}
	// Adoption is opt-in.
	e2 := newEnv(t, WithOverwriteForeign())
	p2 := filepath.Join(e2.unitDir, "sshd.service")
	if err := os.WriteFile(p2, foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	e2.must(t, write(p2, ownmarktest.Unit(t, "Service/sshd")), actuators.Changed)
}

func TestPathChecks(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		path string
		want error
	}{
		{"/etc/passwd", ErrOutsideDirs},
		{filepath.Join(e.unitDir, "multi-user.target.wants", "x", "y.service"), ErrOutsideDirs},
		{e.unitDir + "/../x.service", ErrInvalidStep},
		{"relative.service", ErrInvalidStep},
		{"", ErrInvalidStep},
		{filepath.Join(e.unitDir, ".hidden.service"), ErrInvalidStep},
	} {
		for _, s := range []actuators.Step{write(tc.path, []byte("x")), remove(tc.path)} {
			if _, err := e.apply(t, s); !errors.Is(err, tc.want) {
				t.Errorf("Apply(%s) = %v, want %v", s, err, tc.want)
			}
		}
	}
}

func TestRemoveFile(t *testing.T) {
	e := newEnv(t)
	p := filepath.Join(e.unitDir, "old.service")
	e.must(t, remove(p), actuators.Unchanged) // absent

	foreign := filepath.Join(e.unitDir, "foreign.service")
	if err := os.WriteFile(foreign, []byte("[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err := e.apply(t, remove(foreign)); !errors.Is(err, ErrNotOwned) || res != actuators.Unchanged {
		t.Fatalf("remove foreign = %s, %v; want Unchanged, ErrNotOwned", res, err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("foreign file gone: %v", err)
	}

	// Owned unit with an owned and a foreign drop-in.
	e.must(t, write(p, ownmarktest.Unit(t, "Service/old")), actuators.Changed)
	dropDir := p + ".d"
	if err := os.MkdirAll(dropDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dropDir, "10-resil.conf"), ownmarktest.Unit(t, "Service/old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dropDir, "override.conf"), []byte("[Service]\nNice=5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.must(t, remove(p), actuators.Changed)
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("unit file still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dropDir, "10-resil.conf")); !os.IsNotExist(err) {
		t.Errorf("owned drop-in still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dropDir, "override.conf")); err != nil {
		t.Errorf("foreign drop-in removed: %v", err)
	}
	e.must(t, remove(p), actuators.Unchanged)

	// Only owned drop-ins: the directory goes too.
	q := filepath.Join(e.unitDir, "q.service")
	e.must(t, write(q, ownmarktest.Unit(t, "Service/q")), actuators.Changed)
	e.must(t, write(filepath.Join(q+".d", "10-resil.conf"), ownmarktest.Unit(t, "Service/q")), actuators.Changed)
	e.must(t, remove(q), actuators.Changed)
	if _, err := os.Stat(q + ".d"); !os.IsNotExist(err) {
		t.Errorf("empty drop-in dir still there: %v", err)
	}
}

func TestDaemonReloadCounted(t *testing.T) {
	e := newEnv(t)
	e.must(t, actuators.Step{Op: actuators.OpDaemonReload, Reason: "files changed"}, actuators.Changed)
	if e.a.Reloads() != 1 || e.f.CallCount("Reload") != 1 {
		t.Errorf("Reloads() = %d, fake saw %d", e.a.Reloads(), e.f.CallCount("Reload"))
	}
	boom := errors.New("boom")
	e.f.FailNext("Reload", boom)
	if _, err := e.apply(t, actuators.Step{Op: actuators.OpDaemonReload}); !errors.Is(err, boom) {
		t.Errorf("err = %v", err)
	}
}

func TestEnableDisable(t *testing.T) {
	e := newEnv(t)
	e.f.AddUnit(sdbustest.Unit{Name: "worker.service"})
	e.f.AddUnit(sdbustest.Unit{Name: "static.service", NoInstall: true})

	e.must(t, unitStep(actuators.OpEnable, "worker.service"), actuators.Changed)
	e.must(t, unitStep(actuators.OpEnable, "worker.service"), actuators.Unchanged)
	if got := e.f.Calls(); got[0] != "EnableUnitFiles worker.service" {
		t.Errorf("calls = %v", got)
	}
	if _, err := e.apply(t, unitStep(actuators.OpEnable, "static.service")); !errors.Is(err, ErrNoInstallInfo) {
		t.Errorf("enable static = %v, want ErrNoInstallInfo", err)
	}
	if _, err := e.apply(t, unitStep(actuators.OpEnable, "missing.service")); err == nil {
		t.Error("enable of a missing unit file succeeded")
	}

	e.must(t, unitStep(actuators.OpDisable, "worker.service"), actuators.Changed)
	e.must(t, unitStep(actuators.OpDisable, "worker.service"), actuators.Unchanged)
	// A unit file that is gone counts as disabled.
	e.must(t, unitStep(actuators.OpDisable, "missing.service"), actuators.Unchanged)
	if _, err := e.apply(t, unitStep(actuators.OpEnable, "")); !errors.Is(err, ErrInvalidStep) {
		t.Errorf("enable without unit = %v", err)
	}
}

func TestJobs(t *testing.T) {
	e := newEnv(t)
	e.f.AddUnit(sdbustest.Unit{Name: "worker.service"})

	e.must(t, unitStep(actuators.OpStart, "worker.service"), actuators.Changed)
	e.must(t, unitStep(actuators.OpStart, "worker.service"), actuators.Unchanged)
	if n := e.f.CallCount("StartUnit"); n != 1 {
		t.Errorf("StartUnit calls = %d, want 1 (second start re-checked ActiveState)", n)
	}
	u, _ := e.f.Unit("worker.service")
	pid := u.MainPID
	e.must(t, unitStep(actuators.OpRestart, "worker.service"), actuators.Changed)
	if u, _ = e.f.Unit("worker.service"); u.MainPID == pid {
		t.Error("restart did not restart")
	}
	e.must(t, unitStep(actuators.OpStop, "worker.service"), actuators.Changed)
	e.must(t, unitStep(actuators.OpStop, "worker.service"), actuators.Unchanged)
	// Restart always acts, even on an inactive unit.
	e.must(t, unitStep(actuators.OpRestart, "worker.service"), actuators.Changed)
	if n := e.f.CallCount("RestartUnit"); n != 2 {
		t.Errorf("RestartUnit calls = %d, want 2", n)
	}
}

func TestJobFailure(t *testing.T) {
	e := newEnv(t)
	e.f.AddUnit(sdbustest.Unit{Name: "worker.service", JobResult: map[string]string{"start": "failed"}})
	res, err := e.apply(t, unitStep(actuators.OpStart, "worker.service"))
	var je *JobError
	if !errors.As(err, &je) || je.Result != "failed" || je.Unit != "worker.service" || je.Op != actuators.OpStart {
		t.Fatalf("err = %#v, want *JobError{worker.service start failed}", err)
	}
	if want := `start worker.service: job result "failed"`; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	if res != actuators.Changed {
		t.Errorf("res = %s, want changed (the job ran)", res)
	}

	// A failed stop of a failed unit is not even tried.
	e.must(t, unitStep(actuators.OpStop, "worker.service"), actuators.Unchanged)

	// Reset-failed acts once.
	e.must(t, unitStep(actuators.OpResetFailed, "worker.service"), actuators.Changed)
	e.must(t, unitStep(actuators.OpResetFailed, "worker.service"), actuators.Unchanged)
	if n := e.f.CallCount("ResetFailedUnit"); n != 1 {
		t.Errorf("ResetFailedUnit calls = %d", n)
	}

	if _, err := e.apply(t, unitStep(actuators.OpStart, "missing.service")); err == nil || errors.As(err, &je) {
		t.Errorf("start missing = %v, want a D-Bus error", err)
	}
}

func TestJobTimeoutAndCancel(t *testing.T) {
	e := newEnv(t, WithJobTimeout(20*time.Millisecond))
	e.f.AddUnit(sdbustest.Unit{Name: "slow.service", HangJobs: true})
	if _, err := e.apply(t, unitStep(actuators.OpStart, "slow.service")); !errors.Is(err, ErrJobTimeout) {
		t.Errorf("err = %v, want ErrJobTimeout", err)
	}
	e2 := newEnv(t)
	e2.f.AddUnit(sdbustest.Unit{Name: "slow.service", HangJobs: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := e2.a.Apply(ctx, unitStep(actuators.OpStart, "slow.service")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestSetManager(t *testing.T) {
	e := newEnv(t)
	step := actuators.Step{Op: actuators.OpSetManager, Props: map[string]string{"RuntimeWatchdogUSec": "30s", "RebootWatchdogUSec": "600000000"}, Reason: "test"}
	e.must(t, step, actuators.Changed) // Runtime changes; Reboot already 10min
	e.must(t, step, actuators.Unchanged)
	if n := e.f.CallCount("SetManagerProperty"); n != 1 {
		t.Errorf("Set calls = %d (%v), want 1", n, e.f.Calls())
	}

	// WatchdogDevice is read-only at runtime.
	dev := actuators.Step{Op: actuators.OpSetManager, Props: map[string]string{"WatchdogDevice": "/dev/watchdog0", "RuntimeWatchdogUSec": "20s"}}
	res, err := e.apply(t, dev)
	var re *ReexecError
	if !errors.Is(err, ErrReexecRequired) || !errors.As(err, &re) || re.Props["WatchdogDevice"] != "/dev/watchdog0" || res != actuators.Changed {
		t.Errorf("Apply = %s, %v; want Changed (runtime set) and a ReexecError for WatchdogDevice", res, err)
	}
	e.f.SetManager("WatchdogDevice", "/dev/watchdog0")
	e.must(t, actuators.Step{Op: actuators.OpSetManager, Props: map[string]string{"WatchdogDevice": "/dev/watchdog0"}}, actuators.Unchanged)

	// 0 drops the runtime override; systemd reports the drop-in's value.
	e.f.SetConf("RuntimeWatchdogUSec", uint64(30_000_000))
	if _, err := e.apply(t, actuators.Step{Op: actuators.OpSetManager, Props: map[string]string{"RuntimeWatchdogUSec": "0"}}); !errors.Is(err, ErrNotApplied) {
		t.Errorf("set 0 = %v, want ErrNotApplied", err)
	}

	for _, props := range []map[string]string{nil, {"Bogus": "1"}, {"RuntimeWatchdogUSec": "soon"}, {"ServiceWatchdogs": "maybe"}} {
		if _, err := e.apply(t, actuators.Step{Op: actuators.OpSetManager, Props: props}); !errors.Is(err, ErrInvalidStep) {
			t.Errorf("props %v: err = %v, want ErrInvalidStep", props, err)
		}
	}
}

func TestParseUSec(t *testing.T) {
	for in, want := range map[string]uint64{
		"0": 0, "30000000": 30_000_000, "30s": 30_000_000, "500ms": 500_000, "10min": 600_000_000,
		"1m30s": 90_000_000, "infinity": ^uint64(0), "250us": 250,
	} {
		if got, err := ParseUSec(in); err != nil || got != want {
			t.Errorf("ParseUSec(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "-5s"} {
		if _, err := ParseUSec(in); err == nil {
			t.Errorf("ParseUSec(%q) succeeded", in)
		}
	}
}

func TestUnknownOp(t *testing.T) {
	e := newEnv(t)
	if res, err := e.apply(t, actuators.Step{Op: "teleport"}); !errors.Is(err, ErrUnknownOp) || res != actuators.Unchanged {
		t.Errorf("Apply = %s, %v", res, err)
	}
}

func TestCallHook(t *testing.T) {
	var seen []string
	e := newEnv(t, WithCallHook(func(m string) { seen = append(seen, m) }))
	e.f.AddUnit(sdbustest.Unit{Name: "worker.service"})
	e.must(t, unitStep(actuators.OpStart, "worker.service"), actuators.Changed)
	// The re-check, the job, the effect check.
	if want := []string{"Get ActiveState", "start unit", "Get ActiveState"}; strings.Join(seen, ",") != strings.Join(want, ",") || e.a.Calls() != 3 {
		t.Errorf("hook saw %v, Calls() = %d; want %v", seen, e.a.Calls(), want)
	}
}

// A step systemd accepts but whose effect is not seen afterwards is an
// error (ErrNotObserved), never a silent success.
func TestEffectNotObserved(t *testing.T) {
	for _, tc := range []struct {
		name  string
		unit  sdbustest.Unit
		step  actuators.Step
		check func(*sdbustest.Fake)
	}{
		{name: "enable", unit: sdbustest.Unit{Name: "w.service", Inert: true}, step: unitStep(actuators.OpEnable, "w.service")},
		{name: "disable", unit: sdbustest.Unit{Name: "w.service", UnitFileState: "enabled", Inert: true}, step: unitStep(actuators.OpDisable, "w.service")},
		{name: "start", unit: sdbustest.Unit{Name: "w.service", Inert: true}, step: unitStep(actuators.OpStart, "w.service")},
		{name: "stop", unit: sdbustest.Unit{Name: "w.service", ActiveState: "active", SubState: "running", MainPID: 7, Inert: true}, step: unitStep(actuators.OpStop, "w.service")},
		{name: "restart", unit: sdbustest.Unit{Name: "w.service", ActiveState: "active", SubState: "running", MainPID: 7, ExecMainStartTimestamp: 5, Inert: true}, step: unitStep(actuators.OpRestart, "w.service")},
		{name: "start fails after done", unit: sdbustest.Unit{Name: "w.service", Inert: true, ActiveState: "inactive", Result: "exit-code"}, step: unitStep(actuators.OpStart, "w.service")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.f.AddUnit(tc.unit)
			_, err := e.a.Apply(context.Background(), tc.step)
			if !errors.Is(err, ErrNotObserved) {
				t.Fatalf("Apply(%s) = %v, want ErrNotObserved", tc.step, err)
			}
		})
	}
	// The same steps on a unit that does change pass the checks.
	e := newEnv(t)
	e.f.AddUnit(sdbustest.Unit{Name: "w.service"})
	for _, op := range []actuators.Op{actuators.OpEnable, actuators.OpStart, actuators.OpRestart, actuators.OpStop, actuators.OpDisable} {
		e.must(t, unitStep(op, "w.service"), actuators.Changed)
	}
}

// A restart whose ExecMainStartTimestamp could not be read before its job
// still runs and is applied (a failed step would restart it again next
// pass); alone and in a batch.
func TestRestartBeforeReadFails(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			e := newEnv(t)
			e.f.AddUnit(sdbustest.Unit{Name: "w.service", ActiveState: "active", SubState: "running", MainPID: 7, ExecMainStartTimestamp: 5})
			e.f.FailNext("GetUnitTypeProperty", errors.New("connection reset"))
			var res actuators.Result
			var err error
			if batch {
				rs, errs := e.a.ApplyBatch(context.Background(), []actuators.Step{unitStep(actuators.OpRestart, "w.service")})
				res, err = rs[0], errs[0]
			} else {
				res, err = e.a.Apply(context.Background(), unitStep(actuators.OpRestart, "w.service"))
			}
			if res != actuators.Changed || err != nil {
				t.Errorf("restart = %s, %v; want changed, no error", res, err)
			}
			if u, _ := e.f.Unit("w.service"); u.MainPID == 7 || e.f.CallCount("RestartUnit") != 1 {
				t.Errorf("restart did not run: main PID %d, %d RestartUnit", u.MainPID, e.f.CallCount("RestartUnit"))
			}
		})
	}
}
