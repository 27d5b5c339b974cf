package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The shipped watchdog-worker example (manifests/watchdog-worker.yaml and
// manifests/bin/watchdog-worker.sh, with a 2 s timeout and 1 s restart
// delay) under systemd: it pings through systemd-notify (NotifyAccess=all),
// and once it hangs systemd kills it ~timeout after its last ping, restarts
// it, and the agent records one WatchdogTimeout event for the kill.
func TestServiceWatchdogKillsHungWorker(t *testing.T) {
	e := newEnv(t)
	script, err := os.ReadFile("../manifests/bin/watchdog-worker.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.host, "watchdog-worker.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile("../manifests/watchdog-worker.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := string(manifest)
	for _, r := range [][2]string{
		{"/opt/resil/examples/bin/watchdog-worker.sh", hostMount + "/watchdog-worker.sh"},
		{"timeout: 10s", "timeout: 2s"},
		{"delay: 2s", "delay: 1s"},
	} {
		if !strings.Contains(m, r[0]) {
			t.Fatalf("manifest lacks %q", r[0])
		}
		m = strings.ReplaceAll(m, r[0], r[1])
	}
	e.write("watchdog-worker.yaml", m)
	const unit = "watchdog-worker.service"
	t.Cleanup(func() {
		if t.Failed() {
			j, _ := e.sb.Journal(e.ctx, "-u", unit, "-o", "cat")
			t.Logf("%s journal:\n%s", unit, j)
		}
	})
	a := e.startAgent()
	e.eventually("worker active", 30*time.Second, func() bool { return e.prop(unit, "ActiveState") == "active" })
	p := e.show(unit, "Type", "WatchdogUSec", "NotifyAccess", "Restart", "StatusText")
	if p["Type"] != "notify" || p["WatchdogUSec"] != "2s" || p["NotifyAccess"] != "all" || p["Restart"] != "always" {
		t.Fatalf("worker unit: %v", p)
	}
	// Healthy: pings keep it alive well past the timeout.
	time.Sleep(4 * time.Second)
	if p := e.show(unit, "ActiveState", "NRestarts", "StatusText"); p["ActiveState"] != "active" || p["NRestarts"] != "0" || !strings.Contains(p["StatusText"], "ping") {
		t.Fatalf("healthy worker restarted or not pinging: %v", p)
	}
	pid := e.prop(unit, "MainPID")

	if _, err := e.sb.Run(e.ctx, "touch", "/run/watchdog-worker.hang"); err != nil {
		t.Fatal(err)
	}
	hung := time.Now()
	var lastPing uint64
	var killed map[string]string
	e.eventually("watchdog kill", 15*time.Second, func() bool {
		m := e.show(unit, "Result", "SubState", "WatchdogTimestampMonotonic", "ExecMainExitTimestampMonotonic", "ExecMainStatus", "NRestarts")
		// Wait past stop-watchdog (SIGABRT sent) until the process exited.
		if m["Result"] == "watchdog" && m["ExecMainExitTimestampMonotonic"] != "0" {
			killed = m
			return true
		}
		if v, _ := strconv.ParseUint(m["WatchdogTimestampMonotonic"], 10, 64); v > 0 {
			lastPing = v
		}
		return false
	})
	// Let the restarted worker be healthy.
	if _, err := e.sb.Run(e.ctx, "rm", "-f", "/run/watchdog-worker.hang"); err != nil {
		t.Fatal(err)
	}
	exit, _ := strconv.ParseUint(killed["ExecMainExitTimestampMonotonic"], 10, 64)
	lat := time.Duration(exit-lastPing) * time.Microsecond
	t.Logf("killed %s after the last ping (WatchdogSec=2s), %s after the hang began; %v", lat.Round(time.Millisecond), time.Since(hung).Round(time.Millisecond), killed)
	if killed["ExecMainStatus"] != "6" { // SIGABRT
		t.Errorf("killed by signal %s, want 6 (SIGABRT)", killed["ExecMainStatus"])
	}
	// Not before WatchdogSec (systemd's own timestamps); how much later
	// is logged above, not bounded (no timing assertions).
	if lastPing == 0 || lat < 2*time.Second {
		t.Errorf("kill latency %s after the last ping, want at least WatchdogSec (2s)", lat)
	}
	e.eventually("worker restarted", 15*time.Second, func() bool {
		m := e.show(unit, "ActiveState", "NRestarts", "MainPID")
		return m["ActiveState"] == "active" && m["NRestarts"] == "1" && m["MainPID"] != pid
	})
	e.eventually("WatchdogTimeout event", 10*time.Second, func() bool { return a.hasEvent("WatchdogTimeout", "killed by the watchdog") })
	time.Sleep(5 * time.Second) // resyncs see the unit healthy again
	var evs []string
	for _, ev := range a.events() {
		if ev["reason"] == "WatchdogTimeout" {
			evs = append(evs, ev["message"].(string))
		}
	}
	if len(evs) != 1 || !strings.Contains(evs[0], unit+" killed by the watchdog (no WATCHDOG=1 within 2s); systemd restarts it") {
		t.Errorf("WatchdogTimeout events %q, want one naming the unit and the timeout", evs)
	}
	if p := e.show(unit, "ActiveState", "NRestarts"); p["ActiveState"] != "active" || p["NRestarts"] != "1" {
		t.Errorf("after recovery: %v", p)
	}
	journal, _ := e.sb.Journal(e.ctx, "-u", unit, "-o", "cat")
	if !strings.Contains(journal, "Watchdog timeout") {
		t.Errorf("journal:\n%s", journal)
	}
}

// The host watchdog: the owned manager drop-in is written, one daemon-reload
// makes the manager report the values, the missing device is a warning and a
// device change is reported as needing daemon-reexec; deleting the manifest
// removes the drop-in.
func TestHostWatchdog(t *testing.T) {
	e := newEnv(t)
	e.write("host.yaml", `apiVersion: resil.dev/v1
kind: Watchdog
metadata: {name: host}
spec: {runtimeTimeout: 30s, rebootTimeout: 5m, device: /dev/watchdog1}
`)
	out := e.apply(0)
	for _, want := range []string{"changed  write /etc/systemd/system.conf.d/50-resil-watchdog.conf", "daemon-reload",
		"warning  NoWatchdogDevice", "warning  DaemonReexecNeeded"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply lacks %q:\n%s", want, out)
		}
	}
	data, err := e.sb.ReadFile("/etc/systemd/system.conf.d/50-resil-watchdog.conf")
	if err != nil || !strings.Contains(string(data), "RuntimeWatchdogSec=30s") || !strings.Contains(string(data), "WatchdogDevice=/dev/watchdog1") {
		t.Fatalf("drop-in: %v\n%s", err, data)
	}
	mgr := func() string { return e.systemctl("show", "-p", "RuntimeWatchdogUSec", "-p", "RebootWatchdogUSec") }
	if got := mgr(); !strings.Contains(got, "RuntimeWatchdogUSec=30s") || !strings.Contains(got, "RebootWatchdogUSec=5min") {
		t.Errorf("manager properties:\n%s\napply:\n%s", got, out)
	}
	// Converged: no steps; diff shows the device facts.
	out, _, code := e.reconciler("diff")
	if code != 0 || !strings.Contains(out, "NoWatchdogDevice") || !strings.Contains(out, "daemon-reexec") {
		t.Errorf("diff exit %d:\n%s", code, out)
	}
	e.remove("host.yaml")
	out = e.apply(0)
	if !strings.Contains(out, "changed  remove /etc/systemd/system.conf.d/50-resil-watchdog.conf") {
		t.Errorf("prune:\n%s", out)
	}
	if _, err := e.sb.ReadFile("/etc/systemd/system.conf.d/50-resil-watchdog.conf"); err == nil {
		t.Errorf("drop-in still there")
	}
	if got := mgr(); !strings.Contains(got, "RuntimeWatchdogUSec=0") {
		t.Errorf("after prune:\n%s", got)
	}
}
