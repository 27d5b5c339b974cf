package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseShare(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		err  bool
	}{
		{"50%", 0.5, false}, {"0", 0, false}, {"0.25", 0.25, false}, {"100%", 1, false},
		{"150%", 0, true}, {"-1", 0, true}, {"half", 0, true}, {"2", 0, true},
	} {
		got, err := parseShare(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseShare(%q) = %v, %v", tc.in, got, err)
		}
	}
}

// Process backend, one-shot commands: a paused service keeps its process
// through a manifest change; diff says what it would do; status says
// PAUSED; resume lets the next apply converge it.
func TestProcessBackendPauseResume(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	e.write("db.yaml", strings.Replace(procWeb, "name: web", "name: db", 1))
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	web, db := e.pid("web.service"), e.pid("db.service")
	for _, bad := range [][]string{{"web", "--reason", "x"}, {"web", "--for", "30m"}, {"web", "--for", "48h", "--reason", "x"}, {"../x", "--for", "1m", "--reason", "x"}} {
		if out, code := e.cli("pause", bad...); code != 2 {
			t.Errorf("pause %v: exit %d\n%s", bad, code, out)
		}
	}
	out, code := e.cli("pause", "web", "--for", "30m", "--reason", "hotfix INC-123")
	if code != 0 || !strings.Contains(out, "web paused until ") || !strings.Contains(out, ": hotfix INC-123 (30m0s)") || strings.Contains(out, "warning") {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	// A typo pauses nothing that exists: a warning, and the lease anyway.
	if out, code := e.cli("pause", "webb", "--for", "1m", "--reason", "typo"); code != 0 || !strings.Contains(out, "warning: no manifest in ") || !strings.Contains(out, " declares webb;") {
		t.Errorf("pause of an unknown name: exit %d\n%s", code, out)
	}
	if out, code := e.cli("resume", "webb"); code != 0 {
		t.Errorf("resume webb: exit %d\n%s", code, out)
	}
	e.write("web.yaml", strings.Replace(procWeb, "MODE: one", "MODE: two", 1))
	e.write("db.yaml", strings.Replace(strings.Replace(procWeb, "name: web", "name: db", 1), "MODE: one", "MODE: two", 1))
	out, code = e.cli("diff")
	if code != 1 || !strings.Contains(out, "Paused (not applied):\n  Service/web: paused until ") ||
		!strings.Contains(out, ": hotfix INC-123 (") || !strings.Contains(out, "would write ") || !strings.Contains(out, "would restart web.service") {
		t.Fatalf("diff while paused: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "  1. write "+filepath.Join(e.state, "units", "web.service")) {
		t.Fatalf("diff plans web's write\n%s", out)
	}
	out, code = e.cli("apply")
	if code != 0 || e.pid("web.service") != web || e.pid("db.service") == db {
		t.Fatalf("apply while paused: exit %d, web %d (was %d), db %d (was %d)\n%s", code, e.pid("web.service"), web, e.pid("db.service"), db, out)
	}
	out, _ = e.cli("status")
	if !strings.Contains(out, "[PAUSED 29m left]") && !strings.Contains(out, "[PAUSED 30m left]") {
		t.Fatalf("status while paused:\n%s", out)
	}
	// The events name the object by its ID, as every other event does.
	out, _ = e.cli("events", "--object", "Service/web")
	if !strings.Contains(out, "Paused") {
		t.Errorf("no Paused event of Service/web:\n%s", out)
	}
	// A lease taken by name is ended by the object's ID (and the reverse).
	if out, code := e.cli("resume", "Service/web"); code != 0 || !strings.Contains(out, "resumed Service/web (its lease was taken as web)") {
		t.Fatalf("resume: exit %d\n%s", code, out)
	}
	if out, code := e.cli("resume", "web"); code != 1 || !strings.Contains(out, "web was not paused") {
		t.Fatalf("second resume: exit %d\n%s", code, out)
	}
	if out, code := e.cli("pause", "Service/db", "--for", "1m", "--reason", "x"); code != 0 {
		t.Fatalf("pause Service/db: exit %d\n%s", code, out)
	}
	if out, code := e.cli("resume", "db"); code != 0 || !strings.Contains(out, "resumed db (its lease was taken as Service/db)") {
		t.Fatalf("resume db: exit %d\n%s", code, out)
	}
	if out, code := e.cli("apply"); code != 0 || e.pid("web.service") == web || e.pid("web.service") == 0 {
		t.Fatalf("apply after resume: exit %d\n%s", code, out)
	}
	if env := environOf(t, e.pid("web.service")); !strings.Contains(env, "MODE=two") {
		t.Fatalf("web not converged after resume:\n%s", env)
	}
	out, _ = e.cli("events", "--object", "Service/web")
	if !strings.Contains(out, "Resumed") {
		t.Errorf("no Resumed event of Service/web:\n%s", out)
	}
	// With no manifests to read, the name is resolved from the agent's
	// last pass: the event is still recorded under the object's ID.
	gone := filepath.Join(t.TempDir(), "absent")
	if out, code := e.cli("pause", "db", "--manifests", gone, "--for", "1m", "--reason", "no-manifests"); code != 0 {
		t.Fatalf("pause without manifests: exit %d\n%s", code, out)
	}
	if out, code := e.cli("resume", "db", "--manifests", gone); code != 0 {
		t.Fatalf("resume without manifests: exit %d\n%s", code, out)
	}
	out, _ = e.cli("events", "--object", "Service/db")
	if !strings.Contains(out, "no-manifests") || strings.Count(out, "Resumed") != 2 {
		t.Errorf("pause/resume without manifests not recorded under Service/db:\n%s", out)
	}
}

// status shows a lease as long as the agent honours it: a 30h lease under
// an agent whose --max-lease is 24h ends after 24h.
func TestStatusPauseClampedToMaxLease(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	if out, code := e.cli("pause", "web", "--for", "30h", "--max-lease", "48h", "--reason", "long"); code != 0 {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	if out, code := e.cli("apply", "--max-lease", "24h"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	out, _ := e.cli("status")
	if !strings.Contains(out, "[PAUSED 23h") && !strings.Contains(out, "[PAUSED 24h") {
		t.Fatalf("status of a 30h lease under a 24h --max-lease:\n%s", out)
	}
}

// A pause lease that expires: the next apply converges the object and
// records LeaseExpired.
func TestProcessBackendLeaseExpiry(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	web := e.pid("web.service")
	if out, code := e.cli("pause", "Service/web", "--for", "1s", "--reason", "short"); code != 0 {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	e.write("web.yaml", strings.Replace(procWeb, "MODE: one", "MODE: two", 1))
	time.Sleep(1100 * time.Millisecond) // past the lease
	if out, code := e.cli("apply"); code != 0 || e.pid("web.service") == web {
		t.Fatalf("apply after expiry: exit %d\n%s", code, out)
	}
	out, _ := e.cli("events")
	if !strings.Contains(out, "LeaseExpired") {
		t.Errorf("no LeaseExpired event:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(e.state, "leases", "Service%2Fweb.json")); !os.IsNotExist(err) {
		t.Errorf("expired lease file: %v", err)
	}
}

// Deleting most manifests prunes nothing; prune lists them, --confirm
// prunes them once; apply --allow-prune does too.
func TestProcessBackendPruneGuard(t *testing.T) {
	e := newProcEnv(t)
	names := []string{"a", "b", "c", "d"}
	e.writeWebs(names...)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	pids := map[string]int{}
	for _, n := range names {
		pids[n] = e.pid(n + ".service")
	}
	for _, n := range names[:3] {
		os.Remove(filepath.Join(e.manifests, n+".yaml"))
	}
	out, code := e.cli("apply")
	if !strings.Contains(out, "PruneBlocked") || !strings.Contains(out, "would prune 3 of 4 owned objects, more than --max-prune 50%") {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	for _, n := range names {
		if e.pid(n+".service") != pids[n] {
			t.Fatalf("%s touched by a blocked prune\n%s", n, out)
		}
	}
	out, code = e.cli("diff")
	if !strings.Contains(out, "Prune blocked: would prune 3 of 4") || !strings.Contains(out, "would stop a.service") {
		t.Fatalf("diff: exit %d\n%s", code, out)
	}
	// status lists what the guard keeps, and is not converged.
	out, code = e.cli("status")
	if code != 1 || strings.Count(out, "[PRUNE BLOCKED]") != 3 {
		t.Fatalf("status with a blocked prune: exit %d\n%s", code, out)
	}
	if out, code := e.cli("status", "a"); code != 1 || !strings.Contains(out, "[PRUNE BLOCKED]") {
		t.Fatalf("status a with a blocked prune: exit %d\n%s", code, out)
	}
	out, code = e.cli("prune")
	if code != 1 || !strings.Contains(out, "3 objects to prune:\n  Service/a\n") || e.pid("a.service") == 0 {
		t.Fatalf("prune without --confirm: exit %d\n%s", code, out)
	}
	// --allow-prune with too small a count stays blocked
	if out, _ := e.cli("apply", "--allow-prune", "2"); e.pid("a.service") == 0 || !strings.Contains(out, "PruneBlocked") {
		t.Fatalf("apply --allow-prune 2 pruned 3\n%s", out)
	}
	out, code = e.cli("prune", "--confirm")
	if code != 0 || !strings.Contains(out, "confirmed; pruning:") {
		t.Fatalf("prune --confirm: exit %d\n%s", code, out)
	}
	for _, n := range names[:3] {
		if e.pid(n+".service") != 0 {
			t.Errorf("%s not pruned by prune --confirm", n)
		}
	}
	if e.pid("d.service") != pids["d"] {
		t.Error("d touched")
	}
	// --allow-prune N, and the guard off
	e.writeWebs("x", "y")
	e.cli("apply")
	os.Remove(filepath.Join(e.manifests, "x.yaml"))
	os.Remove(filepath.Join(e.manifests, "y.yaml"))
	if out, code := e.cli("apply", "--allow-prune", "2"); code != 0 || e.pid("x.service") != 0 || e.pid("y.service") != 0 {
		t.Fatalf("apply --allow-prune 2: exit %d\n%s", code, out)
	}
	e.write("x.yaml", strings.Replace(procWeb, "name: web", "name: x", 1))
	e.cli("apply")
	os.Remove(filepath.Join(e.manifests, "x.yaml"))
	os.Remove(filepath.Join(e.manifests, "d.yaml"))
	if out, code := e.cli("apply", "--max-prune", "0"); code != 0 || e.pid("x.service") != 0 || e.pid("d.service") != 0 {
		t.Fatalf("apply --max-prune 0: exit %d\n%s", code, out)
	}
}

// A sync accident that swaps in an equally sized wrong set: web, live,
// never and rep replaced by s1–s4. The first apply creates s1–s4 and
// blocks the prune (4 of 4); the next ones, counting s1–s4 as owned (4 of
// 8), still block it until the prune is confirmed. Each apply is a new
// process: the held objects come from the state dir.
func TestProcessBackendPruneGuardReplacement(t *testing.T) {
	e := newProcEnv(t)
	old, repl := []string{"live", "never", "rep", "web"}, []string{"s1", "s2", "s3", "s4"}
	e.writeWebs(old...)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	pids := map[string]int{}
	for _, n := range old {
		pids[n] = e.pid(n + ".service")
		os.Remove(filepath.Join(e.manifests, n+".yaml"))
	}
	e.writeWebs(repl...)
	kept := func(when, out string) {
		t.Helper()
		for _, n := range old {
			if e.pid(n+".service") != pids[n] {
				t.Fatalf("%s: %s touched by a blocked prune\n%s", when, n, out)
			}
		}
	}
	out, code := e.cli("apply")
	if code != 0 || !strings.Contains(out, "would prune 4 of 4 owned objects, more than --max-prune 50%") {
		t.Fatalf("first apply: exit %d\n%s", code, out)
	}
	kept("first apply", out)
	for _, n := range repl {
		if e.pid(n+".service") == 0 {
			t.Fatalf("%s not created beside the blocked prune\n%s", n, out)
		}
	}
	out, code = e.cli("diff")
	if !strings.Contains(out, "Prune blocked: would prune 4 of 8 owned objects; the guard has held Service/live, Service/never, Service/rep, Service/web since ") ||
		!strings.Contains(out, "would stop web.service") {
		t.Fatalf("diff: exit %d\n%s", code, out)
	}
	out, code = e.cli("apply")
	if !strings.Contains(out, "PruneBlocked") || strings.Contains(out, "stop web.service") {
		t.Fatalf("second apply: exit %d\n%s", code, out)
	}
	kept("second apply", out)
	out, code = e.cli("status")
	if code != 1 || strings.Count(out, "[PRUNE BLOCKED]") != 4 {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	out, code = e.cli("prune", "--confirm")
	if code != 0 || !strings.Contains(out, "4 objects to prune:\n  Service/live\n") {
		t.Fatalf("prune --confirm: exit %d\n%s", code, out)
	}
	for _, n := range old {
		if e.pid(n+".service") != 0 {
			t.Errorf("%s not pruned by prune --confirm", n)
		}
	}
	// released: an ordinary prune of one object goes through
	os.Remove(filepath.Join(e.manifests, "s1.yaml"))
	if out, code := e.cli("apply"); code != 0 || e.pid("s1.service") != 0 || strings.Contains(out, "PruneBlocked") {
		t.Fatalf("apply after the confirmation: exit %d\n%s", code, out)
	}
	if out, code := e.cli("status"); code != 0 || strings.Contains(out, "PRUNE BLOCKED") {
		t.Fatalf("status after the confirmation: exit %d\n%s", code, out)
	}
}

// --prune-grace: a service whose manifest disappears keeps running (same
// PID) and comes back untouched; after the grace it is pruned.
func TestProcessBackendPruneGrace(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	e.write("db.yaml", strings.Replace(procWeb, "name: web", "name: db", 1))
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	web := e.pid("web.service")
	os.Remove(filepath.Join(e.manifests, "web.yaml"))
	out, code := e.cli("apply", "--prune-grace", "1h")
	if code != 0 || e.pid("web.service") != web || strings.Contains(out, "stop web.service") {
		t.Fatalf("apply with a grace: exit %d\n%s", code, out)
	}
	out, _ = e.cli("status")
	if !strings.Contains(out, "[PRUNE in 59m]") && !strings.Contains(out, "[PRUNE in 60m]") {
		t.Fatalf("status of a pending prune:\n%s", out)
	}
	out, code = e.cli("diff", "--prune-grace", "1h")
	if code != 0 || !strings.Contains(out, "Prune pending:\n  Service/web (in ") {
		t.Fatalf("diff of a pending prune: exit %d\n%s", code, out)
	}
	e.write("web.yaml", procWeb)
	out, code = e.cli("apply", "--prune-grace", "1h")
	if code != 0 || e.pid("web.service") != web || strings.Contains(out, "web.service") {
		t.Fatalf("apply after the comeback: exit %d\n%s", code, out)
	}
	os.Remove(filepath.Join(e.manifests, "web.yaml"))
	e.cli("apply", "--prune-grace", "1s")
	if e.pid("web.service") != web {
		t.Fatal("pruned within the grace")
	}
	time.Sleep(1100 * time.Millisecond) // past the deadline
	out, code = e.cli("apply", "--prune-grace", "1s")
	if code != 0 || e.pid("web.service") != 0 {
		t.Fatalf("apply after the grace: exit %d\n%s", code, out)
	}
}

// writeWebs writes one procWeb service manifest per name (NAME.yaml).
func (e *procEnv) writeWebs(names ...string) {
	for _, n := range names {
		e.write(n+".yaml", strings.Replace(procWeb, "name: web", "name: "+n, 1))
	}
}

// A paused object whose manifest is deleted keeps running until the lease
// ends, and status keeps its row (Paused, desired absent) until then.
func TestPausedObjectWithManifestGoneStaysInStatus(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	if out, code := e.cli("pause", "web", "--for", "10m", "--reason", "hotfix"); code != 0 {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	if err := os.Remove(filepath.Join(e.manifests, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if out, code := e.cli("apply"); code != 0 || e.pid("web.service") == 0 {
		t.Fatalf("apply while paused: exit %d, pid %d\n%s", code, e.pid("web.service"), out)
	}
	out, code := e.cli("status", "web")
	if code != 0 || !strings.Contains(out, "absent") || !strings.Contains(out, "[PAUSED ") {
		t.Fatalf("status of the paused object with its manifest gone: exit %d\n%s", code, out)
	}
	if out, code := e.cli("resume", "web"); code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, out)
	}
	if out, code := e.cli("apply"); code != 0 || e.pid("web.service") != 0 {
		t.Fatalf("apply after resume: exit %d, pid %d\n%s", code, e.pid("web.service"), out)
	}
	if out, code := e.cli("status", "web"); code != 2 {
		t.Fatalf("status after the prune: exit %d\n%s", code, out)
	}
}
