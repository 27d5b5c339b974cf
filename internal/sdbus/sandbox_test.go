package sdbus

// Tests against a real systemd 252 booted by e2e/sandbox. They skip when the
// host cannot run a sandbox (not root, no namespaces or overlayfs), unless
// RESIL_E2E_REQUIRE=1. Dial's private-socket path as root is covered from
// inside a sandbox by actuators/systemd's TestSandboxPrivateSocket.

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"

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
	ctx, c := sandboxBus(t)
	for _, unit := range []string{"dbus.service", "sandbox.target", "systemd-journald.socket", "no-such.service"} {
		got, err := c.GetAllPropertiesContext(ctx, unit)
		if err != nil {
			t.Fatalf("%s: %v", unit, err)
		}
		sd, _, err := c.godbus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, err := sd.GetAllPropertiesContext(ctx, unit)
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

// GetUnitPropertiesContext reads through the property pipe what it reads
// through godbus (an address the pipe does not dial), value for value.
func TestSandboxUnitPropertiesPipeAndGodbus(t *testing.T) {
	ctx, c := sandboxBus(t)
	qs := []PropertyQuery{
		{Unit: "dbus.service", Props: []Property{{"org.freedesktop.systemd1.Unit", "FragmentPath"}, {"org.freedesktop.systemd1.Unit", "DropInPaths"},
			{"org.freedesktop.systemd1.Unit", "NeedDaemonReload"}, {"org.freedesktop.systemd1.Service", "MainPID"},
			{"org.freedesktop.systemd1.Service", "ExecMainStartTimestamp"}, {"org.freedesktop.systemd1.Service", "ExecMainStatus"},
			{"org.freedesktop.systemd1.Service", "Result"}}},
		{Unit: "sandbox.target", Props: []Property{{"org.freedesktop.systemd1.Unit", "Triggers"}, {"org.freedesktop.systemd1.Unit", "NoSuchProperty"}}},
	}
	piped, perrs, err := c.GetUnitPropertiesContext(ctx, qs)
	if err != nil {
		t.Fatal(err)
	}
	if c.pipeBatches.Load() != 1 {
		t.Fatal("the pipe was not used")
	}
	if _, _, err := c.godbus(ctx); err != nil { // dialed on first use, at the real address
		t.Fatal(err)
	}
	c.addr = "tcp:host=localhost,port=1" // not for the pipe: godbus
	c.closeIdlePipe()
	viaGodbus, gerrs, err := c.GetUnitPropertiesContext(ctx, qs)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(piped, viaGodbus) {
		t.Errorf("pipe %v\ngodbus %v", piped, viaGodbus)
	}
	if perrs[0] != nil || gerrs[0] != nil || perrs[1] == nil || gerrs[1] == nil {
		t.Errorf("errors: pipe %v, godbus %v; want only sandbox.target's unknown property", perrs, gerrs)
	}
	if c.pipeBatches.Load() != 1 {
		t.Error("the godbus read went through the pipe")
	}
	if pid, _ := piped[0]["MainPID"].(uint32); pid == 0 {
		t.Errorf("dbus.service MainPID = %v", piped[0]["MainPID"])
	}
}

// sandboxBus boots a sandboxed systemd and dials its system bus; both end
// with the test.
func sandboxBus(t *testing.T) (context.Context, *Conn) {
	t.Helper()
	sb := sandbox.New(t, sandbox.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	c, err := DialBus(ctx, filepath.Join(sb.Root(), "run/dbus/system_bus_socket"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ctx, c
}

// ListUnitsByNamesContext through the pipe gives what go-systemd gives
// through godbus, field for field, for loaded, unknown and repeated names.
func TestSandboxListUnitsPipeAndGodbus(t *testing.T) {
	ctx, c := sandboxBus(t)
	names := []string{"dbus.service", "sandbox.target", "absent.service", "dbus.service", "-.slice"}
	for i := range 300 {
		names = append(names, fmt.Sprintf("many%03d.service", i))
	}
	wire0 := c.Wire().Calls()
	piped, err := c.ListUnitsByNamesContext(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Wire().Calls() - wire0; got != 1 {
		t.Errorf("%d calls on the wire, want 1", got)
	}
	sd, _, err := c.godbus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	viaGodbus, err := sd.ListUnitsByNamesContext(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	if len(piped) != len(names) || !reflect.DeepEqual(piped, viaGodbus) {
		t.Errorf("pipe (%d) %+v\ngodbus (%d) %+v", len(piped), piped[:5], len(viaGodbus), viaGodbus[:5])
	}
	if piped[0].ActiveState != "active" || piped[2].LoadState != "not-found" {
		t.Errorf("statuses: %+v", piped[:3])
	}
	if _, _, err := c.godbus(ctx); err != nil { // dialed on first use, at the real address
		t.Fatal(err)
	}
	c.addr = "tcp:host=localhost,port=1" // not for the pipe: godbus
	c.closeIdlePipe()
	fallback, err := c.ListUnitsByNamesContext(ctx, names[:3])
	if err != nil || !reflect.DeepEqual(fallback, viaGodbus[:3]) {
		t.Errorf("fallback: %v %+v", err, fallback)
	}
}

// Calls in a row share one property pipe; it is closed once idle, and the
// next call dials again.
func TestSandboxPipeKeptWhileBusy(t *testing.T) {
	ctx, c := sandboxBus(t)
	q := []PropertyQuery{{Unit: "dbus.service", Props: []Property{{"org.freedesktop.systemd1.Service", "MainPID"}}}}
	for range 3 {
		if _, _, err := c.GetUnitPropertiesContext(ctx, q); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ListUnitsByNamesContext(ctx, []string{"dbus.service"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.pipeDials.Load(); n != 1 {
		t.Errorf("%d pipes dialed for six calls in a row, want 1", n)
	}
	time.Sleep(pipeIdle + time.Second)
	c.pipeMu.Lock()
	idle := c.idlePipe
	c.pipeMu.Unlock()
	if idle != nil {
		t.Error("the pipe is still open after pipeIdle")
	}
	if _, _, err := c.GetUnitPropertiesContext(ctx, q); err != nil {
		t.Fatal(err)
	}
	if n := c.pipeDials.Load(); n != 2 {
		t.Errorf("%d pipes dialed, want 2", n)
	}
	// A daemon-reload goes on the pipe: it returns once systemd loaded
	// the units again (a later UnitsLoadTimestamp), the pipe skipped the
	// signal per unit that came before the reply, and stays for the next
	// call.
	loads := func() uint64 {
		t.Helper()
		v, err := c.GetManagerPropertyContext(ctx, "UnitsLoadTimestamp")
		if err != nil {
			t.Fatal(err)
		}
		return v.Value().(uint64)
	}
	before := loads()
	if err := c.ReloadContext(ctx); err != nil {
		t.Fatal(err)
	}
	if after := loads(); after <= before {
		t.Errorf("UnitsLoadTimestamp %d after the reload, %d before", after, before)
	}
	if _, err := c.ListUnitsByNamesContext(ctx, []string{"dbus.service"}); err != nil {
		t.Fatal(err)
	}
	if n := c.pipeDials.Load(); n != 2 {
		t.Errorf("%d pipes dialed after the reload and a list, want 2", n)
	}
}

// Prewarm's pipe is the one the first calls use; Close waits for its dial.
func TestSandboxPrewarm(t *testing.T) {
	sb := sandbox.New(t, sandbox.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bus := filepath.Join(sb.Root(), "run/dbus/system_bus_socket")
	c, err := DialBus(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Prewarm()
	c.Prewarm() // once
	if _, err := c.ListUnitsByNamesContext(ctx, []string{"dbus.service"}); err != nil {
		t.Fatal(err)
	}
	q := []PropertyQuery{{Unit: "dbus.service", Props: []Property{{"org.freedesktop.systemd1.Service", "MainPID"}}}}
	if _, _, err := c.GetUnitPropertiesContext(ctx, q); err != nil {
		t.Fatal(err)
	}
	if n := c.pipeDials.Load(); n != 1 {
		t.Errorf("%d pipes dialed after Prewarm and two calls, want 1", n)
	}
	c2, err := DialBus(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	c2.Prewarm()
	c2.Close() // waits for the dial, closes its pipe
	c2.pipeMu.Lock()
	idle := c2.idlePipe
	c2.pipeMu.Unlock()
	if idle != nil {
		t.Error("a pipe is kept after Close")
	}
}

// A read-only command's calls (the unit list, unit and manager properties)
// all go on the one connection Dial made, the property pipe; the
// go-systemd connection is dialed by the first call that needs it (a job),
// and the manager property read through the pipe is what godbus reads.
func TestSandboxReadsNeedOneConnection(t *testing.T) {
	ctx, c := sandboxBus(t)
	if _, err := c.ListUnitsByNamesContext(ctx, []string{"dbus.service"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetUnitPropertiesContext(ctx, []PropertyQuery{{Unit: "dbus.service",
		Props: []Property{{"org.freedesktop.systemd1.Service", "MainPID"}}}}); err != nil {
		t.Fatal(err)
	}
	piped := map[string]godbus.Variant{}
	for _, p := range []string{"UnitPath", "UnitsLoadTimestamp", "RuntimeWatchdogUSec", "WatchdogDevice"} {
		v, err := c.GetManagerPropertyContext(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		piped[p] = v
	}
	if _, err := c.GetManagerPropertyContext(ctx, "NoSuchProperty"); err == nil {
		t.Error("NoSuchProperty: no error")
	}
	c.sdMu.Lock()
	dialed := c.sd != nil
	c.sdMu.Unlock()
	if dialed || c.pipeDials.Load() != 1 {
		t.Fatalf("after reads: go-systemd connection dialed %v, %d pipes; want none and 1", dialed, c.pipeDials.Load())
	}
	sd, _, err := c.godbus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p, v := range piped {
		w, err := sd.GetManagerProperty(p)
		if err != nil {
			t.Fatal(err)
		}
		if v.String() != w {
			t.Errorf("%s: pipe %s, godbus %s", p, v.String(), w)
		}
	}
	if _, err := c.StartUnitContext(ctx, "sandbox.target", "replace", nil); err != nil {
		t.Fatal(err)
	}
	if again, _, _ := c.godbus(ctx); again != sd {
		t.Error("the go-systemd connection was dialed twice")
	}
	// A closed connection (systemd re-executed) is dialed again.
	c.sdMu.Lock()
	c.calls.Close()
	c.sdMu.Unlock()
	if _, err := c.GetManagerPropertyContext(ctx, "Version"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartUnitContext(ctx, "sandbox.target", "replace", nil); err != nil {
		t.Fatalf("after the connection closed: %v", err)
	}
	if again, _, _ := c.godbus(ctx); again == sd {
		t.Error("a closed go-systemd connection was not dialed again")
	}
}
