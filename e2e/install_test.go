package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// `reconciler install` inside the sandbox: the agent's own hardened unit
// comes up active after READY=1 with a STATUS= summary; frozen with SIGSTOP
// it stops pinging and systemd kills (Result watchdog) and restarts it; the
// restarted agent converges manifests dropped into /etc/resil.d.
func TestInstallWatchdogRestart(t *testing.T) {
	e := newEnv(t)
	out, errOut, code := e.reconciler("install", "--dry-run", "--binary", agentBin, "--manifests", "/etc/resil.d")
	if code != 0 || !strings.Contains(out, "would write /usr/local/bin/reconciler") || !strings.Contains(out, "WatchdogSec=120s") {
		t.Fatalf("install --dry-run exit %d:\n%s\n%s", code, out, errOut)
	}
	if _, err := e.sb.ReadFile("/etc/systemd/system/resil-agent.service"); err == nil {
		t.Fatalf("--dry-run wrote the unit")
	}

	start := time.Now()
	out, errOut, code = e.reconciler("install", "--binary", agentBin, "--manifests", "/etc/resil.d",
		"--watchdog-sec", "3s", "--restart-sec", "1s", "--resync", "1m")
	if code != 0 {
		t.Fatalf("install exit %d:\n%s\n%s", code, out, errOut)
	}
	t.Logf("install took %s:\n%s", time.Since(start).Round(time.Millisecond), out)
	const unit = "resil-agent.service"
	p := e.show(unit, "ActiveState", "SubState", "StatusText", "MainPID", "UnitFileState", "ExecStart", "ProtectSystem", "NRestarts")
	if p["ActiveState"] != "active" || p["UnitFileState"] != "enabled" || !strings.Contains(p["StatusText"], "0 objects") ||
		p["ProtectSystem"] != "strict" || !strings.Contains(p["ExecStart"], "/usr/local/bin/reconciler") {
		t.Fatalf("agent unit after install: %v", p)
	}
	if st, err := e.sb.Run(e.ctx, "stat", "-c", "%a %U", "/etc/resil.d", "/usr/local/bin/reconciler"); err != nil || st != "755 root\n755 root\n" {
		t.Errorf("installed modes: %q %v", st, err)
	}
	// A second install changes nothing and leaves the agent running.
	out, _, code = e.reconciler("install", "--binary", agentBin, "--manifests", "/etc/resil.d",
		"--watchdog-sec", "3s", "--restart-sec", "1s", "--resync", "1m")
	if code != 0 || !strings.Contains(out, "already active") || e.prop(unit, "MainPID") != p["MainPID"] {
		t.Errorf("second install disturbed the agent (exit %d):\n%s", code, out)
	}

	// Freeze the agent: its loop can no longer pass, so no WATCHDOG=1.
	pid := p["MainPID"]
	if _, err := e.sb.Run(e.ctx, "/bin/kill", "-STOP", pid); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	lastPing := e.prop(unit, "WatchdogTimestampMonotonic")
	var killed map[string]string
	e.eventually("watchdog kill", 20*time.Second, func() bool {
		m := e.show(unit, "Result", "SubState", "ExecMainExitTimestampMonotonic", "ExecMainStatus", "NRestarts", "MainPID")
		if m["Result"] == "watchdog" {
			killed = m
			return true
		}
		return false
	})
	ping, _ := strconv.ParseUint(lastPing, 10, 64)
	exit, _ := strconv.ParseUint(killed["ExecMainExitTimestampMonotonic"], 10, 64)
	if ping > 0 && exit > ping {
		lat := time.Duration(exit-ping) * time.Microsecond
		t.Logf("watchdog kill %s after the last ping (WatchdogSec=3s), %s after SIGSTOP; state %v", lat.Round(time.Millisecond),
			time.Since(stopped).Round(time.Millisecond), killed)
		if lat < 3*time.Second || lat > 4*time.Second {
			t.Errorf("kill latency %s, want ~3s", lat)
		}
	}
	e.eventually("agent restarted and ready", 30*time.Second, func() bool {
		m := e.show(unit, "ActiveState", "MainPID", "NRestarts", "StatusText")
		return m["ActiveState"] == "active" && m["MainPID"] != pid && m["MainPID"] != "0" && m["NRestarts"] == "1"
	})
	journal, _ := e.sb.Journal(e.ctx, "-u", unit, "-o", "cat")
	if !strings.Contains(journal, "Watchdog timeout") {
		t.Errorf("journal lacks the watchdog timeout:\n%s", journal)
	}

	// The restarted agent converges what is dropped into /etc/resil.d.
	if err := e.sb.WriteFile("/etc/resil.d/web.yaml", []byte(svc("web", "")), 0o644); err != nil {
		t.Fatal(err)
	}
	e.eventually("web.service converged by the installed agent", 30*time.Second, func() bool {
		m := e.show("web.service", "ActiveState", "UnitFileState")
		return m["ActiveState"] == "active" && m["UnitFileState"] == "enabled"
	})
	e.eventually("status counts the object", 10*time.Second, func() bool {
		return strings.Contains(e.prop(unit, "StatusText"), "1 objects")
	})
	if t.Failed() {
		j, _ := e.sb.Journal(e.ctx, "-u", unit, "-o", "cat")
		t.Logf("agent journal:\n%s", j)
	}
}
