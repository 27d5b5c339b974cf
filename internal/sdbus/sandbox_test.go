package sdbus

// Tests against a real systemd 252 booted by e2e/sandbox. They skip when the
// host cannot run a sandbox (not root, no namespaces or overlayfs), unless
// RESIL_E2E_REQUIRE=1. Dial's private-socket path as root is covered from
// inside a sandbox by actuators/systemd's TestSandboxPrivateSocket.

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
)

func TestSandboxPrivateSocketFromHost(t *testing.T) {
	sb := sandbox.New(t, sandbox.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialPrivate(ctx, filepath.Join(sb.Root(), "run/systemd/private"))
	if err == nil {
		_, err = c.ListUnitsByNamesContext(ctx, []string{"dbus.service"})
		c.Close()
	}
	if err == nil {
		t.Fatal("the private socket answered a host peer; update the package doc and SYSTEMD-SANDBOX.md")
	}
	t.Logf("as documented: %v", err)
}

// Conn.GetAllPropertiesContext answers what go-systemd's method of the same
// name (which it shadows) answers.
func TestSandboxGetAllProperties(t *testing.T) {
	sb := sandbox.New(t, sandbox.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := DialBus(ctx, filepath.Join(sb.Root(), "run/dbus/system_bus_socket"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, unit := range []string{"dbus.service", "sandbox.target", "systemd-journald.socket", "no-such.service"} {
		got, err := c.GetAllPropertiesContext(ctx, unit)
		if err != nil {
			t.Fatalf("%s: %v", unit, err)
		}
		want, err := c.Conn.GetAllPropertiesContext(ctx, unit)
		if err != nil {
			t.Fatalf("%s (go-systemd): %v", unit, err)
		}
		// Counters and timestamps move between the two reads.
		for _, k := range []string{"MemoryCurrent", "CPUUsageNSec", "TasksCurrent", "IOReadBytes", "IOWriteBytes",
			"IOReadOperations", "IOWriteOperations", "IPIngressBytes", "IPEgressBytes", "IPIngressPackets", "IPEgressPackets",
			"StateChangeTimestamp", "StateChangeTimestampMonotonic", "InactiveEnterTimestamp", "InactiveEnterTimestampMonotonic",
			"MemoryAvailable", "EffectiveCPUs", "EffectiveMemoryNodes"} {
			delete(got, k)
			delete(want, k)
		}
		if len(got) < 50 || !reflect.DeepEqual(got, want) {
			for k, v := range want {
				if !reflect.DeepEqual(got[k], v) {
					t.Errorf("%s: %s = %#v, go-systemd says %#v", unit, k, got[k], v)
				}
			}
			t.Errorf("%s: %d properties, go-systemd %d", unit, len(got), len(want))
		}
	}
}
