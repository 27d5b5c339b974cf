package systemd

import (
	"slices"
	"testing"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/observed"
)

func TestLastRunRelayed(t *testing.T) {
	const name = "once.service"
	path := godbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sddbus.PathBusEscape(name))
	service := func(start, exit uint64, status int32) *godbus.Signal {
		return &godbus.Signal{Path: path, Name: "org.freedesktop.DBus.Properties.PropertiesChanged", Body: []any{serviceIface, map[string]godbus.Variant{
			"Result": godbus.MakeVariant("success"), "NRestarts": godbus.MakeVariant(uint32(0)), "MainPID": godbus.MakeVariant(uint32(0)),
			"ExecMainStatus": godbus.MakeVariant(status), "ExecMainStartTimestamp": godbus.MakeVariant(start), "ExecMainExitTimestamp": godbus.MakeVariant(exit),
		}, []string{}}}
	}
	unit := func(activeExit uint64) *godbus.Signal {
		return &godbus.Signal{Path: path, Name: "org.freedesktop.DBus.Properties.PropertiesChanged", Body: []any{unitIface, map[string]godbus.Variant{
			"ActiveState": godbus.MakeVariant("inactive"), "ActiveExitTimestamp": godbus.MakeVariant(activeExit),
		}, []string{}}}
	}
	removed := &godbus.Signal{Path: "/org/freedesktop/systemd1", Name: managerIface + ".UnitRemoved", Body: []any{name, path}}
	fresh := func() *observed.Unit {
		return &observed.Unit{Name: name, LoadState: "loaded", ActiveState: "inactive", SubState: "dead", Result: "success"}
	}
	tests := []struct {
		name      string
		managed   bool
		reloading bool
		signals   []*godbus.Signal
		unit      func(u *observed.Unit)
		want      uint64 // relayed start (0: none)
	}{
		{"exited, unloaded", true, false, []*godbus.Signal{service(100, 150, 0), unit(151), removed}, nil, 100},
		{"not managed", false, false, []*godbus.Signal{service(100, 150, 0), unit(151), removed}, nil, 0},
		// A reload's UnitRemoved keeps no last run (the unit comes back
		// with its history); a read that finds it unloaded after that
		// gets the figures last heard.
		{"removed by a reload", true, true, []*godbus.Signal{service(100, 150, 0), unit(151), removed}, nil, 100},
		{"never ran", true, false, []*godbus.Signal{service(0, 0, 0), removed}, nil, 0},
		{"unloaded, its UnitRemoved not yet heard", true, false, []*godbus.Signal{service(100, 150, 0), unit(151)}, nil, 100},
		{"running when last heard", true, false, []*godbus.Signal{service(100, 0, 0), unit(90)}, nil, 0},
		{"a job queued", true, false, []*godbus.Signal{service(100, 150, 0), unit(151), removed}, func(u *observed.Unit) { u.PendingJob = true }, 0},
		{"its file gone", true, false, []*godbus.Signal{service(100, 150, 0), unit(151), removed}, func(u *observed.Unit) { u.LoadState = "not-found" }, 0},
		{"a later run heard", true, false, []*godbus.Signal{service(100, 150, 0), unit(151), removed, service(200, 0, 0)}, nil, 0},
		{"read with its own history", true, false, []*godbus.Signal{service(100, 150, 0), unit(151), removed}, func(u *observed.Unit) { u.ExecMainStartTimestamp = 200 }, 200},
		{"running again", true, false, []*godbus.Signal{service(100, 150, 0), unit(151), removed}, func(u *observed.Unit) { u.ActiveState = "active" }, 0},
		{"loaded again and unloaded again", true, false, []*godbus.Signal{service(100, 150, 0), unit(151), removed, service(0, 0, 0), removed}, nil, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &Observer{hints: map[string]hint{}}
			if tt.managed {
				o.hints[name] = hint{}
			}
			o.cache.reloading = tt.reloading
			for _, s := range tt.signals {
				o.runSignal(s)
			}
			if _, kept := o.gone[name]; tt.unit == nil && tt.want != 0 && slices.Contains(tt.signals, removed) && kept == tt.reloading {
				t.Fatalf("last run kept on UnitRemoved: %v, reloading %v", kept, tt.reloading)
			}
			u := fresh()
			if tt.unit != nil {
				tt.unit(u)
			}
			o.relayLastRuns(map[string]*observed.Unit{name: u})
			if u.ExecMainStartTimestamp != tt.want {
				t.Fatalf("start %d, want %d", u.ExecMainStartTimestamp, tt.want)
			}
			if tt.want == 100 && (!u.ExitedOnItsOwn() || u.ExecMainExitTimestamp != 150 || u.ActiveExitTimestamp != 151) {
				t.Fatalf("relayed run %+v: want an exit by itself", u)
			}
			// Once a read found a history of its own, nothing is relayed.
			if tt.unit != nil && tt.want != 0 {
				u2 := fresh()
				o.relayLastRuns(map[string]*observed.Unit{name: u2})
				if u2.ExecMainStartTimestamp != 0 {
					t.Fatalf("relayed after a read with a history of its own")
				}
			}
		})
	}
}

// A watch that ends leaves nothing to relay: no signal would tell that
// the unit ran again.
func TestLastRunForgottenWhenTheWatchEnds(t *testing.T) {
	const name = "once.service"
	o := &Observer{hints: map[string]hint{name: {}}, gone: map[string]lastRun{name: {start: 100, exit: 150, activeExit: 151}},
		runs: map[string]lastRun{name: {start: 100, exit: 150, activeExit: 151}}}
	o.cacheStop()
	u := &observed.Unit{Name: name, LoadState: "loaded", ActiveState: "inactive"}
	o.relayLastRuns(map[string]*observed.Unit{name: u})
	if u.ExecMainStartTimestamp != 0 {
		t.Fatalf("relayed after the watch ended: %+v", u)
	}
}
