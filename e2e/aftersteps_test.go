package e2e

import (
	"strings"
	"testing"
	"time"
)

// The agent's own restart (a manifest edit under run) is in the restart
// ledger as the agent's as soon as its pass ends: its own jobs wake no
// pass, so before Loop.AfterSteps the restart was counted by the next
// pass (a resync minutes later) or, when the agent stopped first, by the
// next agent, as a manual restart (a Warning counted toward storms).
// status shows what the steps left at once too: a service switched to
// stopped reads stopped, not running.
func TestOwnRestartCountedAtOnce(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", "  environment: {MODE: one}\n"))
	a := e.startAgent("--resync", "10m")
	e.eventually("first pass", 60*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	e.eventually("web active", 30*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	pid := e.prop("web.service", "MainPID")
	e.write("web.yaml", svc("web", "  environment: {MODE: two}\n"))
	e.eventually("edit applied", 30*time.Second, func() bool {
		p := e.show("web.service", "Environment", "ActiveState", "MainPID")
		return p["Environment"] == "MODE=two" && p["ActiveState"] == "active" && p["MainPID"] != pid && p["MainPID"] != "0"
	})
	e.eventually("the agent's restart in the ledger", 10*time.Second, func() bool {
		return a.hasEvent("Restarted", "restarted (cause agent)")
	})
	e.stopAgent(a, 20*time.Second)

	// The next agent continues from the state after the restart.
	a = e.startAgent("--resync", "10m")
	e.eventually("the next agent's first pass", 60*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	e.write("web.yaml", svc("web", "  environment: {MODE: two}\n  state: stopped\n"))
	e.eventually("web stopped", 30*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "inactive" })
	e.eventually("status showing web stopped", 10*time.Second, func() bool {
		out, _, _ := e.reconciler("status", "-o", "json")
		return strings.Contains(out, `"desired": "stopped"`) && !strings.Contains(out, "running")
	})
	e.stopAgent(a, 20*time.Second)
	out, _, code := e.reconciler("events", "--reason", "Restarted", "--object", "web")
	if code != 0 || strings.Count(out, "cause agent") != 1 || strings.Contains(out, "cause manual") {
		t.Fatalf("Restarted events: exit %d, want exactly one, cause agent:\n%s", code, out)
	}
}

// On a host driven only by `apply`, an apply with nothing to do records
// the restarts since the last one (a manual `systemctl restart`, an
// automatic restart after a crash) when it sees them: before, only the
// next apply that changed something did, stamped with its own time.
func TestNoopApplyRecordsRestarts(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	e.apply(0)
	restarted := func(cause string) bool {
		if out := e.apply(0); !strings.Contains(out, "0 steps") {
			t.Fatalf("apply had something to do:\n%s", out)
		}
		out, _, code := e.reconciler("events", "--reason", "Restarted", "--object", "web")
		return code == 0 && strings.Contains(out, "cause "+cause)
	}
	e.systemctl("restart", "web.service")
	if !restarted("manual") {
		t.Fatal("a no-op apply after systemctl restart recorded no manual restart")
	}
	pid := e.prop("web.service", "MainPID")
	e.systemctl("kill", "--signal=KILL", "web.service")
	e.eventually("web restarted by systemd", 30*time.Second, func() bool {
		p := e.show("web.service", "ActiveState", "MainPID")
		return p["ActiveState"] == "active" && p["MainPID"] != pid && p["MainPID"] != "0"
	})
	if !restarted("auto") {
		t.Fatal("a no-op apply after a crash and systemd's restart recorded no automatic restart")
	}
}
