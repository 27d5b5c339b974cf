package systemd

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/observed"
)

func TestFillUnitTimerAndJobFields(t *testing.T) {
	u := &observed.Unit{Name: "backup.timer"}
	err := fillUnit(u, map[string]any{
		"ExecMainExitTimestamp":  uint64(1764147602000000),
		"Triggers":               []string{"backup.service"},
		"Job":                    godbus.MakeVariant([]any{uint32(42), godbus.ObjectPath("/org/freedesktop/systemd1/job/42")}),
		"NextElapseUSecRealtime": ^uint64(0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if u.ExecMainExitTimestamp != 1764147602000000 || len(u.Triggers) != 1 || !u.PendingJob || u.NextElapseUSecRealtime != 0 {
		t.Errorf("unit: %+v", u)
	}
	u = &observed.Unit{Name: "idle.timer"}
	if err := fillUnit(u, map[string]any{"Job": []any{uint32(0), godbus.ObjectPath("/")}}); err != nil || u.PendingJob {
		t.Errorf("no job: %+v %v", u, err)
	}
}

func TestReadStamp(t *testing.T) {
	root := t.TempDir()
	dir := "/var/lib/systemd/timers"
	if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	p := filepath.Join(root, dir, "stamp-backup.timer")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, when, when); err != nil {
		t.Fatal(err)
	}
	o := New(nil, "/etc/systemd/system", WithRoot(root))
	u := &observed.Unit{Name: "backup.timer"}
	o.readStamp(u)
	if u.StampPath != dir+"/stamp-backup.timer" || u.StampUSec != uint64(when.UnixMicro()) {
		t.Errorf("stamp: %q %d", u.StampPath, u.StampUSec)
	}
	u = &observed.Unit{Name: "never.timer"}
	o.readStamp(u)
	if u.StampPath != dir+"/stamp-never.timer" || u.StampUSec != 0 {
		t.Errorf("missing stamp: %q %d", u.StampPath, u.StampUSec)
	}
}
