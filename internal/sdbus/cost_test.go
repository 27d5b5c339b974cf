package sdbus

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/e2e/sandbox"
)

// TestSandboxCallCostsPID1 measures what systemd's PID 1 spends answering
// each kind of call the observer could make, per call, from its CPU time
// (/proc/PID/schedstat) around batches of 100 (or 1000) pipelined calls
// to 100 loaded services. By hand (RESIL_BENCH=1); the figures behind
// observed/systemd's choice of properties and the property pipe's
// lifetime:
//
//	RESIL_BENCH=1 go test -count=1 -run TestSandboxCallCostsPID1 -v ./internal/sdbus/
func TestSandboxCallCostsPID1(t *testing.T) {
	if os.Getenv("RESIL_BENCH") == "" || os.Getenv(costInner) != "" {
		t.Skip("by hand: RESIL_BENCH=1") // not a prerequisite: a measurement
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const target = "/opt/resil-test/sdbus.test"
	sb := sandbox.New(t, sandbox.Options{Binds: []sandbox.Bind{{Host: exe, Target: target, ReadOnly: true}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var units []string
	for i := range 100 {
		u := fmt.Sprintf("cost%03d.service", i)
		units = append(units, u)
		if err := os.WriteFile(filepath.Join(sb.Root(), "etc/systemd/system", u), []byte("[Service]\nExecStart=/bin/sleep infinity\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := sb.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := sb.Systemctl(ctx, append([]string{"start"}, units...)...); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c, err := DialBus(ctx, filepath.Join(sb.Root(), "run/dbus/system_bus_socket"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Log("through the system bus (dbus-daemon), from the host:")
	measureCosts(ctx, t, c, units, fmt.Sprintf("/proc/%d/schedstat", sb.PID()))
	// The private socket, as the agent uses it as root: only from inside.
	cmd := sb.Command(ctx, target, "-test.run=^TestCallCostsPrivateInner$", "-test.v", "-test.count=1")
	cmd.Env = append(cmd.Env, costInner+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("on systemd's private socket, inside the sandbox:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
}

const costInner = "RESIL_SDBUS_COST_INNER"

func TestCallCostsPrivateInner(t *testing.T) {
	if os.Getenv(costInner) == "" {
		t.Skip("runs inside a sandbox, started by TestSandboxCallCostsPID1") // not a prerequisite: a helper run
	}
	ctx := context.Background()
	c, err := Dial(ctx)
	if err != nil || !c.Private() {
		t.Fatalf("dial the private socket: %v", err)
	}
	defer c.Close()
	var units []string
	for i := range 100 {
		units = append(units, fmt.Sprintf("cost%03d.service", i))
	}
	measureCosts(ctx, t, c, units, "/proc/1/schedstat")
}

// measureCosts logs PID 1's CPU time per call of each kind.
func measureCosts(ctx context.Context, t *testing.T, c *Conn, units []string, schedstat string) {
	pid1 := func() time.Duration {
		b, err := os.ReadFile(schedstat)
		if err != nil {
			t.Fatal(err)
		}
		ns, _ := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
		return time.Duration(ns)
	}
	path := func(u string) godbus.ObjectPath { return godbus.ObjectPath(unitPathPrefix + sddbus.PathBusEscape(u)) }
	measure := func(name string, calls []getCall, getAll bool) {
		p, err := dialPipe(ctx, c.addr, c.private, c.wire)
		if err != nil {
			t.Fatal(err)
		}
		defer p.close()
		var best time.Duration
		for range 5 {
			before := pid1()
			if !getAll {
				if _, _, err := p.getBatch(ctx, calls); err != nil {
					t.Fatal(err)
				}
			} else {
				for _, cl := range calls { // one at a time: GetAll replies are large
					p.wbuf = p.appendCall(p.wbuf[:0], cl.path, "org.freedesktop.DBus.Properties", "GetAll", "org.freedesktop.systemd1", cl.iface)
					if _, err := p.conn.Write(p.wbuf); err != nil {
						t.Fatal(err)
					}
					for {
						m, err := p.read()
						if err != nil {
							t.Fatal(err)
						}
						if m.replySerial == p.serial {
							break
						}
					}
				}
			}
			if d := pid1() - before; best == 0 || d < best {
				best = d
			}
		}
		t.Logf("%-34s %5d calls: PID 1 %7.2f ms, %6.1f µs a call (best of 5)", name, len(calls), best.Seconds()*1e3, best.Seconds()*1e6/float64(len(calls)))
	}
	get := func(iface, prop string) []getCall {
		var calls []getCall
		for _, u := range units {
			calls = append(calls, getCall{path: path(u), iface: iface, name: prop})
		}
		return calls
	}
	const unit, service = "org.freedesktop.systemd1.Unit", "org.freedesktop.systemd1.Service"
	measure("Get Unit.Id", get(unit, "Id"), false)
	measure("Get Service.MainPID", get(service, "MainPID"), false)
	measure("Get Unit.DropInPaths", get(unit, "DropInPaths"), false)
	measure("Get Unit.NeedDaemonReload", get(unit, "NeedDaemonReload"), false)
	measure("GetAll Service", get(service, ""), true)

	// A connection: dial, authenticate, Hello, one Get, close.
	before := pid1()
	const dials = 20
	for range dials {
		if _, _, err := c.GetUnitPropertiesContext(ctx, []PropertyQuery{{Unit: units[0], Props: []Property{{unit, "Id"}}}}); err != nil {
			t.Fatal(err)
		}
		c.closeIdlePipe()
	}
	t.Logf("%-34s %5d times: PID 1 %6.2f ms each", "a new pipe + one Get", dials, (pid1()-before).Seconds()*1e3/dials)
}
