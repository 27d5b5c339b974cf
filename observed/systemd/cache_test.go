package systemd

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/internal/sdbus/sdbustest"
	"resil.dev/resil/observed"
)

// The watch-fed cache: while Subscribe runs, Observe reads the properties
// of changed units only; ObserveFull reads everything and reports what the
// cache had wrong.
func TestCache(t *testing.T) {
	defer func(d time.Duration) { driftGrace = d }(driftGrace)
	driftGrace = time.Millisecond
	names := []string{"worker.service", "other.service"}
	observe := func(t *testing.T, f *sdbustest.Fake, o *Observer, full bool) (int, map[string]string) {
		t.Helper()
		f.ResetCalls()
		obs := o.Observe
		if full {
			obs = o.ObserveFull
		}
		st, err := obs(context.Background(), names)
		if err != nil {
			t.Fatal(err)
		}
		if st.Units["worker.service"].MainPID == 0 {
			t.Fatalf("worker.service without MainPID: %+v", st.Units["worker.service"])
		}
		// The services whose properties were read (a read without the
		// cache may take two batches: earlyProps, then what the disk
		// does not tell).
		return f.PropertyCount("NRestarts"), st.CacheDrift
	}
	// Let Subscribe's goroutine take every signal sent so far.
	settle := func(*sdbustest.Fake) {
		time.Sleep(50 * time.Millisecond)
	}
	tests := []struct {
		name string
		run  func(t *testing.T, f *sdbustest.Fake, o *Observer)
	}{{
		name: "the first read after Subscribe fills the cache, the next reads nothing",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer) {
			if n, _ := observe(t, f, o, false); n != 2 {
				t.Errorf("first Observe: %d GetAll, want 2", n)
			}
			if n, _ := observe(t, f, o, false); n != 0 {
				t.Errorf("second Observe: %d GetAll, want 0", n)
			}
		},
	}, {
		name: "a unit signal marks its unit; a reload asks NeedDaemonReload again where no file tells",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer) {
			observe(t, f, o, false)
			f.Emit("worker.service", "org.freedesktop.systemd1.Service", map[string]any{"NRestarts": uint32(1)})
			settle(f)
			if n, _ := observe(t, f, o, false); n != 1 {
				t.Errorf("after a signal: %d GetAll, want 1", n)
			}
			o.Reloaded()
			f.ResetCalls()
			if _, err := o.Observe(context.Background(), names); err != nil {
				t.Fatal(err)
			}
			if n, ndr, pid := f.CallCount("GetProperties"), f.PropertyCount("NeedDaemonReload"), f.PropertyCount("MainPID"); n != 2 || ndr != 2 || pid != 0 {
				t.Errorf("after a reload: %d reads, %d of NeedDaemonReload, %d of MainPID; want 2 of NeedDaemonReload alone", n, ndr, pid)
			}
		},
	}, {
		name: "a service's signal with the cached values marks nothing; a changed value or a missing one does",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer) {
			observe(t, f, o, false)
			u, _ := f.Unit("other.service")
			same := map[string]any{"Result": "success", "NRestarts": uint32(0), "MainPID": u.MainPID, "ExecMainStatus": int32(0),
				"ExecMainStartTimestamp": u.ExecMainStartTimestamp, "ExecMainExitTimestamp": uint64(0)}
			f.Emit("other.service", "org.freedesktop.systemd1.Service", same)
			f.Emit("other.service", "org.freedesktop.systemd1.Unit", map[string]any{"ActiveState": "active"})
			settle(f)
			if n, _ := observe(t, f, o, false); n != 0 {
				t.Errorf("after signals with the cached values: %d GetAll, want 0", n)
			}
			for _, change := range []map[string]any{{"MainPID": u.MainPID + 1}, {"MainPID": nil}} {
				sent := maps.Clone(same)
				for k, v := range change {
					if v == nil {
						delete(sent, k)
					} else {
						sent[k] = v
					}
				}
				f.Emit("other.service", "org.freedesktop.systemd1.Service", sent)
				settle(f)
				if n, _ := observe(t, f, o, false); n != 1 {
					t.Errorf("after a signal with %v: %d GetAll, want 1", change, n)
				}
			}
		},
	}, {
		name: "a status change seen by ListUnitsByNames reads the unit even without a signal",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer) {
			observe(t, f, o, false)
			u, _ := f.Unit("other.service")
			u.ActiveState, u.SubState = "failed", "failed"
			f.AddUnit(u) // no signal
			if n, _ := observe(t, f, o, false); n != 1 {
				t.Errorf("after a silent status change: %d GetAll, want 1", n)
			}
		},
	}, {
		name: "the full read reports a change the cache missed",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer) {
			observe(t, f, o, false)
			u, _ := f.Unit("worker.service")
			u.MainPID, u.NRestarts = 9999, 3
			f.AddUnit(u) // no signal, same status
			if n, drift := observe(t, f, o, false); n != 0 || drift != nil {
				t.Errorf("cached Observe: %d GetAll, drift %v", n, drift)
			}
			n, drift := observe(t, f, o, true)
			if n != 2 || len(drift) != 1 || !strings.Contains(drift["worker.service"], "9999") {
				t.Errorf("ObserveFull: %d GetAll, drift %v; want 2 and worker.service's MainPID", n, drift)
			}
			if n, drift := observe(t, f, o, true); n != 2 || drift != nil {
				t.Errorf("second ObserveFull: %d GetAll, drift %v; want 2, none", n, drift)
			}
		},
	}, {
		name: "the manager's JobRemoved and Reloading signals count; a reload's UnitRemoved and UnitNew do not",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer) {
			observe(t, f, o, false)
			f.EmitSignal(&godbus.Signal{Path: "/org/freedesktop/systemd1", Name: "org.freedesktop.systemd1.Manager.JobRemoved",
				Body: []any{uint32(5), godbus.ObjectPath("/org/freedesktop/systemd1/job/5"), "other.service", "done"}})
			settle(f)
			if n, _ := observe(t, f, o, false); n != 1 {
				t.Errorf("after JobRemoved: %d GetAll, want 1", n)
			}
			manager := func(member string, body ...any) {
				f.EmitSignal(&godbus.Signal{Path: "/org/freedesktop/systemd1", Name: "org.freedesktop.systemd1.Manager." + member, Body: body})
			}
			manager("Reloading", true)
			for _, n := range names {
				manager("UnitRemoved", n, godbus.ObjectPath("/org/freedesktop/systemd1/unit/x"))
				manager("UnitNew", n, godbus.ObjectPath("/org/freedesktop/systemd1/unit/x"))
			}
			manager("Reloading", false)
			settle(f)
			f.ResetCalls()
			if _, err := o.Observe(context.Background(), names); err != nil {
				t.Fatal(err)
			}
			if n, ndr, pid := f.CallCount("GetProperties"), f.PropertyCount("NeedDaemonReload"), f.PropertyCount("MainPID"); n != 2 || ndr != 2 || pid != 0 {
				t.Errorf("after a reload: %d reads, %d of NeedDaemonReload, %d of MainPID; want 2 of NeedDaemonReload alone", n, ndr, pid)
			}
			manager("UnitRemoved", "other.service", godbus.ObjectPath("/org/freedesktop/systemd1/unit/x"))
			settle(f)
			if n, _ := observe(t, f, o, false); n != 1 {
				t.Errorf("after UnitRemoved outside a reload: %d GetAll, want 1", n)
			}
		},
	}}
	tests = append(tests, struct {
		name string
		run  func(t *testing.T, f *sdbustest.Fake, o *Observer)
	}{
		name: "ChangeSeq tells only once the cache is filled, and moves with a signal and a reload, not with a read",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer) {
			if _, ok := o.ChangeSeq(); ok {
				t.Error("ChangeSeq ok before the cache was filled")
			}
			observe(t, f, o, false)
			s0, ok := o.ChangeSeq()
			if !ok {
				t.Fatal("ChangeSeq not ok with the watch on and the cache filled")
			}
			observe(t, f, o, false)
			if s, _ := o.ChangeSeq(); s != s0 {
				t.Errorf("a read moved ChangeSeq %d → %d", s0, s)
			}
			f.Emit("worker.service", "org.freedesktop.systemd1.Service", map[string]any{"NRestarts": uint32(1)})
			settle(f)
			s1, _ := o.ChangeSeq()
			if s1 == s0 {
				t.Error("a signal did not move ChangeSeq")
			}
			o.Reloaded()
			if s, _ := o.ChangeSeq(); s == s1 {
				t.Error("a reload did not move ChangeSeq")
			}
		},
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, o, _, stop := subscribedObserver(t)
			f.AddUnit(sdbustest.Unit{Name: "other.service", ActiveState: "active", SubState: "running", MainPID: 77})
			tt.run(t, f, o)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			// Without Subscribe there is no cache.
			if _, ok := o.ChangeSeq(); ok {
				t.Error("ChangeSeq ok after Subscribe returned")
			}
			if n, _ := observe(t, f, o, false); n != 2 {
				t.Errorf("Observe after Subscribe returned: %d GetAll, want 2", n)
			}
		})
	}
}

// KeepReads (apply, no watch): every Observe reads everything until
// Recheck; after it, the properties only of the units a job touched
// (JobQueued), whose status ListUnitsByNames changed, or whose main
// process started since (one ExecMainStartTimestamp per cached service
// stands in for the signals); a reload has NeedDaemonReload asked again.
func TestCacheKeepReads(t *testing.T) {
	names := []string{"worker.service", "other.service", "third.service"}
	tests := []struct {
		name string
		// act runs between the last read and Recheck; want is the
		// services whose properties the read after Recheck asks for,
		// wantNDR how many are asked NeedDaemonReload (-1: any).
		act           func(f *sdbustest.Fake, o *Observer)
		want, wantNDR int
	}{
		{"nothing changed", func(*sdbustest.Fake, *Observer) {}, 0, 0},
		{"a job queued and finished", func(f *sdbustest.Fake, o *Observer) {
			u, _ := f.Unit("worker.service")
			u.MainPID++ // restarted: same status, new process
			u.ExecMainStartTimestamp++
			f.AddUnit(u)
			o.JobQueued("worker.service")("active", "running")
		}, 1, -1},
		{"restarted with no job of its own (Requires=, a timer, a crash)", func(f *sdbustest.Fake, _ *Observer) {
			u, _ := f.Unit("third.service")
			u.MainPID, u.NRestarts = u.MainPID+1, 1
			u.ExecMainStartTimestamp++
			f.AddUnit(u)
		}, 1, -1},
		{"a status changed by someone else", func(f *sdbustest.Fake, _ *Observer) {
			u, _ := f.Unit("other.service")
			u.ActiveState, u.SubState = "failed", "failed"
			f.AddUnit(u)
		}, 1, -1},
		{"a daemon-reload by the command", func(_ *sdbustest.Fake, o *Observer) { o.Reloaded() }, 0, 3},
	}
	for _, tt := range tests {
		for _, procCheck := range []bool{false, true} {
			name := tt.name
			if procCheck {
				name += " (process check)"
			}
			t.Run(name, func(t *testing.T) {
				f := sdbustest.New()
				for i, n := range names {
					f.AddUnit(sdbustest.Unit{Name: n, ActiveState: "active", SubState: "running", MainPID: uint32(100 + i)})
				}
				opts := []Option{WithoutManager()}
				if procCheck {
					// The fake's process table: its units' main PIDs.
					opts = append(opts, withAlive(func(pid uint32) bool {
						for _, n := range names {
							if u, _ := f.Unit(n); u.MainPID == pid {
								return true
							}
						}
						return false
					}))
				}
				o := New(f, t.TempDir(), opts...)
				o.KeepReads()
				read := func() (int, *observed.State) {
					t.Helper()
					f.ResetCalls()
					st, err := o.Observe(context.Background(), names)
					if err != nil {
						t.Fatal(err)
					}
					return f.PropertyCount("NRestarts"), st
				}
				check := func(when string, st *observed.State) {
					t.Helper()
					for _, name := range names {
						u, _ := f.Unit(name)
						if got := st.Units[name]; got.MainPID != u.MainPID || got.ActiveState != u.ActiveState || got.NRestarts != u.NRestarts {
							t.Errorf("%s: %s: observed %s pid %d restarts %d, systemd has %s pid %d restarts %d", when, name,
								got.ActiveState, got.MainPID, got.NRestarts, u.ActiveState, u.MainPID, u.NRestarts)
						}
					}
				}
				for i := range 2 {
					n, st := read()
					if n != len(names) {
						t.Fatalf("read %d before Recheck: %d services' properties, want all %d", i+1, n, len(names))
					}
					u, _ := f.Unit("third.service")
					if st.Units["third.service"].MainPID != u.MainPID {
						t.Fatalf("read %d before Recheck: third.service pid %d, systemd has %d", i+1, st.Units["third.service"].MainPID, u.MainPID)
					}
					u.MainPID += 10 // a new process, same status: only a full read sees it
					f.AddUnit(u)
				}
				u, _ := f.Unit("third.service")
				u.MainPID -= 10 // back to what the last read saw
				f.AddUnit(u)
				if _, ok := o.ChangeSeq(); ok {
					t.Error("ChangeSeq ok with no watch")
				}
				tt.act(f, o)
				o.Recheck()
				n, st := read()
				if n != tt.want {
					t.Errorf("after Recheck: %d services' properties read, want %d", n, tt.want)
				}
				if ndr := f.PropertyCount("NeedDaemonReload"); tt.wantNDR >= 0 && ndr != tt.wantNDR {
					t.Errorf("after Recheck: NeedDaemonReload asked of %d, want %d", ndr, tt.wantNDR)
				}
				probes := f.PropertyCount("ExecMainStartTimestamp")
				switch {
				case !procCheck && probes < len(names)-tt.want:
					t.Errorf("after Recheck: ExecMainStartTimestamp asked of %d services, want each cached one", probes)
				case procCheck && probes != tt.want:
					t.Errorf("after Recheck with the process check: ExecMainStartTimestamp asked of %d services, want only the %d read again", probes, tt.want)
				}
				check("after Recheck", st)
			})
		}
	}
	// With a watch running KeepReads changes nothing: the watch's cache stands.
	f, o, _, stop := subscribedObserver(t)
	if _, err := o.Observe(context.Background(), []string{"worker.service"}); err != nil {
		t.Fatal(err)
	}
	o.KeepReads()
	f.ResetCalls()
	if _, err := o.Observe(context.Background(), []string{"worker.service"}); err != nil {
		t.Fatal(err)
	}
	if n := f.PropertyCount("NRestarts"); n != 0 {
		t.Errorf("KeepReads under a watch: %d services read, want 0 (cache kept)", n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// With the process check, a service whose process died and was started
// again while systemd listed the units (same status before and after) is
// read again: the check runs after the listing, not before it or beside it
// (the hook restarts the service just before the listing answers).
func TestRecheckAfterListing(t *testing.T) {
	names := []string{"worker.service", "third.service"}
	f := sdbustest.New()
	for i, n := range names {
		f.AddUnit(sdbustest.Unit{Name: n, ActiveState: "active", SubState: "running", MainPID: uint32(100 + i)})
	}
	restartDuringListing := false
	hook := func(method string) {
		if method == "ListUnitsByNames" && restartDuringListing {
			restartDuringListing = false
			// Time for a check running beside the listing to run first.
			time.Sleep(20 * time.Millisecond)
			u, _ := f.Unit("third.service")
			u.MainPID, u.NRestarts = u.MainPID+1, 1
			u.ExecMainStartTimestamp++
			f.AddUnit(u)
		}
	}
	alive := func(pid uint32) bool {
		for _, n := range names {
			if u, _ := f.Unit(n); u.MainPID == pid {
				return true
			}
		}
		return false
	}
	o := New(f, t.TempDir(), WithoutManager(), WithCallHook(hook), withAlive(alive))
	o.KeepReads()
	if _, err := o.Observe(context.Background(), names); err != nil {
		t.Fatal(err)
	}
	o.Recheck()
	restartDuringListing = true
	st, err := o.Observe(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := f.Unit("third.service")
	if got := st.Units["third.service"]; got.MainPID != u.MainPID || got.NRestarts != 1 {
		t.Errorf("third.service restarted during the listing: observed pid %d restarts %d, systemd has pid %d restarts 1", got.MainPID, got.NRestarts, u.MainPID)
	}
}
