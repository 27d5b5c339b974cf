package systemd

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/internal/ownmark/ownmarktest"
	"resil.dev/resil/internal/sdbus/sdbustest"
	"resil.dev/resil/observed"
)

func TestStaleProcess(t *testing.T) {
	file := ownmarktest.Unit(t, "Service/w", "/bin/sleep", "infinity")
	edited := append(append([]byte(nil), file...), "# edited by hand\n"...)
	base := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }
	usec := func(sec int) uint64 { return uint64(at(sec).UnixMicro()) }
	ownedDropIn := []byte("# X-Resil-Object=Service/w\n[Service]\nNice=5\n")
	foreignDropIn := []byte("[Service]\nNice=5\n")
	for _, tc := range []struct {
		name      string
		u         observed.Unit
		fragment  time.Time
		dropIns   map[string]time.Time
		loadStart uint64
		want      bool
	}{
		{name: "file written after the process started", u: observed.Unit{File: file, ActiveState: "active", MainPID: 7, ExecMainStartTimestamp: usec(10)}, fragment: at(20), want: true},
		{name: "process started after the file", u: observed.Unit{File: file, ActiveState: "active", MainPID: 7, ExecMainStartTimestamp: usec(20)}, fragment: at(10)},
		{name: "same instant is not newer", u: observed.Unit{File: file, ActiveState: "active", MainPID: 7, ExecMainStartTimestamp: usec(10)}, fragment: at(10)},
		{name: "inactive", u: observed.Unit{File: file, ActiveState: "inactive", ExecMainStartTimestamp: usec(10)}, fragment: at(20)},
		{name: "no main process", u: observed.Unit{File: file, ActiveState: "active", ExecMainStartTimestamp: usec(10)}, fragment: at(20)},
		{name: "edited by hand is FileEdited, not stale", u: observed.Unit{File: edited, ActiveState: "active", MainPID: 7, ExecMainStartTimestamp: usec(10)}, fragment: at(20)},
		{name: "foreign file", u: observed.Unit{File: foreignDropIn, ActiveState: "active", MainPID: 7, ExecMainStartTimestamp: usec(10)}, fragment: at(20)},
		{name: "owned drop-in newer", u: observed.Unit{File: file, ActiveState: "active", MainPID: 7, ExecMainStartTimestamp: usec(10),
			DropIns: map[string][]byte{"/d/o.conf": ownedDropIn}}, fragment: at(5), dropIns: map[string]time.Time{"/d/o.conf": at(20)}},
		{name: "foreign drop-in newer never counts", u: observed.Unit{File: file, ActiveState: "active", MainPID: 7, ExecMainStartTimestamp: usec(10),
			DropIns: map[string][]byte{"/d/f.conf": foreignDropIn}}, fragment: at(5), dropIns: map[string]time.Time{"/d/f.conf": at(20)}},
		{name: "restarted by systemd between write and reload", u: observed.Unit{File: file, ActiveState: "active", MainPID: 7, ExecMainStartTimestamp: usec(20),
			NeedDaemonReload: true}, fragment: at(10), loadStart: usec(5), want: true},
		{name: "reload pending for another file", u: observed.Unit{File: file, ActiveState: "active", MainPID: 7, ExecMainStartTimestamp: usec(20),
			NeedDaemonReload: true}, fragment: at(10), loadStart: usec(15)},
		{name: "reload-only rewrite: its marker, not its mtime, counts", u: observed.Unit{File: ownmark.WithProcessSince(file, int64(usec(10))), ActiveState: "active", MainPID: 7,
			ExecMainStartTimestamp: usec(10)}, fragment: at(20)},
		{name: "marker newer than the process", u: observed.Unit{File: ownmark.WithProcessSince(file, int64(usec(15))), ActiveState: "active", MainPID: 7,
			ExecMainStartTimestamp: usec(10)}, fragment: at(20), want: true},
		{name: "marker, reload pending, restarted by systemd in between", u: observed.Unit{File: ownmark.WithProcessSince(file, int64(usec(10))), ActiveState: "active", MainPID: 7,
			ExecMainStartTimestamp: usec(20), NeedDaemonReload: true}, fragment: at(30), loadStart: usec(5), want: true},
		{name: "loaded after the write, no reload pending", u: observed.Unit{File: file, ActiveState: "active", MainPID: 7, ExecMainStartTimestamp: usec(20)},
			fragment: at(10), loadStart: usec(5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.u
			u.Owner, _ = ownmark.IsOwned(u.File)
			if got := staleProcess(&u, tc.fragment, tc.dropIns, tc.loadStart); got != tc.want {
				t.Errorf("staleProcess = %v, want %v", got, tc.want)
			}
		})
	}
}

// A run that exited by itself is stale when the owned files' version is
// newer than its start: the start a pass owed for them was lost.
func TestStaleRun(t *testing.T) {
	file := ownmarktest.Unit(t, "Service/w", "/bin/true")
	edited := append(append([]byte(nil), file...), "# edited by hand\n"...)
	base := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }
	usec := func(sec int) uint64 { return uint64(at(sec).UnixMicro()) }
	ownedDropIn := ownmarktest.Unit(t, "Service/w", "/bin/false") // owned and intact
	foreignDropIn := []byte("[Service]\nNice=5\n")
	exited := func(f []byte) observed.Unit {
		return observed.Unit{File: f, LoadState: "loaded", ActiveState: "inactive", ExecMainStartTimestamp: usec(10), ExecMainExitTimestamp: usec(11), ActiveExitTimestamp: usec(11)}
	}
	with := func(u observed.Unit, f func(*observed.Unit)) observed.Unit { f(&u); return u }
	for _, tc := range []struct {
		name     string
		u        observed.Unit
		fragment time.Time
		dropIns  map[string]time.Time
		want     bool
	}{
		{name: "file written after the run started", u: exited(file), fragment: at(20), want: true},
		{name: "file written during the run", u: exited(file), fragment: at(10).Add(500 * time.Millisecond), want: true},
		{name: "run started after the file", u: exited(file), fragment: at(5)},
		{name: "same instant is not newer", u: exited(file), fragment: at(10)},
		{name: "reload pending still counts", u: with(exited(file), func(u *observed.Unit) { u.NeedDaemonReload = true }), fragment: at(20), want: true},
		{name: "failed, not exited", u: with(exited(file), func(u *observed.Unit) { u.ActiveState, u.ExecMainStatus = "failed", 1 }), fragment: at(20)},
		{name: "stopped (left active before the exit)", u: with(exited(file), func(u *observed.Unit) { u.ActiveExitTimestamp = usec(10) + 5 }), fragment: at(20)},
		{name: "never ran", u: with(exited(file), func(u *observed.Unit) { u.ExecMainStartTimestamp, u.ExecMainExitTimestamp = 0, 0 }), fragment: at(20)},
		{name: "running", u: with(exited(file), func(u *observed.Unit) { u.ActiveState, u.MainPID, u.ExecMainExitTimestamp = "active", 7, 0 }), fragment: at(20)},
		{name: "edited by hand is FileEdited, not stale", u: exited(edited), fragment: at(20)},
		{name: "foreign file", u: exited(foreignDropIn), fragment: at(20)},
		{name: "owned drop-in newer", u: with(exited(file), func(u *observed.Unit) { u.DropIns = map[string][]byte{"/d/o.conf": ownedDropIn} }),
			fragment: at(5), dropIns: map[string]time.Time{"/d/o.conf": at(20)}, want: true},
		{name: "foreign drop-in newer never counts", u: with(exited(file), func(u *observed.Unit) { u.DropIns = map[string][]byte{"/d/f.conf": foreignDropIn} }),
			fragment: at(5), dropIns: map[string]time.Time{"/d/f.conf": at(20)}},
		{name: "reload-only rewrite: its marker, not its mtime, counts", u: exited(ownmark.WithProcessSince(file, int64(usec(5)))), fragment: at(20)},
		{name: "file from the future (a clock stepped back) does not count", u: exited(file), fragment: at(100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.u
			u.Owner, _ = ownmark.IsOwned(u.File)
			if got := staleRun(&u, tc.fragment, tc.dropIns, at(50)); got != tc.want {
				t.Errorf("staleRun = %v, want %v", got, tc.want)
			}
		})
	}
}

// Other files for a unit name are found along systemd's search path, in
// its order; a symlink at the unit's own path overrides.
func TestObserveVendorFiles(t *testing.T) {
	root := t.TempDir()
	unitDir := filepath.Join(root, "etc/systemd/system")
	writeFile(t, filepath.Join(root, "lib/systemd/system/ssh.service"), []byte("[Service]\nExecStart=/usr/sbin/sshd\n"))
	writeFile(t, filepath.Join(root, "lib/systemd/system/web.service"), []byte("[Service]\nExecStart=/bin/web\n"))
	writeFile(t, filepath.Join(root, "run/systemd/transient/t.service"), []byte("[Service]\nExecStart=/bin/t\n"))
	writeFile(t, filepath.Join(unitDir, "web.service"), ownmarktest.Unit(t, "Service/web"))
	writeFile(t, filepath.Join(unitDir, "ssh.service.d/override.conf"), []byte("[Service]\nNice=1\n"))
	if err := os.Symlink("/dev/null", filepath.Join(unitDir, "m.service")); err != nil {
		t.Fatal(err)
	}
	// /usr/lib is /lib here (merged /usr): listed once.
	if err := os.Symlink("lib", filepath.Join(root, "usr")); err != nil {
		t.Fatal(err)
	}
	f := sdbustest.New()
	f.SetManager("UnitPath", []string{"/run/systemd/transient", "/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"})
	o := New(f, unitDir, WithRoot(root), WithoutManager())
	st, err := o.Observe(context.Background(), []string{"ssh.service", "t.service", "web.service", "m.service", "plain.service"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]vendor{
		"ssh.service":   {paths: []string{"/lib/systemd/system/ssh.service"}},
		"t.service":     {paths: []string{"/run/systemd/transient/t.service"}, overrides: true},
		"web.service":   {paths: []string{"/lib/systemd/system/web.service"}},
		"m.service":     {paths: []string{"/etc/systemd/system/m.service"}, overrides: true},
		"plain.service": {},
	}
	for n, w := range want {
		u := st.Units[n]
		if got := (vendor{paths: u.VendorPaths, overrides: u.VendorOverrides}); !reflect.DeepEqual(got, w) {
			t.Errorf("%s: vendor %+v, want %+v", n, got, w)
		}
	}
	// UnitPath is read once per Observer.
	if _, err := o.Observe(context.Background(), []string{"ssh.service"}); err != nil {
		t.Fatal(err)
	}
	if n := f.CallCount("GetManagerProperty UnitPath"); n != 1 {
		t.Errorf("UnitPath read %d times, want once", n)
	}
}

// Enablement is read from the disk where it tells (here: WantedBy=, no
// link: disabled, whatever systemd's cached property says); a name
// without a unit file on disk has none.
func TestObserveEnablementFromDisk(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.service"), ownmarktest.Unit(t, "Service/a"))
	f := sdbustest.New()
	f.AddUnit(sdbustest.Unit{Name: "a.service", UnitFileState: "enabled"})
	o := New(f, dir, WithoutManager())
	st, err := o.Observe(context.Background(), []string{"a.service", "gone.service"})
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Units["a.service"].UnitFileState; s != "disabled" {
		t.Errorf("a.service UnitFileState = %q", s)
	}
	if s := st.Units["gone.service"].UnitFileState; s != "" {
		t.Errorf("gone.service UnitFileState = %q, want none", s)
	}
	if f.CallCount("ListUnitFilesByPatterns") != 0 {
		t.Errorf("calls = %v", f.Calls())
	}
}

// A drop-in on disk that systemd has not loaded needs a reload, whatever
// systemd's own flag says (it misses drop-ins in a directory created since
// its last load until its path cache is refreshed).
func TestObserveUnloadedDropInNeedsReload(t *testing.T) {
	root := t.TempDir()
	unitDir := filepath.Join(root, "etc/systemd/system")
	writeFile(t, filepath.Join(unitDir, "a.service"), ownmarktest.Unit(t, "Service/a"))
	writeFile(t, filepath.Join(unitDir, "a.service.d/50-foreign.conf"), []byte("[Service]\nNice=3\n"))
	writeFile(t, filepath.Join(unitDir, "b.service"), ownmarktest.Unit(t, "Service/b"))
	writeFile(t, filepath.Join(unitDir, "b.service.d/50-foreign.conf"), []byte("[Service]\nNice=3\n"))
	writeFile(t, filepath.Join(unitDir, "c.service"), ownmarktest.Unit(t, "Service/c"))
	if err := os.MkdirAll(filepath.Join(unitDir, "c.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A masked drop-in is not loaded either, and needs nothing.
	if err := os.Symlink("/dev/null", filepath.Join(unitDir, "c.service.d/masked.conf")); err != nil {
		t.Fatal(err)
	}
	// A drop-in overridden by one of its name earlier in the search path,
	// and one masked there by a link to /dev/null, are never loaded:
	// neither is pending (review: they read as pending, and foreign, on
	// every pass).
	runDir := filepath.Join(root, "run/systemd/system")
	writeFile(t, filepath.Join(unitDir, "d.service"), ownmarktest.Unit(t, "Service/d"))
	writeFile(t, filepath.Join(unitDir, "d.service.d/x.conf"), []byte("[Service]\nNice=3\n"))
	writeFile(t, filepath.Join(runDir, "d.service.d/x.conf"), []byte("[Service]\nNice=4\n"))
	writeFile(t, filepath.Join(unitDir, "e.service"), ownmarktest.Unit(t, "Service/e"))
	writeFile(t, filepath.Join(runDir, "e.service.d/x.conf"), []byte("[Service]\nNice=4\n"))
	if err := os.MkdirAll(filepath.Join(unitDir, "e.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/null", filepath.Join(unitDir, "e.service.d/x.conf")); err != nil {
		t.Fatal(err)
	}
	f := sdbustest.New()
	f.SetManager("UnitPath", []string{"/etc/systemd/system", "/run/systemd/system"})
	f.AddUnit(sdbustest.Unit{Name: "a.service"})
	f.AddUnit(sdbustest.Unit{Name: "b.service", DropInPaths: []string{"/etc/systemd/system/b.service.d/50-foreign.conf"}})
	f.AddUnit(sdbustest.Unit{Name: "c.service"})
	f.AddUnit(sdbustest.Unit{Name: "d.service", DropInPaths: []string{"/etc/systemd/system/d.service.d/x.conf"}})
	f.AddUnit(sdbustest.Unit{Name: "e.service"})
	o := New(f, unitDir, WithRoot(root), WithoutManager())
	st, err := o.Observe(context.Background(), []string{"a.service", "b.service", "c.service", "d.service", "e.service"})
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]bool{"a.service": true, "b.service": false, "c.service": false, "d.service": false, "e.service": false} {
		if got := st.Units[n].NeedDaemonReload; got != want {
			t.Errorf("%s NeedDaemonReload = %v, want %v", n, got, want)
		}
		wantPending := []string(nil)
		if want {
			wantPending = []string{"/etc/systemd/system/" + n + ".d/50-foreign.conf"}
		}
		if got := st.Units[n].PendingDropIns; !slices.Equal(got, wantPending) {
			t.Errorf("%s PendingDropIns = %q, want %q", n, got, wantPending)
		}
	}
	if got := string(st.Units["a.service"].DropIns["/etc/systemd/system/a.service.d/50-foreign.conf"]); !strings.Contains(got, "Nice=3") {
		t.Errorf("a's pending drop-in not read: %q", got)
	}
}

// Enablement of the plain case is read from the disk (a unit file with
// [Install] rules, a symlink of its name in a dependency directory of the
// unit directory, or none anywhere); every other name with a unit file is
// listed with ListUnitFilesByPatterns (what systemd says wins).
func TestObserveEnablementFromLinks(t *testing.T) {
	root := t.TempDir()
	unitDir := filepath.Join(root, "etc/systemd/system")
	install := "\n[Install]\nWantedBy=multi-user.target\n"
	units := map[string]string{
		"on.service":       install,
		"two.service":      "\n[Install]\nWantedBy=multi-user.target default.target\n",
		"off.service":      install,
		"static.service":   "",
		"also.service":     "\n[Install]\nAlso=on.service\n",
		"runtime.service":  install, // a link in /run as well: enabled-runtime is systemd's word
		"alias.service":    install, // a link of another name points to it
		"wrong.service":    install, // a link of its name points to another file
		"dropin.service":   install, // a drop-in could say more
		"reset.service":    "\n[Install]\nWantedBy=\n",
		"continue.service": "\n[Install]\nWantedBy=a.target \\\n  b.target\n",
	}
	for n, extra := range units {
		// ownmarktest units say WantedBy=multi-user.target; these do not.
		data := strings.Replace(string(ownmarktest.Unit(t, "Service/"+strings.TrimSuffix(n, ".service"))), "WantedBy=multi-user.target", "", 1)
		if !strings.Contains(data, "[Install]") {
			t.Fatalf("ownmarktest's unit changed:\n%s", data)
		}
		writeFile(t, filepath.Join(unitDir, n), []byte(strings.Replace(data, "[Install]", "", 1)+extra))
	}
	writeFile(t, filepath.Join(unitDir, "dropin.service.d/x.conf"), []byte("[Service]\nNice=1\n"))
	link := func(dir, name, target string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	wants := "etc/systemd/system/multi-user.target.wants"
	link(wants, "on.service", "/etc/systemd/system/on.service")
	link(wants, "two.service", "/etc/systemd/system/two.service")
	link("etc/systemd/system/default.target.wants", "two.service", "/etc/systemd/system/two.service")
	link(wants, "runtime.service", "/etc/systemd/system/runtime.service")
	link("run/systemd/system/multi-user.target.wants", "runtime.service", "/etc/systemd/system/runtime.service")
	link(wants, "other.service", "/etc/systemd/system/alias.service")
	link(wants, "wrong.service", "/etc/systemd/system/elsewhere.service")
	f := sdbustest.New()
	f.SetManager("UnitPath", []string{"/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system"})
	listed := map[string]string{"static.service": "static", "also.service": "indirect", "runtime.service": "enabled-runtime",
		"alias.service": "enabled", "wrong.service": "disabled", "dropin.service": "disabled", "reset.service": "static",
		"continue.service": "enabled", "on.service": "WRONG", "off.service": "WRONG", "two.service": "WRONG"}
	var names []string
	for n := range units {
		f.AddUnit(sdbustest.Unit{Name: n, ActiveState: "active", SubState: "running"})
		names = append(names, n)
	}
	lister := diskLister{Fake: f, states: listed, asked: new([]string)}
	o := New(lister, unitDir, WithRoot(root), WithoutManager())
	st, err := o.Observe(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(listed)
	want["on.service"], want["off.service"], want["two.service"] = "enabled", "disabled", "enabled"
	for n, w := range want {
		if got := st.Units[n].UnitFileState; got != w {
			t.Errorf("%s: UnitFileState %q, want %q", n, got, w)
		}
	}
	// The links, where the disk says all of them: enabled units read from
	// the disk only.
	wantLinks := map[string][]string{"on.service": {"multi-user.target.wants"}, "two.service": {"default.target.wants", "multi-user.target.wants"}}
	for n := range units {
		u := st.Units[n]
		if w, ok := wantLinks[n]; u.InstallLinksKnown != ok || !slices.Equal(u.InstallLinks, w) {
			t.Errorf("%s: InstallLinks %v (known %v), want %v (known %v)", n, u.InstallLinks, u.InstallLinksKnown, w, ok)
		}
	}
	slices.Sort(*lister.asked)
	if wantAsked := []string{"alias.service", "also.service", "continue.service", "dropin.service", "reset.service", "runtime.service", "static.service", "wrong.service"}; !slices.Equal(*lister.asked, wantAsked) {
		t.Errorf("listed %v, want %v", *lister.asked, wantAsked)
	}
}

// diskLister answers ListUnitFilesByPatterns with states (what the disk
// says), unlike the UnitFileState property of its Fake.
type diskLister struct {
	*sdbustest.Fake
	states map[string]string
	asked  *[]string
}

func (d diskLister) ListUnitFilesByPatternsContext(_ context.Context, _, patterns []string) ([]sddbus.UnitFile, error) {
	var out []sddbus.UnitFile
	for _, p := range patterns {
		*d.asked = append(*d.asked, p)
		if s, ok := d.states[p]; ok {
			out = append(out, sddbus.UnitFile{Path: "/etc/systemd/system/" + p, Type: s})
		}
	}
	return out, nil
}
