package sdbus

import (
	"testing"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

func TestUnitNameFromPath(t *testing.T) {
	for p, want := range map[godbus.ObjectPath]string{
		"/org/freedesktop/systemd1/unit/worker_2eservice":                                            "worker.service",
		"/org/freedesktop/systemd1/unit/getty_40tty1_2eservice":                                      "getty@tty1.service",
		"/org/freedesktop/systemd1/unit/a_2db_5fc_2etimer":                                           "a-b_c.timer",
		"/org/freedesktop/systemd1/unit/" + godbus.ObjectPath(sddbus.PathBusEscape("x-y.z.service")): "x-y.z.service",
	} {
		if got, ok := UnitNameFromPath(p); !ok || got != want {
			t.Errorf("UnitNameFromPath(%s) = %q, %v; want %q", p, got, ok, want)
		}
	}
	for _, p := range []godbus.ObjectPath{"/org/freedesktop/systemd1", "/org/freedesktop/systemd1/unit/", "/org/freedesktop/systemd1/job/12"} {
		if _, ok := UnitNameFromPath(p); ok {
			t.Errorf("UnitNameFromPath(%s) ok", p)
		}
	}
}
