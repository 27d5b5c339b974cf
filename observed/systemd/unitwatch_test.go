package systemd

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/actuators"
	sdapply "resil.dev/resil/actuators/systemd"
	"resil.dev/resil/internal/ownmark/ownmarktest"
	"resil.dev/resil/internal/sdbus/sdbustest"
	"resil.dev/resil/observed"
)

// ownFiles decides which manager signals and disk changes are the agent's
// own, with no I/O.
func TestOwnFilesSignals(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type ev struct {
		at   time.Duration
		what string // "begin", "done", "done+sig", "sig", "sig-other"
		wake bool   // for sig: the wake expected; for done: takeWake after it
	}
	tests := []struct {
		name   string
		events []ev
	}{
		{"an operator's signal wakes", []ev{{0, "sig", true}}},
		{"own signal during the operation", []ev{{0, "begin", false}, {1, "sig", false}, {2, "done+sig", false}, {3, "sig", true}}},
		{"own signal after the operation's reply", []ev{{0, "begin", false}, {1, "done+sig", false}, {2, "sig", false}, {3, "sig", true}}},
		{"a foreign signal during an operation that sent none wakes when it ends",
			[]ev{{0, "begin", false}, {1, "sig", false}, {2, "done", true}}},
		{"own and foreign signal during the operation: one wake",
			[]ev{{0, "begin", false}, {1, "sig", false}, {1, "sig", false}, {2, "done+sig", true}}},
		{"a signal of another kind is not the operation's",
			[]ev{{0, "begin", false}, {1, "sig-other", false}, {2, "done+sig", true}}},
		{"nested operations hold until the last ends",
			[]ev{{0, "begin", false}, {0, "begin", false}, {1, "sig", false}, {2, "done", false}, {3, "done", true}}},
		{"a credit expires", []ev{{0, "begin", false}, {1, "done+sig", false}, {1 + ownSignalWait, "sig", true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f ownFiles
			for i, e := range tt.events {
				now := t0.Add(e.at)
				switch e.what {
				case "begin":
					f.begin(now)
				case "done", "done+sig":
					sig := ""
					if e.what == "done+sig" {
						sig = sigReloaded
					}
					f.done(now, sig, nil, nil)
					if got := f.takeWake(); got != e.wake {
						t.Errorf("event %d (%s): wake %v, want %v", i, e.what, got, e.wake)
					}
				case "sig", "sig-other":
					kind := sigReloaded
					if e.what == "sig-other" {
						kind = sigUnitFilesChanged
					}
					if got := f.signal(kind, now); got != e.wake {
						t.Errorf("event %d (%s): wake %v, want %v", i, e.what, got, e.wake)
					}
				}
			}
		})
	}
}

func TestOwnFilesExplain(t *testing.T) {
	last := map[string]string{"a.service": "f:1", "b.service": "f:2", "b.service.d/x.conf": "f:3", "multi-user.target.wants/a.service": "l:/etc/systemd/system/a.service"}
	tests := []struct {
		name     string
		cur      map[string]string
		own      map[string]string
		prefixes []string
		want     []string
	}{
		{"nothing changed", last, nil, nil, nil},
		{"an operator's edit", with(last, "a.service", "f:9"), nil, nil, []string{"a.service"}},
		{"the agent's write", with(last, "a.service", "f:9"), map[string]string{"a.service": "f:9"}, nil, nil},
		{"an edit after the agent's write", with(last, "a.service", "f:10"), map[string]string{"a.service": "f:9"}, nil, []string{"a.service"}},
		{"an operator's disable", with(last, "multi-user.target.wants/a.service", ""), nil, nil, []string{"multi-user.target.wants/a.service"}},
		{"the agent's disable", with(last, "multi-user.target.wants/a.service", ""), map[string]string{"multi-user.target.wants/a.service": ""}, nil, nil},
		{"the agent's removal of a unit and its drop-ins",
			with(with(last, "b.service", ""), "b.service.d/x.conf", ""), map[string]string{"b.service": ""}, []string{"b.service.d"}, nil},
		{"a new owned file by hand", with(last, "c.service", "f:4"), map[string]string{"a.service": "f:1"}, nil, []string{"c.service"}},
		{"a mask", with(last, "a.service", "l:/dev/null"), nil, nil, []string{"a.service"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := ownFiles{paths: tt.own, prefixes: tt.prefixes}
			got := f.explain(last, tt.cur)
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("explain = %v, want %v", got, tt.want)
			}
			if f.paths != nil || f.prefixes != nil {
				t.Error("records kept after a check")
			}
		})
	}
}

// with returns a copy of m with k set to v ("" deletes it).
func with(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m))
	for a, b := range m {
		out[a] = b
	}
	if v == "" {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

// Out-of-band changes to the unit directory and the manager's signals for
// unit files wake the loop; the agent's own writes, enables and reloads
// (through the Applier) do not.
func TestSubscribeUnitFiles(t *testing.T) {
	unit := ownmarktest.Unit(t, "Service/worker", "/bin/sleep", "infinity")
	mkdir := func(t *testing.T, p string) {
		t.Helper()
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(t *testing.T, p string, data []byte) {
		t.Helper()
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		run  func(t *testing.T, f *sdbustest.Fake, o *Observer, a *sdapply.Applier, dir string) // returns after the change
		wake bool
	}{
		{"hand edit of a unit file", func(t *testing.T, _ *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, dir string) {
			write(t, filepath.Join(dir, "worker.service"), append(slices.Clone(unit), "# edited\n"...))
		}, true},
		{"sed -i of a unit file (rename over it)", func(t *testing.T, _ *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, dir string) {
			write(t, filepath.Join(dir, "sedXYZ"), unit)
			if err := os.Rename(filepath.Join(dir, "sedXYZ"), filepath.Join(dir, "worker.service")); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"rm of a unit file", func(t *testing.T, _ *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, dir string) {
			if err := os.Remove(filepath.Join(dir, "worker.service")); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"a new file", func(t *testing.T, _ *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, dir string) {
			write(t, filepath.Join(dir, "new.service"), ownmarktest.Unit(t, "Service/new", "/bin/true"))
		}, true},
		{"a mask", func(t *testing.T, _ *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, dir string) {
			if err := os.Symlink("/dev/null", filepath.Join(dir, "other.service")); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"a disable by hand", func(t *testing.T, _ *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, dir string) {
			if err := os.Remove(filepath.Join(dir, "multi-user.target.wants", "worker.service")); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"an enable in a new .wants directory", func(t *testing.T, _ *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, dir string) {
			// An empty directory changes no entry: no wake for it.
			mkdir(t, filepath.Join(dir, "timers.target.wants"))
			time.Sleep(100 * time.Millisecond) // checked, and watched
			if err := os.Symlink(filepath.Join(dir, "worker.service"), filepath.Join(dir, "timers.target.wants", "worker.service")); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"a drop-in by hand", func(t *testing.T, _ *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, dir string) {
			write(t, filepath.Join(dir, "worker.service.d", "x.conf"), []byte("[Service]\nRestartSec=9s\n"))
		}, true},
		{"an editor's swap file", func(t *testing.T, _ *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, dir string) {
			write(t, filepath.Join(dir, ".worker.service.swp"), []byte("x"))
			write(t, filepath.Join(dir, "worker.service~"), []byte("x"))
		}, false},
		{"UnitFilesChanged (systemctl enable --runtime)", func(t *testing.T, f *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, _ string) {
			f.EmitSignal(&godbus.Signal{Path: "/org/freedesktop/systemd1", Name: managerIface + ".UnitFilesChanged"})
		}, true},
		{"Reloading(false): a daemon-reload finished", func(t *testing.T, f *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, _ string) {
			f.EmitSignal(&godbus.Signal{Path: "/org/freedesktop/systemd1", Name: managerIface + ".Reloading", Body: []any{false}})
		}, true},
		{"Reloading(true) alone", func(t *testing.T, f *sdbustest.Fake, _ *Observer, _ *sdapply.Applier, _ string) {
			f.EmitSignal(&godbus.Signal{Path: "/org/freedesktop/systemd1", Name: managerIface + ".Reloading", Body: []any{true}})
		}, false},
		{"the agent's write, drop-in, enable, reload, disable and removal", func(t *testing.T, _ *sdbustest.Fake, _ *Observer, a *sdapply.Applier, dir string) {
			steps := []actuators.Step{
				{Op: actuators.OpWriteFile, Path: filepath.Join(dir, "worker.service"), Data: append(slices.Clone(unit), "# new\n"...)},
				{Op: actuators.OpWriteFile, Path: filepath.Join(dir, "worker.service.d", "10-resil.conf"), Data: ownmarktest.Unit(t, "Service/worker", "/bin/true")},
				{Op: actuators.OpWriteFile, Path: filepath.Join(dir, "gone.service"), Data: ownmarktest.Unit(t, "Service/gone", "/bin/true")},
				{Op: actuators.OpDaemonReload},
				{Op: actuators.OpDisable, Unit: "worker.service"},
				{Op: actuators.OpEnable, Unit: "worker.service"},
				{Op: actuators.OpRemoveFile, Path: filepath.Join(dir, "gone.service")},
			}
			for _, s := range steps {
				s.Reason = "test"
				if _, err := a.Apply(context.Background(), s); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
		}, false},
		{"an operator's edit while the agent writes", func(t *testing.T, _ *sdbustest.Fake, o *Observer, a *sdapply.Applier, dir string) {
			done := o.OwnFiles()
			write(t, filepath.Join(dir, "worker.service"), append(slices.Clone(unit), "# by hand\n"...))
			write(t, filepath.Join(dir, "other.service"), unit)
			time.Sleep(100 * time.Millisecond) // past diskGather: the check waits for done
			done(observed.OwnChange{Paths: []string{filepath.Join(dir, "other.service")}})
		}, true},
		{"an operator's disable while the agent reloads", func(t *testing.T, f *sdbustest.Fake, o *Observer, _ *sdapply.Applier, _ string) {
			done := o.OwnFiles()
			f.EmitSignal(&godbus.Signal{Path: "/org/freedesktop/systemd1", Name: managerIface + ".UnitFilesChanged"})
			f.EmitSignal(&godbus.Signal{Path: "/org/freedesktop/systemd1", Name: managerIface + ".Reloading", Body: []any{false}})
			time.Sleep(50 * time.Millisecond)
			done(observed.OwnChange{Signal: "Reloading"})
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, o, kick, stop := subscribedObserver(t)
			dir := o.unitDir
			// Made while Subscribe runs: their check's wake is drained.
			mkdir(t, filepath.Join(dir, "multi-user.target.wants"))
			mkdir(t, filepath.Join(dir, "worker.service.d"))
			write(t, filepath.Join(dir, "worker.service"), unit)
			if err := os.Symlink(filepath.Join(dir, "worker.service"), filepath.Join(dir, "multi-user.target.wants", "worker.service")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			for len(kick) > 0 {
				<-kick
			}
			a := sdapply.New(f, dir, filepath.Join(dir, "conf.d"), nil, sdapply.WithOwnJobs(o))
			tt.run(t, f, o, a, dir)
			expectWakeWithin(t, kick, tt.wake, tt.name, 300*time.Millisecond)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func expectWakeWithin(t *testing.T, kick <-chan struct{}, want bool, what string, d time.Duration) {
	t.Helper()
	select {
	case <-kick:
		if !want {
			t.Errorf("%s: woke, want no wake", what)
		}
	case <-time.After(d):
		if want {
			t.Errorf("%s: no wake within %s", what, d)
		}
	}
}

// The links an enable reports are keyed as the disk check keys them:
// relative to the unit directory, also a link directly in it (an Alias=).
func TestOwnValuesLinkKeys(t *testing.T) {
	dir := t.TempDir()
	o := New(sdbustest.New(), dir, WithoutManager())
	values, _ := o.ownValues(observed.OwnChange{Links: []observed.Link{
		{Path: filepath.Join(dir, "multi-user.target.wants", "a.service"), Dest: filepath.Join(dir, "a.service")},
		{Path: filepath.Join(dir, "alias.service"), Dest: filepath.Join(dir, "a.service")},
		{Path: "/etc/systemd/system/other.service", Dest: ""}, // systemd's own path, another namespace
	}})
	for _, k := range []string{"multi-user.target.wants/a.service", "alias.service", "other.service"} {
		if _, ok := values[k]; !ok {
			t.Errorf("no value for %s: %v", k, values)
		}
	}
}
