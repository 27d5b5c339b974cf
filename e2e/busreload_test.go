package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// signalsRE finds the D-Bus signal count `apply --log-level debug` logs
// when it closes its systemd connection.
var signalsRE = regexp.MustCompile(`systemd connection closed.*\bsignals"?[=:] ?(\d+)`)

// applySignals changes web's environment to mode, runs apply with env
// added, checks that web was restarted with it, and returns how many D-Bus
// signals the command received.
func (e *env) applySignals(mode string, env ...string) int {
	e.t.Helper()
	pid := e.prop("web.service", "MainPID")
	e.write("web.yaml", svc("web", "  environment: {MODE: "+mode+"}\n"))
	cmd := e.sb.Command(e.ctx, agentBin, "apply", "--backend", "systemd", "--state-dir", "/var/lib/resil",
		"--log-format", "console", "--log-level", "debug", "--manifests", manifestsDir)
	cmd.Env = append(cmd.Env, env...)
	out, errOut, code := runCLI(e.t, cmd)
	if code != 0 {
		e.t.Fatalf("apply (%s) exit %d\nstdout:\n%s\nstderr:\n%s", mode, code, out, errOut)
	}
	p := e.show("web.service", "Environment", "ActiveState", "MainPID")
	if p["Environment"] != "MODE="+mode || p["ActiveState"] != "active" || p["MainPID"] == pid || p["MainPID"] == "0" {
		e.t.Fatalf("apply (%s): web.service %v, was MainPID %s\nstdout:\n%s", mode, p, pid, out)
	}
	m := signalsRE.FindStringSubmatch(errOut)
	if m == nil {
		e.t.Fatalf("apply (%s): no signal count in its debug log:\n%s", mode, errOut)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// An `apply` that changed one manifest reloads systemd and restarts the
// unit through the system bus daemon, with no connection left on
// systemd's private socket meanwhile: PID 1 then sends it none of the
// reload's signals (on the private socket it sends every peer a few per
// unit). Without a bus daemon, with DBUS_SYSTEM_BUS_ADDRESS set, or with
// RESIL_RELOAD_BUS=0 it does both on the private socket, as before, with
// the same outcome.
func TestApplyReloadsThroughBus(t *testing.T) {
	e := newEnv(t)
	const n = 30
	e.write("web.yaml", svc("web", ""))
	for i := range n - 1 {
		name := fmt.Sprintf("s%02d", i)
		e.write(name+".yaml", svc(name, ""))
	}
	e.apply(0)
	e.eventually("web active", 30*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })

	if got := e.applySignals("bus"); got >= n {
		t.Errorf("apply through the bus received %d signals, want fewer than %d (one per unit or more: the reload's)", got, n)
	}
	if got := e.applySignals("private", "RESIL_RELOAD_BUS=0"); got < n {
		t.Errorf("apply on the private socket received %d signals, want at least %d (the reload's; is the count measured?)", got, n)
	}
	// A bus address chosen for the process may not be its systemd's bus:
	// the private socket.
	if got := e.applySignals("envbus", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket"); got < n {
		t.Errorf("apply with DBUS_SYSTEM_BUS_ADDRESS set received %d signals, want at least %d (the reload's, on the private socket)", got, n)
	}
	// No bus daemon (its socket file stays, refusing connections): the
	// private socket.
	e.systemctl("stop", "dbus.socket", "dbus.service")
	if st := e.prop("dbus.socket", "ActiveState"); st == "active" {
		t.Fatalf("dbus.socket still %s", st)
	}
	if got := e.applySignals("nobus"); got < n {
		t.Errorf("apply without a bus daemon received %d signals, want at least %d (the reload's, on the private socket)", got, n)
	}
}
