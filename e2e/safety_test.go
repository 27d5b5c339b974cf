package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Operator safety rails (issue 14) against a sandboxed systemd, with a
// running agent whose resync is long, so only the rails themselves (the
// lease poll, the expiry and deadline wake-ups) and D-Bus signals wake it.
// The process backend's counterparts are in cmd/reconciler/safety_test.go.

// A pause lease: drift of the paused unit is recorded (DriftReported,
// naming the lease), not corrected, while another unit's drift is; diff
// says what it would do; the agent converges the unit when the lease
// expires (LeaseExpired) and at once on resume.
func TestPauseLeaseSystemd(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	e.write("db.yaml", svc("db", ""))
	e.apply(0)
	a := e.startAgent("--resync", "10m")
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })

	out, errOut, code := e.reconciler("pause", "web", "--for", "1h", "--reason", "hotfix INC-123")
	if code != 0 || !strings.Contains(out, "web paused until ") {
		t.Fatalf("pause: exit %d\n%s%s", code, out, errOut)
	}
	e.systemctl("stop", "web.service", "db.service")
	e.eventually("db.service active again", 30*time.Second, func() bool { return e.prop("db.service", "ActiveState") == "active" })
	e.eventually("DriftReported naming the lease", 10*time.Second, func() bool {
		return a.hasEvent("DriftReported", "not corrected: paused until") && a.hasEvent("DriftReported", "by root: hotfix INC-123")
	})
	if s := e.prop("web.service", "ActiveState"); s != "inactive" {
		t.Fatalf("paused web.service corrected: %s", s)
	}
	out, _, code = e.reconciler("diff")
	if code != 0 || !strings.Contains(out, "Service/web: paused until ") || !strings.Contains(out, "by root: hotfix INC-123") ||
		!strings.Contains(out, "would start web.service") {
		t.Fatalf("diff while paused: exit %d\n%s", code, out)
	}
	out, _, _ = e.reconciler("status")
	if !strings.Contains(out, "[PAUSED ") {
		t.Fatalf("status while paused:\n%s", out)
	}
	fams := e.metrics()
	if v := metric(fams, "resil_object_paused", map[string]string{"object": "Service/web"}); v != 1 {
		t.Errorf("resil_object_paused{Service/web} = %v, want 1", v)
	}
	if v := metric(fams, "resil_object_paused", map[string]string{"object": "Service/db"}); v != 0 {
		t.Errorf("resil_object_paused{Service/db} = %v, want 0", v)
	}
	// The lease shortened to 3s (a new pause replaces it): the agent
	// wakes at its expiry, with no resync due.
	if out, errOut, code := e.reconciler("pause", "web", "--for", "3s", "--reason", "hotfix INC-123"); code != 0 {
		t.Fatalf("pause: exit %d\n%s%s", code, out, errOut)
	}
	e.eventually("web.service started at the lease's expiry", 30*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	e.eventually("LeaseExpired event", 10*time.Second, func() bool { return a.hasEvent("LeaseExpired", "hotfix INC-123") })
	e.eventually("resil_object_paused back to 0", 10*time.Second, func() bool {
		return metric(e.metrics(), "resil_object_paused", map[string]string{"object": "Service/web"}) == 0
	})

	// resume: converged without waiting for the lease or a resync
	if out, errOut, code := e.reconciler("pause", "Service/web", "--for", "1h", "--reason", "second"); code != 0 {
		t.Fatalf("pause: exit %d\n%s%s", code, out, errOut)
	}
	e.systemctl("stop", "web.service")
	e.eventually("DriftReported under the second lease", 30*time.Second, func() bool { return a.hasEvent("DriftReported", ": second") })
	if s := e.prop("web.service", "ActiveState"); s != "inactive" {
		t.Fatalf("paused web.service corrected: %s", s)
	}
	if out, errOut, code := e.reconciler("resume", "Service/web"); code != 0 || !strings.Contains(out, "resumed Service/web") {
		t.Fatalf("resume: exit %d\n%s%s", code, out, errOut)
	}
	e.eventually("web.service started after resume", 30*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	if e.eventCount("Service/web", "Resumed", "resumed by root") == 0 {
		t.Error("no Resumed event in the store")
	}
}

// The mass-prune guard: one-shot apply blocks a prune of 2 of 3 objects
// and converges the rest; prune --confirm lets it through. With an agent
// running, prune --confirm hands the confirmation to it.
func TestPruneGuardSystemd(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"a", "b", "c"} {
		e.write(n+".yaml", svc(n, "  environment: {MODE: one}\n"))
	}
	e.apply(0)
	e.remove("a.yaml")
	e.remove("b.yaml")
	e.write("c.yaml", svc("c", "  environment: {MODE: two}\n"))
	out := e.apply(0)
	if !strings.Contains(out, "warning  PruneBlocked: would prune") || !strings.Contains(out, "would prune 2 of 3 owned objects") {
		t.Fatalf("apply did not block the prune:\n%s", out)
	}
	for _, u := range []string{"a.service", "b.service"} {
		if s := e.prop(u, "ActiveState"); s != "active" {
			t.Errorf("%s touched by a blocked prune: %s", u, s)
		}
	}
	if env := e.prop("c.service", "Environment"); env != "MODE=two" {
		t.Errorf("c.service not converged beside the blocked prune: %s", env)
	}
	diff, _, _ := e.reconciler("diff")
	if !strings.Contains(diff, "Prune blocked: would prune 2 of 3") || !strings.Contains(diff, "would stop a.service") {
		t.Fatalf("diff does not show the block:\n%s", diff)
	}
	out, errOut, code := e.reconciler("prune", "--confirm")
	if code != 0 || !strings.Contains(out, "2 objects to prune:\n  Service/a\n") {
		t.Fatalf("prune --confirm: exit %d\n%s%s", code, out, errOut)
	}
	for _, u := range []string{"a.service", "b.service"} {
		if s := e.prop(u, "LoadState"); s != "not-found" {
			t.Errorf("%s not pruned: %s", u, s)
		}
	}

	// with the agent running
	for _, n := range []string{"x", "y"} {
		e.write(n+".yaml", svc(n, ""))
	}
	a := e.startAgent("--resync", "10m")
	e.eventually("x and y started", 30*time.Second, func() bool {
		return e.prop("x.service", "ActiveState") == "active" && e.prop("y.service", "ActiveState") == "active"
	})
	e.remove("x.yaml")
	e.remove("y.yaml")
	e.eventually("PruneBlocked event", 30*time.Second, func() bool { return a.hasEvent("PruneBlocked", "Service/x, Service/y") })
	out, errOut, code = e.reconciler("prune", "--confirm")
	if code != 0 || !strings.Contains(out, "the running agent prunes them") {
		t.Fatalf("prune --confirm with an agent: exit %d\n%s%s", code, out, errOut)
	}
	e.eventually("x and y pruned by the agent", 30*time.Second, func() bool {
		return e.prop("x.service", "LoadState") == "not-found" && e.prop("y.service", "LoadState") == "not-found"
	})
	if s := e.prop("c.service", "ActiveState"); s != "active" {
		t.Errorf("c.service: %s", s)
	}
}

// Delayed prune: a unit whose manifest disappears keeps its process; back
// within the grace, nothing happens (same PID); the deadline survives an
// agent restart; after it, the unit is pruned.
func TestPruneGraceSystemd(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	e.write("db.yaml", svc("db", ""))
	e.apply(0)
	pid := e.prop("web.service", "MainPID")
	a := e.startAgent("--resync", "10m", "--prune-grace", "1h")
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	e.remove("web.yaml")
	e.eventually("PrunePending event", 30*time.Second, func() bool { return a.hasEvent("PrunePending", "web.service") })
	out, _, _ := e.reconciler("status")
	if !strings.Contains(out, "[PRUNE in ") {
		t.Errorf("status of a pending prune:\n%s", out)
	}
	e.write("web.yaml", svc("web", ""))
	e.eventually("pending prune cleared", 30*time.Second, func() bool { return e.pendingPrunes()["Service/web"].IsZero() })
	if got := e.prop("web.service", "MainPID"); got != pid {
		t.Fatalf("web.service restarted by its comeback: %s → %s", pid, got)
	}
	e.stopAgent(a, 10*time.Second)

	// a short grace, and an agent restart in the middle of it
	a = e.startAgent("--resync", "10m", "--prune-grace", "15s")
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	e.remove("web.yaml")
	e.eventually("prune deadline persisted", 30*time.Second, func() bool { return !e.pendingPrunes()["Service/web"].IsZero() })
	deadline := e.pendingPrunes()["Service/web"]
	e.stopAgent(a, 10*time.Second)
	a = e.startAgent("--resync", "10m", "--prune-grace", "15s")
	e.eventually("first pass after the restart", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	if got := e.pendingPrunes()["Service/web"]; !got.Equal(deadline) {
		t.Fatalf("deadline after a restart %s, was %s", got, deadline)
	}
	if got := e.prop("web.service", "MainPID"); got != pid {
		t.Fatalf("web.service restarted within the grace: %s → %s", pid, got)
	}
	e.eventually("web.service pruned after the grace", 40*time.Second, func() bool { return e.prop("web.service", "LoadState") == "not-found" })
	if time.Now().Before(deadline) {
		t.Errorf("pruned before its deadline %s", deadline)
	}
	if s := e.prop("db.service", "ActiveState"); s != "active" {
		t.Errorf("db.service: %s", s)
	}
}

// pendingPrunes reads the agent's prune deadlines from its state dir.
func (e *env) pendingPrunes() map[string]time.Time {
	e.t.Helper()
	m := map[string]time.Time{}
	b, err := e.sb.ReadFile("/var/lib/resil/prune-pending.json")
	if err != nil {
		return m
	}
	_ = json.Unmarshal(b, &m)
	return m
}
