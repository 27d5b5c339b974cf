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
		m := e.show(unit, "Result", "SubState", "ExecMainExitTimestampMonotonic", "StateChangeTimestampMonotonic", "ExecMainStatus", "NRestarts", "MainPID")
		if m["Result"] == "watchdog" {
			killed = m
			return true
		}
		return false
	})
	ping, _ := strconv.ParseUint(lastPing, 10, 64)
	// The watchdog fired when systemd entered stop-watchdog (SIGABRT sent;
	// the Go runtime then dumps its goroutines) or, if that was missed, at
	// the latest when the process exited.
	exit, _ := strconv.ParseUint(killed["ExecMainExitTimestampMonotonic"], 10, 64)
	if killed["SubState"] == "stop-watchdog" {
		exit, _ = strconv.ParseUint(killed["StateChangeTimestampMonotonic"], 10, 64)
	}
	t.Logf("SIGSTOP → Result=watchdog seen after %s; last ping at %d, exit at %d (monotonic µs); %v",
		time.Since(stopped).Round(time.Millisecond), ping, exit, killed)
	if ping > 0 && exit > ping {
		lat := time.Duration(exit-ping) * time.Microsecond
		t.Logf("watchdog kill %s after the last ping (WatchdogSec=3s)", lat.Round(time.Millisecond))
		// Not before WatchdogSec; how much later is logged, not bounded.
		if lat < 3*time.Second {
			t.Errorf("kill latency %s, want at least WatchdogSec (3s)", lat)
		}
	} else if exit != 0 {
		t.Errorf("no last ping before the kill (WatchdogTimestampMonotonic %q)", lastPing)
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

// Boot with an installed agent and a persistent timer with maxLateness that
// missed its run by 30 h: the timer is ordered after the agent
// (After=resil-agent.service), so its start waits for the agent's first
// pass, which refreshes the stamp (the timer's start job is pending, so the
// agent does not queue another). systemd then starts the timer and does not
// fire the stale run.
func TestInstalledAgentSkipsLateRunAtBoot(t *testing.T) {
	e := newEnv(t)
	if out, errOut, code := e.reconciler("install", "--binary", agentBin, "--manifests", "/etc/resil.d", "--resync", "1m"); code != 0 {
		t.Fatalf("install exit %d:\n%s\n%s", code, out, errOut)
	}
	late := timer("late", `  schedule: ["*-*-* 03:00:00 UTC"]
  persistent: true
  maxLateness: 1h
  accuracy: 1ms
  command: ["/bin/sh", "-c", "date +%s >> /run/late"]
`)
	if err := e.sb.WriteFile("/etc/resil.d/late.yaml", []byte(late), 0o644); err != nil {
		t.Fatal(err)
	}
	e.eventually("late.timer active", 30*time.Second, func() bool { return e.prop("late.timer", "ActiveState") == "active" })
	if after := e.prop("late.timer", "After"); !strings.Contains(after, "resil-agent.service") {
		t.Fatalf("late.timer After=%s", after)
	}
	// "Power off": both stopped; the host stays down two days.
	e.systemctl("stop", "resil-agent.service", "late.timer")
	old := time.Now().Add(-54 * time.Hour).UTC().Format("2006-01-02 15:04:05")
	if _, err := e.sb.Run(e.ctx, "touch", "-d", old+" UTC", "/var/lib/systemd/timers/stamp-late.timer"); err != nil {
		t.Fatal(err)
	}
	// "Boot": one transaction starting both, as multi-user.target and
	// timers.target would.
	boot := "[Unit]\nWants=resil-agent.service late.timer\n"
	if err := e.sb.WriteFile("/etc/systemd/system/fakeboot.target", []byte(boot), 0o644); err != nil {
		t.Fatal(err)
	}
	e.systemctl("daemon-reload")
	start := time.Now()
	e.systemctl("start", "--no-block", "fakeboot.target")
	e.eventually("late.timer active after boot", 30*time.Second, func() bool { return e.prop("late.timer", "ActiveState") == "active" })
	t.Logf("timer active %s after boot", time.Since(start).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	if l := e.lines("/run/late"); l != nil {
		t.Errorf("the stale run fired at boot: %v", l)
	}
	journal, _ := e.sb.Journal(e.ctx, "-u", "resil-agent.service", "-o", "cat")
	if !strings.Contains(journal, "TimerMissed") || !strings.Contains(journal, "refresh-stamp late.timer") {
		t.Errorf("agent journal lacks the skip:\n%s", journal)
	}
	if strings.Contains(journal, `"step failed"`) {
		t.Errorf("a step failed at boot:\n%s", journal)
	}
	// At boot the agent left the pending start job to systemd: it planned no
	// "start late.timer (inactive, want active)", which would have waited on
	// that job, i.e. on its own READY=1.
	if countLines(journal, "start late.timer (inactive") != 0 {
		t.Errorf("the agent queued its own start of late.timer at boot:\n%s", journal)
	}
	if p := e.show("late.timer", "NextElapseUSecRealtime"); !strings.Contains(p["NextElapseUSecRealtime"], "03:00:00") {
		t.Errorf("next run: %v", p)
	}
}

// The agent's own unit, as `reconciler install` writes it, is rated by
// `systemd-analyze security` at an exposure of at most 2.5 (of 10), and
// the agent still converges a service under it.
func TestInstalledAgentExposure(t *testing.T) {
	e := newEnv(t)
	if out, errOut, code := e.reconciler("install", "--binary", agentBin, "--manifests", "/etc/resil.d", "--resync", "1m"); code != 0 {
		t.Fatalf("install exit %d:\n%s\n%s", code, out, errOut)
	}
	const unit = "resil-agent.service"
	table, err := e.sb.Run(e.ctx, "systemd-analyze", "security", "--no-pager", unit)
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, table)
	}
	level := ""
	for _, l := range strings.Split(table, "\n") {
		if strings.Contains(l, "Overall exposure level") {
			level = strings.TrimSpace(l)
		}
	}
	t.Logf("%s", level)
	if _, err := e.sb.Run(e.ctx, "systemd-analyze", "security", "--no-pager", "--threshold=25", unit); err != nil {
		t.Errorf("exposure above 2.5: %s\n%s", level, table)
	}
	if err := e.sb.WriteFile("/etc/resil.d/web.yaml", []byte(svc("web", "")), 0o644); err != nil {
		t.Fatal(err)
	}
	e.eventually("web.service converged by the hardened agent", 30*time.Second, func() bool {
		m := e.show("web.service", "ActiveState", "UnitFileState")
		return m["ActiveState"] == "active" && m["UnitFileState"] == "enabled"
	})
	// Nothing the agent does needs more: no error or warning in its log
	// (a denied system call or file would show as one).
	j, _ := e.sb.Journal(e.ctx, "-u", unit, "-o", "cat")
	if !strings.Contains(j, "first pass done") {
		t.Errorf("the agent's log is not in the journal")
	}
	for _, l := range strings.Split(j, "\n") {
		if strings.Contains(l, `"level":"error"`) || strings.Contains(l, `"level":"warn"`) || strings.Contains(l, "operation not permitted") {
			t.Errorf("hardened agent logged: %s", l)
		}
	}
	if t.Failed() {
		t.Logf("agent journal:\n%s", j)
	}
}
