package systemd

// Tests against a real systemd 252 booted by e2e/sandbox. They skip when the
// host cannot run a sandbox (not root, no namespaces or overlayfs), unless
// RESIL_E2E_REQUIRE=1.
//
// The test process dials the sandbox's system bus from the host,
// /proc/PID/root/run/dbus/system_bus_socket (EXTERNAL auth, then Hello).
// Dialing the private socket /proc/PID/root/run/systemd/private from the
// host fails: systemd resets the connection of a peer outside its PID
// namespace (its PID reads as 0); TestSandboxPrivateSocketFromHost in
// internal/sdbus keeps that fact checked. Paths systemd reports are inside the sandbox, so the
// Observer reads them with WithRoot("/proc/PID/root").

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	sdapply "resil.dev/resil/actuators/systemd"
	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/internal/ownmark/ownmarktest"
	"resil.dev/resil/internal/sdbus"
	"resil.dev/resil/internal/sdbus/sdbustest"
	"resil.dev/resil/observed"
)

type sbEnv struct {
	sb      *sandbox.Sandbox
	conn    *sdbus.Conn
	unitDir string
}

func newSandbox(t *testing.T) *sbEnv {
	t.Helper()
	sb := sandbox.New(t, sandbox.Options{})
	conn := sdbustest.DialSandbox(t, sb)
	return &sbEnv{sb: sb, conn: conn, unitDir: filepath.Join(sb.Root(), "etc/systemd/system")}
}

func (e *sbEnv) observer(opts ...Option) *Observer {
	opts = append([]Option{
		WithRoot(e.sb.Root()),
		WithSysfs(filepath.Join(e.sb.Root(), "sys")),
		WithManagerConf(filepath.Join(e.sb.Root(), DefaultManagerConf)),
	}, opts...)
	return New(e.conn, e.unitDir, opts...)
}

func (e *sbEnv) write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := e.sb.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e *sbEnv) systemctl(t *testing.T, args ...string) {
	t.Helper()
	if _, err := e.sb.Systemctl(context.Background(), args...); err != nil {
		t.Fatal(err)
	}
}

func TestSandboxObserveForeignDropIn(t *testing.T) {
	e := newSandbox(t)
	unit := ownmarktest.Unit(t, "Service/x", "/bin/sleep", "infinity")
	override := []byte("[Service]\nNice=5\n")
	e.write(t, "/etc/systemd/system/x.service", unit)
	e.write(t, "/etc/systemd/system/x.service.d/override.conf", override)
	e.systemctl(t, "daemon-reload")
	e.systemctl(t, "start", "x.service")

	o := e.observer()
	st, err := o.Observe(context.Background(), []string{"x.service"})
	if err != nil {
		t.Fatal(err)
	}
	u := st.Units["x.service"]
	const dropIn = "/etc/systemd/system/x.service.d/override.conf"
	if !slices.Contains(u.DropInPaths, dropIn) {
		t.Fatalf("DropInPaths = %v, want %s", u.DropInPaths, dropIn)
	}
	if got := u.DropIns[dropIn]; string(got) != string(override) {
		t.Errorf("drop-in bytes = %q, want %q", got, override)
	}
	if string(u.File) != string(unit) || u.Owner != "Service/x" || u.Path != filepath.Join(e.unitDir, "x.service") {
		t.Errorf("file %s owner %q = %q", u.Path, u.Owner, u.File)
	}
	if u.LoadState != "loaded" || u.ActiveState != "active" || u.SubState != "running" || u.Result != "success" ||
		u.MainPID == 0 || u.ExecMainStartTimestamp == 0 || u.NeedDaemonReload {
		t.Errorf("unit = %+v", u)
	}

	// Edit the drop-in without a reload: systemd flags it.
	e.write(t, "/etc/systemd/system/x.service.d/override.conf", []byte("[Service]\nNice=7\n"))
	st, err = o.Observe(context.Background(), []string{"x.service"})
	if err != nil {
		t.Fatal(err)
	}
	if u := st.Units["x.service"]; !u.NeedDaemonReload || string(u.DropIns[dropIn]) != "[Service]\nNice=7\n" {
		t.Errorf("after edit: NeedDaemonReload = %v, drop-in = %q", u.NeedDaemonReload, u.DropIns[dropIn])
	}
}

func TestSandboxObserveOwnedWithoutDesiredName(t *testing.T) {
	e := newSandbox(t)
	e.write(t, "/etc/systemd/system/orphan.service", ownmarktest.Unit(t, "Service/orphan"))
	e.write(t, "/etc/systemd/system/admin.service", []byte("[Service]\nExecStart=/bin/true\n"))
	e.write(t, "/etc/systemd/system/new.timer", ownmarktest.Unit(t, "Timer/new"))
	// new.timer is on disk but systemd was not reloaded: only orphan is loaded.
	e.systemctl(t, "daemon-reload")
	e.write(t, "/etc/systemd/system/late.service", ownmarktest.Unit(t, "Service/late"))

	st, err := e.observer().Observe(context.Background(), []string{"wanted.service"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range st.Units {
		names = append(names, n)
	}
	sort.Strings(names)
	if want := []string{"late.service", "new.timer", "orphan.service", "wanted.service"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("units = %v, want %v (desired plus owned files, not the admin's)", names, want)
	}
	if u := st.Units["orphan.service"]; u.Owner != "Service/orphan" || u.LoadState != "loaded" {
		t.Errorf("orphan = %+v", u)
	}
	if u := st.Units["wanted.service"]; u.LoadState != "not-found" || u.File != nil {
		t.Errorf("wanted = %+v", u)
	}
	t.Logf("late.service (written after the reload): LoadState=%s File=%d bytes", st.Units["late.service"].LoadState, len(st.Units["late.service"].File))
}

func TestSandboxObserveManager(t *testing.T) {
	e := newSandbox(t)
	conf := []byte("# X-Resil-Object=Watchdog/host\n[Manager]\nRebootWatchdogSec=5min\n")
	e.write(t, DefaultManagerConf, conf)
	e.systemctl(t, "daemon-reload")
	st, err := e.observer().Observe(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := st.Manager
	want := map[string]string{"RuntimeWatchdogUSec": "0", "RebootWatchdogUSec": "300000000", "WatchdogDevice": ""}
	if !reflect.DeepEqual(m.Properties, want) || string(m.File) != string(conf) {
		t.Errorf("manager = %v %q, want %v and the drop-in", m.Properties, m.File, want)
	}
	t.Logf("watchdog devices visible in the sandbox: %+v", m.Devices)
}

func TestSandboxSubscribeWakesOnStop(t *testing.T) {
	e := newSandbox(t)
	e.write(t, "/etc/systemd/system/w.service", ownmarktest.Unit(t, "Service/w", "/bin/sleep", "infinity"))
	e.write(t, "/etc/systemd/system/bystander.service", ownmarktest.Unit(t, "Service/bystander", "/bin/sleep", "infinity"))
	e.systemctl(t, "daemon-reload")
	e.systemctl(t, "start", "w.service")

	// Only w is managed: bystander is not desired, and we remove its marker
	// so that it is not a prune candidate either.
	e.write(t, "/etc/systemd/system/bystander.service", []byte("[Service]\nType=exec\nExecStart=/bin/sleep infinity\n"))
	e.systemctl(t, "daemon-reload")
	o := e.observer()
	if _, err := o.Observe(context.Background(), []string{"w.service"}); err != nil {
		t.Fatal(err)
	}

	kick := make(chan time.Time, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Subscribe(ctx, func() { kick <- time.Now() }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Subscribe = %v", err)
		}
	}()
	time.Sleep(200 * time.Millisecond) // let AddMatch and Subscribe land

	// Idle: nothing managed changes, no wake and no D-Bus call.
	wire0 := e.conn.Wire().Calls()
	calls0 := o.Calls()
	e.systemctl(t, "start", "bystander.service")
	e.systemctl(t, "stop", "bystander.service")
	time.Sleep(time.Second)
	if len(kick) != 0 {
		t.Errorf("woke %d times for an unmanaged unit", len(kick))
	}
	if d := e.conn.Wire().Calls() - wire0; d != 0 || o.Calls() != calls0 {
		t.Errorf("while idle: %d calls on the wire, %d by the observer; want 0", d, o.Calls()-calls0)
	}

	begin := time.Now()
	e.systemctl(t, "stop", "w.service")
	select {
	case at := <-kick:
		t.Logf("wake %v after `systemctl stop` began (nsenter+systemctl included)", at.Sub(begin).Round(100*time.Microsecond))
	case <-time.After(5 * time.Second):
		t.Fatal("no wake within 5s of systemctl stop")
	}
	// Drain: deactivating → inactive and MainPID 0 may add a few wakes.
	time.Sleep(200 * time.Millisecond)
	extra := len(kick)
	t.Logf("%d further wakes for the same stop (each a real change of ActiveState/SubState/MainPID)", extra)
	if extra > 4 {
		t.Errorf("%d wakes for one stop: deduplication broken?", extra+1)
	}
}

func TestSandboxCallCountsAndTiming(t *testing.T) {
	e := newSandbox(t)
	const max = 100
	var names []string
	for i := 0; i < max; i++ {
		n := fmt.Sprintf("load%03d.service", i)
		names = append(names, n)
		e.write(t, "/etc/systemd/system/"+n, ownmarktest.Unit(t, "Service/"+strings.TrimSuffix(n, ".service"), "/bin/sleep", "infinity"))
	}
	// Files older than the load by more than loadMargin: systemd's
	// NeedDaemonReload is known without asking (loadedAsOnDisk).
	time.Sleep(loadMargin + 10*time.Millisecond)
	e.systemctl(t, "daemon-reload")
	e.systemctl(t, append([]string{"start"}, names...)...)

	sizes := []int{1, 10, 100}
	if testing.Short() {
		sizes = []int{10}
	}
	for _, n := range sizes {
		for _, conc := range []int{1, DefaultConcurrency} {
			// A separate unit dir view is not possible (all 100 files are
			// owned), so the desired names are the n units and the owned
			// scan adds the rest: use a unitDir with no files to isolate n.
			o := New(e.conn, t.TempDir(), WithRoot(e.sb.Root()), WithoutManager(), WithConcurrency(conc))
			wire0 := e.conn.Wire().Calls()
			const rounds = 10
			durs := make([]time.Duration, 0, rounds)
			for r := 0; r < rounds; r++ {
				begin := time.Now()
				st, err := o.Observe(context.Background(), names[:n])
				durs = append(durs, time.Since(begin))
				if err != nil {
					t.Fatal(err)
				}
				if len(st.Units) != n || st.Units[names[0]].ActiveState != "active" {
					t.Fatalf("observed %d units", len(st.Units))
				}
			}
			perObserve := o.Calls() / rounds
			wire := (e.conn.Wire().Calls() - wire0) / rounds
			// ListUnitsByNames, ListUnitFilesByPatterns, one property
			// read per unit (a Get per property of a running service on the wire; UnitPath,
			// read once per Observer, rounds down).
			if want, wantWire := uint64(2+n), uint64(2+n*len(serviceRunningProps)); perObserve != want || wire != wantWire {
				t.Errorf("n=%d: %d calls per Observe (wire %d), want %d (wire %d)", n, perObserve, wire, want, wantWire)
			}
			slices.Sort(durs)
			t.Logf("Observe of %3d units, concurrency %d: %d D-Bus calls, median %v (min %v, max %v)",
				n, conc, perObserve, durs[rounds/2].Round(10*time.Microsecond), durs[0].Round(10*time.Microsecond), durs[rounds-1].Round(10*time.Microsecond))
		}
	}

	// The full thing: owned scan of the real unit dir plus the manager.
	o := e.observer()
	wire0 := e.conn.Wire().Calls()
	begin := time.Now()
	st, err := o.Observe(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// ListUnitsByNames, UnitPath (a new observer), UnitsLoadTimestamp,
	// the properties but NeedDaemonReload and DropInPaths of each unit
	// (settled), three manager reads.
	if got, want := e.conn.Wire().Calls()-wire0, uint64(1+1+1+max*(len(serviceRunningProps)-2)+3); got != want || len(st.Units) != max {
		t.Errorf("owned scan: %d units, %d calls; want %d, %d", len(st.Units), got, max, want)
	}
	t.Logf("Observe by owned scan of %d units + manager: %d calls, %v", len(st.Units), e.conn.Wire().Calls()-wire0, time.Since(begin).Round(10*time.Microsecond))
}

// One ListUnitsByNames and one ListUnitFilesByPatterns cover a pass of
// 1000 names (no chunk of 256 any more); units systemd does not know cost
// no GetAll.
func TestSandboxObserveThousandNamesBulk(t *testing.T) {
	e := newSandbox(t)
	names := []string{"real.service"}
	e.write(t, "/etc/systemd/system/real.service", ownmarktest.Unit(t, "Service/real", "/bin/sleep", "infinity"))
	time.Sleep(loadMargin + 10*time.Millisecond) // loadedAsOnDisk
	e.systemctl(t, "daemon-reload")
	e.systemctl(t, "start", "real.service")
	for i := range 999 {
		names = append(names, fmt.Sprintf("absent%03d.service", i))
	}
	o := New(e.conn, e.unitDir, WithRoot(e.sb.Root()), WithoutManager())
	if _, err := o.Observe(context.Background(), names); err != nil { // reads UnitPath once
		t.Fatal(err)
	}
	calls0, wire0 := o.Calls(), e.conn.Wire().Calls()
	st, err := o.Observe(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Units) != 1000 || st.Units["real.service"].MainPID == 0 || st.Units["absent000.service"].LoadState != "not-found" {
		t.Fatalf("observed %d units, real=%+v", len(st.Units), st.Units["real.service"])
	}
	// ListUnitsByNames, UnitsLoadTimestamp, the properties of
	// real.service but NeedDaemonReload and DropInPaths (one Get each on
	// the wire); its enablement (disabled: WantedBy=, no link) is read
	// from the disk.
	if got, wire := o.Calls()-calls0, e.conn.Wire().Calls()-wire0; got != 3 || wire != uint64(1+1+len(serviceRunningProps)-2) {
		t.Errorf("Observe of 1000 names: %d calls (wire %d), want 3 (wire %d)", got, wire, 1+1+len(serviceRunningProps)-2)
	}
}

// The agent's own restarts (single and batched, through the real applier)
// do not wake Subscribe; a crash of the unit afterwards does.
func TestSandboxOwnJobsDoNotWake(t *testing.T) {
	e := newSandbox(t)
	names := []string{"x.service", "y.service"}
	for _, n := range names {
		e.write(t, "/etc/systemd/system/"+n, ownmarktest.Unit(t, "Service/"+strings.TrimSuffix(n, ".service"), "/bin/sleep", "infinity"))
	}
	// Files older than the load by more than loadMargin: systemd's
	// NeedDaemonReload is known without asking (loadedAsOnDisk).
	time.Sleep(loadMargin + 10*time.Millisecond)
	e.systemctl(t, "daemon-reload")
	e.systemctl(t, append([]string{"start"}, names...)...)
	o := e.observer()
	if _, err := o.Observe(context.Background(), names); err != nil {
		t.Fatal(err)
	}
	a := sdapply.New(e.conn, e.unitDir, filepath.Join(e.sb.Root(), "etc/systemd/system.conf.d"), nil, sdapply.WithOwnJobs(o))

	var wakes atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Subscribe(ctx, func() { wakes.Add(1) }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(200 * time.Millisecond) // the watch is registered

	if _, err := a.Apply(context.Background(), actuators.Step{Op: actuators.OpRestart, Unit: "x.service", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // every signal of the restart has arrived
	if n := wakes.Load(); n != 0 {
		t.Errorf("own restart woke %d times", n)
	}
	_, errs := a.ApplyBatch(context.Background(), []actuators.Step{
		{Op: actuators.OpRestart, Unit: "x.service", Reason: "test"}, {Op: actuators.OpRestart, Unit: "y.service", Reason: "test"}})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if n := wakes.Load(); n != 0 {
		t.Errorf("own batched restarts woke %d times", n)
	}

	e.systemctl(t, "kill", "--signal=KILL", "x.service")
	deadline := time.Now().Add(10 * time.Second)
	for wakes.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a crash after the own restart did not wake")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The watch-fed cache against systemd: with Subscribe running, a second
// Observe reads no properties; a restart out of band marks its unit (its
// new MainPID is read), a daemon-reload empties the cache, and the full
// read finds no drift.
func TestSandboxCache(t *testing.T) {
	e := newSandbox(t)
	names := []string{"c1.service", "c2.service", "c3.service"}
	for _, n := range names {
		e.write(t, "/etc/systemd/system/"+n, ownmarktest.Unit(t, "Service/"+strings.TrimSuffix(n, ".service"), "/bin/sleep", "infinity"))
	}
	// Files older than the load by more than loadMargin: systemd's
	// NeedDaemonReload is known without asking (loadedAsOnDisk).
	time.Sleep(loadMargin + 10*time.Millisecond)
	e.systemctl(t, "daemon-reload")
	e.systemctl(t, append([]string{"start"}, names...)...)
	o := e.observer(WithoutManager())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Subscribe(ctx, func() {}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(200 * time.Millisecond) // the watch is registered

	getAlls := func(full bool) (int, *observed.State) {
		t.Helper()
		var n atomic.Int32
		o.cfg.hook = func(m string) {
			if m == "GetProperties" {
				n.Add(1)
			}
		}
		obs := o.Observe
		if full {
			obs = o.ObserveFull
		}
		st, err := obs(context.Background(), names)
		if err != nil {
			t.Fatal(err)
		}
		return int(n.Load()), st
	}
	if n, _ := getAlls(false); n != 3 {
		t.Errorf("first Observe: %d GetAll, want 3", n)
	}
	if n, _ := getAlls(false); n != 0 {
		t.Errorf("second Observe: %d GetAll, want 0", n)
	}
	e.systemctl(t, "restart", "c2.service")
	time.Sleep(300 * time.Millisecond) // the signals arrive
	n, st := getAlls(false)
	if n != 1 {
		t.Errorf("after a restart out of band: %d GetAll, want 1", n)
	}
	m, err := e.sb.Show(context.Background(), "c2.service", "MainPID")
	if err != nil {
		t.Fatal(err)
	}
	if pid := m["MainPID"]; fmt.Sprint(st.Units["c2.service"].MainPID) != pid {
		t.Errorf("c2 MainPID %d, systemd says %s", st.Units["c2.service"].MainPID, pid)
	}
	// A daemon-reload keeps the cache: the runtime state survives it,
	// and the files, older than the load, tell NeedDaemonReload.
	e.systemctl(t, "daemon-reload")
	time.Sleep(300 * time.Millisecond)
	if n, _ := getAlls(false); n != 0 {
		t.Errorf("after a daemon-reload out of band: %d GetAll, want 0", n)
	}
	if n, st := getAlls(true); n != 3 || st.CacheDrift != nil {
		t.Errorf("full read: %d GetAll, drift %v; want 3, none", n, st.CacheDrift)
	}
	// c1's file rewritten, reloaded and c1 restarted: c1 alone is read,
	// and the others' entries from before the reload still match a full
	// read.
	e.write(t, "/etc/systemd/system/c1.service", ownmarktest.Unit(t, "Service/c1", "/bin/sleep", "1000"))
	e.systemctl(t, "daemon-reload")
	e.systemctl(t, "restart", "c1.service")
	time.Sleep(300 * time.Millisecond)
	n, st = getAlls(false)
	if n != 1 {
		t.Errorf("after c1's rewrite, reload and restart: %d GetAll, want 1", n)
	}
	if u := st.Units["c1.service"]; u.NeedDaemonReload || u.MainPID == 0 {
		t.Errorf("c1 after its reload and restart: NeedDaemonReload %v, MainPID %d", u.NeedDaemonReload, u.MainPID)
	}
	if n, st := getAlls(true); n != 3 || st.CacheDrift != nil {
		t.Errorf("full read after c1's rewrite: %d GetAll, drift %v; want 3, none", n, st.CacheDrift)
	}
}

// The pipelined Gets of the properties Observe uses read the same State as
// one GetAll of every interface per unit, over units in every state the
// planner tells apart: running (with a drop-in), failed, exited, stopped,
// a unit file rewritten without a reload (NeedDaemonReload), a timer that
// ran, a masked and an unknown unit.
func TestSandboxFidelityPipelinedReads(t *testing.T) {
	e := newSandbox(t)
	ctx := context.Background()
	unit := func(name, cmd string, extra ...string) {
		data := ownmarktest.Unit(t, "Service/"+strings.TrimSuffix(name, ".service"), "/bin/sh", "-c", cmd)
		for _, x := range extra {
			data = append(data, x...)
		}
		data = append(data, "\n[Install]\nWantedBy=multi-user.target\n"...)
		e.write(t, "/etc/systemd/system/"+name, data)
	}
	unit("run.service", "exec sleep infinity")
	e.write(t, "/etc/systemd/system/run.service.d/nice.conf", []byte("[Service]\nNice=3\n"))
	unit("fail.service", "exit 3", "\n[Service]\nType=oneshot\n")
	unit("done.service", "true", "\n[Service]\nType=oneshot\nRemainAfterExit=yes\n")
	unit("stopped.service", "exec sleep infinity")
	unit("stale.service", "exec sleep infinity")
	unit("job.service", "true", "\n[Service]\nType=oneshot\n")
	e.write(t, "/etc/systemd/system/job.timer", []byte("[Timer]\nOnActiveSec=1h\nAccuracySec=1ms\n"))
	e.write(t, "/etc/systemd/system/masked.service", nil)
	e.systemctl(t, "daemon-reload")
	e.systemctl(t, "mask", "--runtime", "masked.service")
	e.systemctl(t, "start", "run.service", "done.service", "stale.service", "job.timer")
	e.systemctl(t, "start", "job.service")
	_, _ = e.sb.Systemctl(ctx, "start", "fail.service") // fails: that is the point
	// Enablement: through systemd, and behind its back (the property lags).
	e.systemctl(t, "enable", "run.service", "done.service", "fail.service")
	wants := "/etc/systemd/system/multi-user.target.wants/"
	if err := os.Remove(filepath.Join(e.sb.Root(), wants, "done.service")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/systemd/system/stopped.service", filepath.Join(e.sb.Root(), wants, "stopped.service")); err != nil {
		t.Fatal(err)
	}
	// A link of another name (systemd's call, asked).
	if err := os.Symlink("/etc/systemd/system/job.service", filepath.Join(e.sb.Root(), wants, "other-name.service")); err != nil {
		t.Fatal(err)
	}
	unit("stale.service", "exec sleep 1000") // not reloaded (`systemctl enable` reloads)
	names := []string{"run.service", "fail.service", "done.service", "stopped.service", "stale.service",
		"job.service", "job.timer", "masked.service", "absent.service"}

	piped, err := e.observer(WithoutManager()).Observe(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	all, err := e.observer(WithoutManager(), WithGetAll()).Observe(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	if !all.Units["stale.service"].NeedDaemonReload || all.Units["fail.service"].ActiveState != "failed" ||
		all.Units["run.service"].MainPID == 0 || len(all.Units["run.service"].DropInPaths) != 1 ||
		len(all.Units["job.timer"].Triggers) != 1 || all.Units["job.service"].ExecMainExitTimestamp == 0 {
		t.Fatalf("the fixture is not what it should be: %+v", all.Units)
	}
	for _, n := range names {
		if d := diffProps(all.Units[n], piped.Units[n]); d != "" {
			t.Errorf("%s: pipelined reads differ from GetAll: %s", n, d)
		}
	}
	listed, err := e.conn.ListUnitFilesByPatternsContext(ctx, nil, names)
	if err != nil {
		t.Fatal(err)
	}
	disk := map[string]string{}
	for _, f := range listed {
		disk[filepath.Base(f.Path)] = f.Type
	}
	if disk["done.service"] != "disabled" || disk["stopped.service"] != "enabled" || disk["run.service"] != "enabled" {
		t.Fatalf("the enablement fixture is not what it should be: %v", disk)
	}
	for _, n := range names {
		for mode, st := range map[string]*observed.State{"pipelined": piped, "GetAll": all} {
			if got := st.Units[n].UnitFileState; got != disk[n] {
				t.Errorf("%s (%s): UnitFileState %q, ListUnitFilesByPatterns says %q", n, mode, got, disk[n])
			}
		}
	}
	if len(piped.Units) != len(all.Units) {
		t.Errorf("%d units pipelined, %d by GetAll", len(piped.Units), len(all.Units))
	}
}

// NeedDaemonReload derived from the disk (loadedAsOnDisk) agrees with
// systemd's own flag (read with GetAll) through every change that raises
// or clears it: a unit file and drop-ins written, edited, added and
// removed without a reload, a reload, a backdated mtime, and a drop-in
// directory for the whole service type (then systemd is always asked).
// The derivation is used (no NeedDaemonReload on the wire) exactly when
// the unit's files are older than the last load.
func TestSandboxNeedDaemonReloadFromDisk(t *testing.T) {
	e := newSandbox(t)
	ctx := context.Background()
	root := e.sb.Root()
	names := []string{"a.service", "b.service"}
	unit := func(name, cmd string) {
		e.write(t, "/etc/systemd/system/"+name, ownmarktest.Unit(t, "Service/"+strings.TrimSuffix(name, ".service"), "/bin/sh", "-c", cmd))
	}
	reload := func() {
		time.Sleep(loadMargin + 10*time.Millisecond) // files older than the load
		e.systemctl(t, "daemon-reload")
	}
	unit("a.service", "exec sleep infinity")
	unit("b.service", "exec sleep infinity")
	e.write(t, "/etc/systemd/system/b.service.d/nice.conf", []byte("[Service]\nNice=3\n"))
	reload()
	e.systemctl(t, "start", "a.service", "b.service")

	fast := e.observer(WithoutManager())
	ref := e.observer(WithoutManager(), WithGetAll())
	if _, err := fast.Observe(ctx, names); err != nil { // UnitPath, read once
		t.Fatal(err)
	}
	typeDir := false
	// asked is the number of units whose NeedDaemonReload is read.
	// dirAsked is the number of settled units whose DropInPaths are read
	// all the same because /etc/systemd/system changed since the load
	// (a file renamed into it, a directory made).
	check := func(step string, want map[string]bool, asked, dirAsked int) {
		t.Helper()
		wire0 := e.conn.Wire().Calls()
		got, err := fast.Observe(ctx, names)
		if err != nil {
			t.Fatal(err)
		}
		wire := e.conn.Wire().Calls() - wire0
		sys, err := ref.Observe(ctx, names)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if got.Units[n].NeedDaemonReload != sys.Units[n].NeedDaemonReload || got.Units[n].NeedDaemonReload != want[n] {
				t.Errorf("%s: %s NeedDaemonReload %v, systemd (GetAll) %v, want %v", step, n,
					got.Units[n].NeedDaemonReload, sys.Units[n].NeedDaemonReload, want[n])
			}
			if d := diffProps(sys.Units[n], got.Units[n]); d != "" {
				t.Errorf("%s: %s differs from GetAll: %s", step, n, d)
			}
		}
		// ListUnitsByNames, the manager's load time, three Gets per
		// running service, NeedDaemonReload and DropInPaths where they are
		// not derived, and ListUnitFilesByPatterns when a unit has
		// drop-ins (enablement.go).
		calls := uint64(1 + 2*(len(serviceRunningProps)-2) + 2*asked + dirAsked)
		if !typeDir {
			calls++ // UnitsLoadTimestamp, read when some unit could be derived
		}
		if m, _ := filepath.Glob(filepath.Join(root, "etc/systemd/system/[ab].service.d/*.conf")); len(m) > 0 {
			calls++
		}
		if wire != calls {
			t.Errorf("%s: %d calls on the wire, want %d (NeedDaemonReload read for %d units)", step, wire, calls, asked)
		}
	}
	none := map[string]bool{}
	check("after a reload", none, 0, 0)

	unit("a.service", "exec sleep 1000")
	check("unit file rewritten", map[string]bool{"a.service": true}, 1, 1)
	reload()
	check("reloaded", none, 0, 0)

	e.write(t, "/etc/systemd/system/a.service.d/new.conf", []byte("[Service]\nNice=4\n"))
	check("drop-in in a new directory", map[string]bool{"a.service": true}, 1, 1)
	reload()
	check("reloaded with the new drop-in", none, 0, 0)

	e.write(t, "/etc/systemd/system/b.service.d/nice.conf", []byte("[Service]\nNice=5\n"))
	check("drop-in edited", map[string]bool{"b.service": true}, 1, 0)
	reload()
	check("reloaded after the edit", none, 0, 0)

	if err := os.Remove(filepath.Join(root, "etc/systemd/system/b.service.d/nice.conf")); err != nil {
		t.Fatal(err)
	}
	check("drop-in removed", map[string]bool{"b.service": true}, 1, 0)
	reload()
	check("reloaded after the removal", none, 0, 0)

	// New bytes with the old mtime: systemd compares mtimes and does not
	// see it; the ctime tells resil to ask, and both say what systemd says.
	a := filepath.Join(root, "etc/systemd/system/a.service")
	fi, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	unit("a.service", "exec sleep 2000")
	if err := os.Chtimes(a, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	check("rewritten with a backdated mtime", none, 1, 1)
	reload()
	check("reloaded after the backdated rewrite", none, 0, 0)

	// A drop-in directory for every service: resil does not derive.
	e.write(t, "/etc/systemd/system/service.d/all.conf", []byte("[Service]\nNice=1\n"))
	typeDir = true
	reload()
	check("service.d present", none, 2, 0)
}

// DropInPaths of settled units come from the disk only where the disk
// tells them (dropInsFromDisk): they agree with systemd's own list (read
// with GetAll) for a unit with drop-ins in two directories of the search
// path, and systemd is asked for a unit with an alias that has drop-ins of
// its own, one whose drop-in is masked by a link to /dev/null, one with a
// drop-in of the same name in two directories, a hidden drop-in, a drop-in
// directory that is a symlink, a drop-in under /lib (merged /usr), and an
// instance of a template with template drop-ins; then, once a drop-in
// directory was removed behind systemd's back, for every unit.
func TestSandboxDropInPathsFromDisk(t *testing.T) {
	e := newSandbox(t)
	ctx := context.Background()
	root := e.sb.Root()
	unit := func(name string) {
		e.write(t, "/etc/systemd/system/"+name, ownmarktest.Unit(t, "Service/"+strings.TrimSuffix(name, ".service"), "/bin/sleep", "infinity"))
	}
	symlink := func(target, link string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, link)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	conf := []byte("[Service]\nNice=3\n")
	// Derived: two directories, sorted by file name across them.
	unit("plain.service")
	e.write(t, "/etc/systemd/system/plain.service.d/b.conf", conf)
	e.write(t, "/run/systemd/system/plain.service.d/a.conf", conf)
	e.write(t, "/run/systemd/system/plain.service.d/c.conf", conf)
	// Asked: an alias with its own drop-in.
	unit("aliased.service")
	symlink("/etc/systemd/system/aliased.service", "/etc/systemd/system/other-name.service")
	e.write(t, "/etc/systemd/system/other-name.service.d/x.conf", conf)
	// Asked: a drop-in masked by a higher directory's link to /dev/null.
	unit("masked.service")
	e.write(t, "/run/systemd/system/masked.service.d/x.conf", conf)
	symlink("/dev/null", "/etc/systemd/system/masked.service.d/x.conf")
	// Asked: one name in two directories.
	unit("twice.service")
	e.write(t, "/etc/systemd/system/twice.service.d/x.conf", conf)
	e.write(t, "/run/systemd/system/twice.service.d/x.conf", []byte("[Service]\nNice=4\n"))
	// Asked: a hidden drop-in (systemd skips it).
	unit("hidden.service")
	e.write(t, "/etc/systemd/system/hidden.service.d/.x.conf", conf)
	// Asked: a drop-in directory that is a symlink.
	unit("linked.service")
	e.write(t, "/etc/linked-drop-ins/x.conf", conf)
	symlink("/etc/linked-drop-ins", "/etc/systemd/system/linked.service.d")
	// Asked: an instance of a template with a template drop-in.
	e.write(t, "/etc/systemd/system/inst@.service", ownmarktest.Unit(t, "Service/inst", "/bin/sleep", "infinity"))
	e.write(t, "/etc/systemd/system/inst@.service.d/x.conf", conf)
	names := []string{"plain.service", "aliased.service", "masked.service", "twice.service", "hidden.service",
		"linked.service", "inst@one.service"}
	// Asked: a drop-in in /lib, which the search path names twice with
	// /usr/lib on a merged-/usr host (systemd then lists /usr/lib/... and
	// raises NeedDaemonReload for good: compared apart below).
	if fi, err := os.Lstat(filepath.Join(root, "lib")); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		unit("vendor.service")
		e.write(t, "/lib/systemd/system/vendor.service.d/x.conf", conf)
		names = append(names, "vendor.service")
	}

	time.Sleep(loadMargin + 10*time.Millisecond) // files older than the load
	e.systemctl(t, "daemon-reload")
	e.systemctl(t, append([]string{"start"}, names...)...)

	ref := e.observer(WithoutManager(), WithGetAll())
	// compare observes names (and every owned unit) with a new observer
	// and with GetAll, compares, and returns the units whose DropInPaths
	// the observer asked systemd for.
	compare := func(step string, names []string) []string {
		t.Helper()
		spy := &dropInSpy{Conn: e.conn}
		fast := New(spy, e.unitDir, WithRoot(root), WithoutManager())
		got, err := fast.Observe(ctx, names)
		if err != nil {
			t.Fatal(err)
		}
		sys, err := ref.Observe(ctx, names)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if n == "vendor.service" {
				if !slices.Equal(sys.Units[n].DropInPaths, got.Units[n].DropInPaths) {
					t.Errorf("%s: %s: DropInPaths %v, GetAll %v", step, n, got.Units[n].DropInPaths, sys.Units[n].DropInPaths)
				}
			} else if d := diffProps(sys.Units[n], got.Units[n]); d != "" {
				t.Errorf("%s: %s differs from GetAll: %s", step, n, d)
			}
			if got.Units[n].Result != "success" || got.Units[n].SubState != "running" {
				t.Errorf("%s: %s: %s, result %q", step, n, got.Units[n].SubState, got.Units[n].Result)
			}
		}
		slices.Sort(spy.asked)
		return spy.asked
	}
	sys, err := ref.Observe(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	if d := sys.Units["plain.service"].DropInPaths; len(d) != 3 || len(sys.Units["aliased.service"].DropInPaths) != 1 ||
		len(sys.Units["inst@one.service"].DropInPaths) != 1 || len(sys.Units["linked.service"].DropInPaths) != 1 {
		t.Fatalf("the fixture is not what it should be: plain %v, aliased %v, instance %v, linked %v", d,
			sys.Units["aliased.service"].DropInPaths, sys.Units["inst@one.service"].DropInPaths, sys.Units["linked.service"].DropInPaths)
	}
	wantAsked := slices.Sorted(slices.Values(names[1:]))
	if asked := compare("all", names); !slices.Equal(asked, wantAsked) {
		t.Errorf("DropInPaths asked of %v, want %v (all but plain.service)", asked, wantAsked)
	}
	// A drop-in directory removed without a reload: the disk no longer
	// shows what systemd loaded (nor that a reload is due); it is asked.
	if err := os.RemoveAll(filepath.Join(root, "etc/systemd/system/plain.service.d")); err != nil {
		t.Fatal(err)
	}
	if asked := compare("plain.service.d removed", names); !slices.Contains(asked, "plain.service") {
		t.Errorf("plain.service.d removed: DropInPaths asked of %v, want plain.service among them", asked)
	}
	if sys, err := ref.Observe(ctx, []string{"plain.service"}); err != nil || !sys.Units["plain.service"].NeedDaemonReload {
		t.Fatalf("the fixture is not what it should be: systemd has no reload pending after the removal (%v)", err)
	}
}

// dropInSpy is the observer's connection, recording the units whose
// DropInPaths it reads.
type dropInSpy struct {
	*sdbus.Conn
	asked []string
}

func (s *dropInSpy) GetUnitPropertiesContext(ctx context.Context, qs []sdbus.PropertyQuery) ([]map[string]any, []error, error) {
	for _, q := range qs {
		for _, p := range q.Props {
			if p.Name == "DropInPaths" {
				s.asked = append(s.asked, q.Unit)
			}
		}
	}
	return s.Conn.GetUnitPropertiesContext(ctx, qs)
}

// A running service's Result is success, which Observe says without
// asking (resultWhileRunning): systemd's own answer agrees after the
// service failed and Restart= started it again, the case where a result
// other than success would last if systemd kept it.
func TestSandboxResultWhileRunning(t *testing.T) {
	e := newSandbox(t)
	ctx := context.Background()
	data := ownmarktest.Unit(t, "Service/flaky", "/bin/sh", "-c", "test -e /run/flaky-ran && exec sleep infinity; touch /run/flaky-ran; exit 3")
	data = append(data, "\n[Service]\nRestart=always\nRestartSec=100ms\n"...)
	e.write(t, "/etc/systemd/system/flaky.service", data)
	e.systemctl(t, "daemon-reload")
	// --no-block: the first run exits 3 at once, which can fail the start
	// job itself when the exit is seen before the job completes (CI).
	e.systemctl(t, "start", "--no-block", "flaky.service")
	ref := e.observer(WithoutManager(), WithGetAll())
	var sys *observed.State
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if sys, err = ref.Observe(ctx, []string{"flaky.service"}); err != nil {
			t.Fatal(err)
		}
		if u := sys.Units["flaky.service"]; u.SubState == "running" && u.NRestarts > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flaky.service not running again after a failure: %+v", sys.Units["flaky.service"])
		}
	}
	if r := sys.Units["flaky.service"].Result; r != resultWhileRunning {
		t.Errorf("systemd says Result %q of a service running again after a failure, want %q", r, resultWhileRunning)
	}
	got, err := e.observer(WithoutManager()).Observe(ctx, []string{"flaky.service"})
	if err != nil {
		t.Fatal(err)
	}
	if d := diffProps(sys.Units["flaky.service"], got.Units["flaky.service"]); d != "" {
		t.Errorf("pipelined reads differ from GetAll: %s", d)
	}
}
