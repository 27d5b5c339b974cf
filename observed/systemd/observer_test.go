package systemd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"resil.dev/resil/internal/sdbus"
	"resil.dev/resil/internal/sdbus/sdbustest"
	"resil.dev/resil/observed"
)

var (
	_ Client  = (*sdbustest.Fake)(nil)
	_ Watcher = (*sdbustest.Fake)(nil)
)

// owned is a marked file without the X-Resil-Hash desired.Render stamps:
// Observe never reads such a file's process as stale, which TestObserve's
// worker (started in 2023, file written now) relies on. Elsewhere use the
// rendered bytes of ownmarktest.Unit.
func owned(object string) []byte {
	return []byte("# Managed by resil from " + object + ".\n[Unit]\nDescription=x\nX-Resil-Object=" + object + "\n\n[Service]\nExecStart=/bin/true\n")
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fixture: a unit dir with an owned desired unit, an owned prune candidate,
// a foreign unit, a mask symlink, a hidden temp file and a foreign drop-in.
func fixture(t *testing.T) (dir string, f *sdbustest.Fake) {
	t.Helper()
	dir = t.TempDir()
	writeFile(t, filepath.Join(dir, "worker.service"), owned("Service/worker"))
	writeFile(t, filepath.Join(dir, "old.timer"), owned("Timer/old"))
	writeFile(t, filepath.Join(dir, "foreign.service"), []byte("[Service]\nExecStart=/bin/true\n"))
	writeFile(t, filepath.Join(dir, ".worker.service12345"), owned("Service/worker"))
	writeFile(t, filepath.Join(dir, "README"), owned("Service/readme"))
	writeFile(t, filepath.Join(dir, "worker.service.d", "override.conf"), []byte("[Service]\nNice=5\n"))
	if err := os.Symlink("/dev/null", filepath.Join(dir, "masked.service")); err != nil {
		t.Fatal(err)
	}

	f = sdbustest.New()
	f.AddUnit(sdbustest.Unit{
		Name: "worker.service", ActiveState: "active", SubState: "running", UnitFileState: "enabled",
		FragmentPath: filepath.Join(dir, "worker.service"),
		DropInPaths:  []string{filepath.Join(dir, "worker.service.d", "override.conf"), "/nonexistent/gone.conf"},
		NRestarts:    2, MainPID: 4242, ExecMainStartTimestamp: 1_700_000_000_000_000,
	})
	f.AddUnit(sdbustest.Unit{Name: "old.timer", ActiveState: "active", SubState: "waiting", LastTriggerUSec: 5, NextElapseUSecRealtime: math.MaxUint64, NextElapseUSecMonotonic: 7})
	f.AddUnit(sdbustest.Unit{Name: "masked.service", LoadState: "masked"})
	return dir, f
}

func TestObserve(t *testing.T) {
	dir, f := fixture(t)
	var hooked []string
	var hookMu sync.Mutex
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	o := New(f, dir,
		WithSysfs("testdata/sys"),
		WithManagerConf(filepath.Join(dir, "conf.d", "50-resil-watchdog.conf")),
		WithClock(func() time.Time { return now }),
		WithCallHook(func(m string) { hookMu.Lock(); hooked = append(hooked, m); hookMu.Unlock() }))

	st, err := o.Observe(context.Background(), []string{"worker.service", "new.service", "masked.service"})
	if err != nil {
		t.Fatal(err)
	}

	var names []string
	for n := range st.Units {
		names = append(names, n)
	}
	wantNames := []string{"masked.service", "new.service", "old.timer", "worker.service"}
	if !sameSet(names, wantNames) {
		t.Fatalf("units = %v, want %v (desired plus owned files; foreign, hidden and non-unit files left out)", names, wantNames)
	}
	if st.Backend != "systemd" || st.UnitDir != dir || !st.ReadAt.Equal(now) {
		t.Errorf("state header = %q %q %v", st.Backend, st.UnitDir, st.ReadAt)
	}

	w := st.Units["worker.service"]
	want := &observed.Unit{
		Name: "worker.service", Path: filepath.Join(dir, "worker.service"), File: owned("Service/worker"), Owner: "Service/worker",
		LoadState: "loaded", ActiveState: "active", SubState: "running", Result: "success", UnitFileState: "enabled",
		DropInPaths: []string{filepath.Join(dir, "worker.service.d", "override.conf"), "/nonexistent/gone.conf"},
		DropIns:     map[string][]byte{filepath.Join(dir, "worker.service.d", "override.conf"): []byte("[Service]\nNice=5\n")},
		NRestarts:   2, MainPID: 4242, ExecMainStartTimestamp: 1_700_000_000_000_000,
	}
	if fi, err := os.Stat(want.Path); err != nil {
		t.Fatal(err)
	} else {
		want.FileModTime = uint64(fi.ModTime().UnixMicro())
	}
	if !reflect.DeepEqual(w, want) {
		t.Errorf("worker.service =\n%+v\nwant\n%+v", w, want)
	}

	old := st.Units["old.timer"]
	if old.Owner != "Timer/old" || old.LastTriggerUSec != 5 || old.NextElapseUSecRealtime != 0 || old.NextElapseUSecMonotonic != 7 {
		t.Errorf("old.timer = %+v (owner, timer fields; infinity reads as 0)", old)
	}
	if n := st.Units["new.service"]; n.LoadState != "not-found" || n.File != nil || n.Exists() {
		t.Errorf("new.service = %+v, want not-found without file", n)
	}
	if m := st.Units["masked.service"]; m.LoadState != "masked" || m.File != nil {
		t.Errorf("masked.service = %+v, want masked and no file (a symlink is not a unit file of ours)", m)
	}

	// One ListUnitsByNames, one ListUnitFilesByPatterns, one UnitPath read
	// (first Observe only), the last unit load (the fake says none: two
	// reads), one GetAll per unit systemd knows that is not masked (2),
	// three manager reads.
	if got, want := o.Calls(), uint64(1+1+1+2+2+3); got != want {
		t.Errorf("Calls() = %d, want %d; fake saw %v", got, want, f.Calls())
	}
	if len(hooked) != int(o.Calls()) {
		t.Errorf("hook saw %d calls, Calls() = %d", len(hooked), o.Calls())
	}
	if f.CallCount("GetProperties new.service") != 0 || f.CallCount("GetProperties masked.service") != 0 {
		t.Errorf("GetAll of a not-found or masked unit: %v", f.Calls())
	}

	m := st.Manager
	if m == nil {
		t.Fatal("no manager state")
	}
	wantProps := map[string]string{"RuntimeWatchdogUSec": "0", "RebootWatchdogUSec": "600000000", "WatchdogDevice": ""}
	if !reflect.DeepEqual(m.Properties, wantProps) {
		t.Errorf("manager properties = %v, want %v", m.Properties, wantProps)
	}
	if m.File != nil {
		t.Errorf("manager drop-in = %q, want nil (absent)", m.File)
	}
	wantDevs := []observed.WatchdogDevice{
		{Name: "watchdog0", Identity: "iTCO_wdt", Timeout: 30, State: "active"},
		{Name: "watchdog1", Identity: "softdog", State: "inactive"},
	}
	if !reflect.DeepEqual(m.Devices, wantDevs) {
		t.Errorf("devices = %+v, want %+v", m.Devices, wantDevs)
	}
}

func TestObserveManagerDropInAndNoDevices(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "system.conf.d", "50-resil-watchdog.conf")
	writeFile(t, conf, []byte("# X-Resil-Object=Watchdog/host\n[Manager]\nRuntimeWatchdogSec=30s\n"))
	f := sdbustest.New()
	f.SetManager("RuntimeWatchdogUSec", uint64(30_000_000))
	o := New(f, filepath.Join(dir, "missing-unit-dir"), WithSysfs(filepath.Join(dir, "nosys")), WithManagerConf(conf))
	st, err := o.Observe(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Units) != 0 {
		t.Errorf("units = %v, want none (missing unit dir is empty)", st.Units)
	}
	if st.Manager.Devices != nil {
		t.Errorf("devices = %v, want none: no watchdog is a fact, not an error", st.Manager.Devices)
	}
	if !strings.Contains(string(st.Manager.File), "RuntimeWatchdogSec=30s") || st.Manager.ConfPath != conf {
		t.Errorf("manager drop-in %s = %q", st.Manager.ConfPath, st.Manager.File)
	}
	if st.Manager.Properties["RuntimeWatchdogUSec"] != "30000000" {
		t.Errorf("RuntimeWatchdogUSec = %q", st.Manager.Properties["RuntimeWatchdogUSec"])
	}
	// Nothing to list: no ListUnitsByNames call at all.
	if f.CallCount("ListUnitsByNames") != 0 {
		t.Errorf("calls = %v", f.Calls())
	}
}

func TestObserveWithoutManager(t *testing.T) {
	f := sdbustest.New()
	o := New(f, t.TempDir(), WithoutManager())
	st, err := o.Observe(context.Background(), []string{"a.service"})
	if err != nil {
		t.Fatal(err)
	}
	// ListUnitsByNames, UnitPath (a.service has no unit file: no
	// enablement to list).
	if st.Manager != nil || o.Calls() != 2 {
		t.Errorf("manager = %v, calls = %d (%v); want nil and 2", st.Manager, o.Calls(), f.Calls())
	}
}

func TestObserveErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, method := range []string{"ListUnitsByNames", "ListUnitFilesByPatterns", "GetProperties", "GetManagerProperty"} {
		t.Run(method, func(t *testing.T) {
			dir, f := fixture(t)
			f.FailNext(method, boom)
			o := New(f, dir, WithSysfs("testdata/sys"))
			st, err := o.Observe(context.Background(), []string{"worker.service"})
			if st != nil || !errors.Is(err, boom) {
				t.Fatalf("Observe = %v, %v; want nil state and an error wrapping boom (never a partial view)", st, err)
			}
		})
	}
}

func TestObserveConcurrency(t *testing.T) {
	f := sdbustest.New()
	var names []string
	for i := 0; i < 100; i++ {
		n := fmt.Sprintf("u%03d.service", i)
		names = append(names, n)
		f.AddUnit(sdbustest.Unit{Name: n, ActiveState: "active", SubState: "running", MainPID: uint32(i + 1)})
	}
	o := New(f, t.TempDir(), WithoutManager(), WithConcurrency(8))
	st, err := o.Observe(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		if st.Units[n].MainPID != uint32(i+1) {
			t.Fatalf("%s MainPID = %d", n, st.Units[n].MainPID)
		}
	}
	if got := o.Calls(); got != 102 {
		t.Errorf("Calls() = %d, want 102", got)
	}
}

func TestFillUnitTypes(t *testing.T) {
	u := &observed.Unit{}
	err := fillUnit(u, map[string]any{"MainPID": "not a number", "NRestarts": uint32(3), "ExecMainStartTimestamp": uint64(math.MaxUint64)})
	if err == nil || !strings.Contains(err.Error(), "MainPID") {
		t.Errorf("err = %v, want one naming MainPID", err)
	}
	if u.NRestarts != 3 || u.ExecMainStartTimestamp != 0 {
		t.Errorf("unit = %+v", u)
	}
	// Values may also come wrapped in variants.
	u = &observed.Unit{}
	if err := fillUnit(u, map[string]any{"SubState": godbus.MakeVariant("running")}); err != nil || u.SubState != "running" {
		t.Errorf("variant: %v %+v", err, u)
	}
}

// aliasClient answers ListUnitsByNames as systemd does for an alias: with
// the unit's primary name.
type aliasClient struct{ *sdbustest.Fake }

func (a aliasClient) ListUnitsByNamesContext(ctx context.Context, names []string) ([]sddbus.UnitStatus, error) {
	st, err := a.Fake.ListUnitsByNamesContext(ctx, names)
	for i := range st {
		if st[i].Name == "alias.service" {
			st[i].Name, st[i].LoadState, st[i].ActiveState = "primary.service", "loaded", "active"
		}
	}
	return st, err
}

func (a aliasClient) GetAllPropertiesContext(ctx context.Context, unit string) (map[string]any, error) {
	if unit == "alias.service" {
		unit = "primary.service"
	}
	return a.Fake.GetAllPropertiesContext(ctx, unit)
}

func (a aliasClient) GetUnitPropertiesContext(ctx context.Context, qs []sdbus.PropertyQuery) ([]map[string]any, []error, error) {
	qs = slices.Clone(qs)
	for i := range qs {
		if qs[i].Unit == "alias.service" {
			qs[i].Unit = "primary.service"
		}
	}
	return a.Fake.GetUnitPropertiesContext(ctx, qs)
}

func TestObserveAliasMatchedByPosition(t *testing.T) {
	f := sdbustest.New()
	f.AddUnit(sdbustest.Unit{Name: "primary.service", ActiveState: "active", SubState: "running"})
	o := New(aliasClient{f}, t.TempDir(), WithoutManager())
	st, err := o.Observe(context.Background(), []string{"alias.service"})
	if err != nil {
		t.Fatal(err)
	}
	if u := st.Units["alias.service"]; u == nil || u.LoadState != "loaded" || u.ActiveState != "active" {
		t.Errorf("alias.service = %+v", u)
	}
}

func TestQueryable(t *testing.T) {
	for name, want := range map[string]bool{
		"worker.service": true, "a-b_c:d.timer": true, "getty@tty1.service": true, `x\x2dy.mount`: true,
		"getty@.service": false, "@x.service": false, "a b.service": false, "worker": false,
		"worker.conf": false, "": false, strings.Repeat("a", 250) + ".service": false, "a@b@c.service": false,
	} {
		if got := Queryable(name); got != want {
			t.Errorf("Queryable(%q) = %v, want %v", name, got, want)
		}
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		if m[x] == 0 {
			return false
		}
		m[x]--
	}
	return true
}

func TestLoadedAsOnDisk(t *testing.T) {
	load := time.Date(2026, 12, 1, 12, 0, 0, 500_000_000, time.UTC)
	now := load.Add(time.Minute)
	loaded := &observed.Unit{Name: "a.service", LoadState: "loaded"}
	file := func(ctime time.Time) unitFile { return unitFile{data: []byte("x"), ctime: ctime} }
	tests := []struct {
		name string
		u    *observed.Unit
		f    unitFile
		v    vendor
		load time.Time
		want bool
	}{
		{"file older than the load", loaded, file(load.Add(-time.Second + 123)), vendor{}, load, true},
		{"file within the margin", loaded, file(load.Add(-loadMargin / 2)), vendor{}, load, false},
		{"file after the load", loaded, file(load.Add(time.Millisecond)), vendor{}, load, false},
		{"whole-second time under two seconds before", loaded, file(load.Truncate(time.Second).Add(-time.Second)), vendor{}, load, false},
		{"whole-second time over two seconds before", loaded, file(load.Truncate(time.Second).Add(-2 * time.Second)), vendor{}, load, true},
		{"drop-ins changed after", loaded, file(load.Add(-time.Minute)), vendor{dropInsChanged: load.Add(time.Millisecond)}, load, false},
		{"drop-ins whole-second time", loaded, file(load.Add(-time.Minute)), vendor{dropInsChanged: load.Truncate(time.Second)}, load, false},
		{"drop-ins older", loaded, file(load.Add(-time.Minute)), vendor{dropInsChanged: load.Add(-time.Second + 7)}, load, true},
		{"overridden earlier in the search path", loaded, file(load.Add(-time.Minute)), vendor{overrides: true}, load, false},
		{"not loaded", &observed.Unit{LoadState: "not-found"}, file(load.Add(-time.Minute)), vendor{}, load, false},
		{"no file", loaded, unitFile{}, vendor{}, load, false},
		{"load stamped after now", loaded, file(load.Add(-time.Minute)), vendor{}, now.Add(time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := loadedAsOnDisk(tt.u, tt.f, tt.v, uint64(tt.load.UnixMicro()), now); got != tt.want {
				t.Errorf("loadedAsOnDisk = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestInstallRules(t *testing.T) {
	tests := []struct {
		name, file   string
		rules, plain bool
	}{
		{"wanted", "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n", true, true},
		{"no install section", "[Service]\nExecStart=/bin/true\n", false, true},
		{"empty install section", "[Service]\nExecStart=/bin/true\n[Install]\n", false, true},
		{"alias, CRLF, spaces, comments", "[Install]\r\n# c\r\n; c\r\n  Alias = x.service \r\n", true, true},
		{"no final newline", "[Install]\nRequiredBy=a.target", true, true},
		{"empty assignment resets", "[Install]\nWantedBy=a.target\nWantedBy=\n", false, false},
		{"also", "[Install]\nWantedBy=a.target\nAlso=b.service\n", false, false},
		{"default instance", "[Install]\nDefaultInstance=x\n", false, false},
		{"continued line", "[Install]\nWantedBy=a.target \\\n b.target\n", false, false},
		{"line without =", "[Install]\nWantedBy\n", false, false},
		{"rule in another section", "[Service]\nWantedBy=a.target\n[Install]\n", false, true},
		{"section after install", "[Install]\nUpheldBy=a.target\n[X-Other]\nAlso=y\n", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, plain := installRules([]byte(tt.file))
			if rules != tt.rules || plain != tt.plain {
				t.Errorf("installRules = %v, %v; want %v, %v", rules, plain, tt.rules, tt.plain)
			}
		})
	}
}

// scanUnitDir reads a file again only when its stamp changed, and keeps
// none changed within racyWindow of the scan.
func TestScanUnitDirKeepsUnchangedFiles(t *testing.T) {
	defer func(d time.Duration) { racyWindow = d }(racyWindow)
	dir := t.TempDir()
	o := New(nil, dir)
	path := filepath.Join(dir, "a.service")
	if err := os.WriteFile(path, []byte("[Service]\nExecStart=/bin/a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	scan := func() []byte {
		t.Helper()
		files, err := o.scanUnitDir()
		if err != nil {
			t.Fatal(err)
		}
		return files["a.service"].data
	}
	same := func(a, b []byte) bool { return len(a) > 0 && len(b) > 0 && &a[0] == &b[0] }

	// Just written: read on every scan.
	if a, b := scan(), scan(); same(a, b) {
		t.Error("a file changed within racyWindow was kept")
	}
	racyWindow = 0
	time.Sleep(10 * time.Millisecond)
	first := scan()
	if again := scan(); !same(first, again) {
		t.Error("an unchanged file was read again")
	}
	// Rewritten in place with the same size: a new change time.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(path, []byte("[Service]\nExecStart=/bin/b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := scan(); same(first, got) || !strings.Contains(string(got), "/bin/b") {
		t.Errorf("after an in-place rewrite: %q (kept: %v)", got, same(first, got))
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if got := scan(); got != nil {
		t.Errorf("after removal: %q", got)
	}
}

// dirLinks reads a dependency directory again only when its stamp changed.
func TestDirLinksKeepsUnchangedDirectories(t *testing.T) {
	defer func(d time.Duration) { racyWindow = d }(racyWindow)
	racyWindow = 0
	dir := filepath.Join(t.TempDir(), "multi-user.target.wants")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/systemd/system/a.service", filepath.Join(dir, "a.service")); err != nil {
		t.Fatal(err)
	}
	o := New(nil, t.TempDir())
	time.Sleep(10 * time.Millisecond)
	read := func() []dirLink {
		t.Helper()
		l, err := o.dirLinks(dir)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first := read()
	if again := read(); len(first) != 1 || &again[0] != &first[0] {
		t.Errorf("an unchanged directory was read again (or %v)", first)
	}
	time.Sleep(10 * time.Millisecond)
	if err := os.Remove(filepath.Join(dir, "a.service")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/systemd/system/b.service", filepath.Join(dir, "a.service")); err != nil {
		t.Fatal(err)
	}
	if got := read(); len(got) != 1 || got[0] != (dirLink{name: "a.service", dest: "b.service"}) {
		t.Errorf("after the link was replaced: %v", got)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != nil {
		t.Errorf("after removal: %v", got)
	}
}

// The margin is two ticks of the coarse clock the kernel stamps file
// changes with, and a millisecond; 50 ms when the tick is unknown.
func TestCoarseMargin(t *testing.T) {
	var ts unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_REALTIME_COARSE, &ts); err != nil {
		t.Fatal(err)
	}
	if m, want := coarseMargin(), 2*time.Duration(ts.Nano())+time.Millisecond; m != want || m > 50*time.Millisecond {
		t.Errorf("coarseMargin = %s, want %s (tick %s), at most 50 ms", m, want, time.Duration(ts.Nano()))
	}
}

// A unit systemd still has loaded from its file in the unit directory,
// which is gone (deleted without a daemon-reload: systemd raises
// NeedDaemonReload), reads FileDeleted; one loaded from elsewhere, or
// with no reload pending, does not, and only a loaded unit without a file
// and with a reload pending costs a read of its FragmentPath.
func TestObserveFileDeleted(t *testing.T) {
	dir := t.TempDir()
	f := sdbustest.New()
	f.AddUnit(sdbustest.Unit{Name: "gone.service", ActiveState: "active", SubState: "running", UnitFileState: "enabled",
		FragmentPath: filepath.Join(dir, "gone.service"), NeedDaemonReload: true, MainPID: 42, ExecMainStartTimestamp: 1_700_000_000_000_000})
	f.AddUnit(sdbustest.Unit{Name: "vendor.service", ActiveState: "active", SubState: "running",
		FragmentPath: "/nonexistent/lib/vendor.service", NeedDaemonReload: true, MainPID: 43})
	f.AddUnit(sdbustest.Unit{Name: "settled.service", ActiveState: "active", SubState: "running",
		FragmentPath: filepath.Join(dir, "settled.service"), MainPID: 44})
	o := New(f, dir)
	st, err := o.Observe(context.Background(), []string{"gone.service", "vendor.service", "settled.service"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"gone.service": true, "vendor.service": false, "settled.service": false} {
		if u := st.Units[name]; u.FileDeleted != want || u.FileModTime != 0 {
			t.Errorf("%s: FileDeleted %v, FileModTime %d; want %v, 0", name, u.FileDeleted, u.FileModTime, want)
		}
	}
	if n := f.PropertyCount("FragmentPath"); n != 2 {
		t.Errorf("FragmentPath read %d times, want 2 (the units without a file, with a reload pending)", n)
	}
}
