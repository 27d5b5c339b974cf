package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"resil.dev/resil/desired"
)

// clock is an injected clock tests move by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newSafetyReconciler(t *testing.T, dir, state string, f *fakeBackend, c *clock, s Safety, mods ...func(*Config)) (*Reconciler, *Ring) {
	t.Helper()
	log := zaptest.NewLogger(t)
	ring := NewRing(200, log)
	s.StateDir = state
	cfg := Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: f, Applier: f,
		Events: ring, Log: log, Now: c.now, Safety: s}
	for _, m := range mods {
		m(&cfg)
	}
	return New(cfg), ring
}

// webAndDB is the fixture of the pause tests: manifests of two services
// (web, db), a state dir, the fake backend and a clock at 14:02.
func webAndDB(t *testing.T) (dir, state string, f *fakeBackend, c *clock) {
	t.Helper()
	dir, state = t.TempDir(), t.TempDir()
	writeManifest(t, dir, "web.yaml", svcManifest("web", "one"))
	writeManifest(t, dir, "db.yaml", svcManifest("db", "one"))
	return dir, state, newFake(), &clock{t: time.Date(2026, 12, 1, 14, 2, 0, 0, time.Local)}
}

func svcManifest(name, mode string) string {
	return "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: " + name + "}\nspec:\n  command: [\"/bin/sleep\", \"infinity\"]\n  environment: {MODE: " + mode + "}\n"
}

func pass(t *testing.T, r *Reconciler, opts Options) Result {
	t.Helper()
	res, err := r.Reconcile(context.Background(), opts)
	if err != nil {
		t.Fatalf("pass: %v", err)
	}
	return res
}

func findingsOf(res Result, reason Reason) []Finding {
	var out []Finding
	for _, f := range res.Plan.Findings {
		if f.Reason == reason {
			out = append(out, f)
		}
	}
	return out
}

func eventsOf(ring *Ring, reason Reason) []Event {
	var out []Event
	for _, e := range ring.Events() {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// A paused object's drift and manifest changes are reported, not applied,
// while everything else converges; at the lease's expiry (injected clock)
// the next pass converges it and records LeaseExpired.
func TestPauseLeaseWithholdsUntilExpiry(t *testing.T) {
	dir, state, f, c := webAndDB(t)
	r, ring := newSafetyReconciler(t, dir, state, f, c, Safety{MaxLease: 24 * time.Hour})
	pass(t, r, Options{})

	lease := Lease{Object: "web", Reason: "hotfix INC-123", Since: c.t, Until: c.t.Add(30 * time.Minute), UID: 1000, User: "alice"}
	if err := NewLeaseDir(state).Put(lease); err != nil {
		t.Fatal(err)
	}
	f.active["web.service"] = false // stopped out of band
	writeManifest(t, dir, "db.yaml", svcManifest("db", "two"))
	c.advance(time.Minute)
	f.applied = nil
	res := pass(t, r, Options{})
	for _, s := range f.applied {
		if strings.Contains(s, "web.service") {
			t.Errorf("paused web touched: %s", s)
		}
	}
	if !strings.Contains(strings.Join(f.applied, "\n"), "db.service") {
		t.Errorf("db did not converge while web is paused: %v", f.applied)
	}
	d := findingsOf(res, ReasonDriftReported)
	if len(d) != 1 || !strings.Contains(d[0].Message, "StoppedOutOfBand") || !strings.Contains(d[0].Message, "not corrected: paused until 14:32 by alice") || d[0].Enforced ||
		strings.Contains(d[0].Message, "starting") { // "starting; not corrected" said both

		t.Errorf("DriftReported finding: %+v", d)
	}
	// a manifest change is not applied either; the plan says what it would do
	writeManifest(t, dir, "web.yaml", svcManifest("web", "two"))
	f.applied = nil
	res = pass(t, r, Options{})
	if len(f.applied) != 0 {
		t.Errorf("paused web touched: %v", f.applied)
	}
	if len(res.Plan.Paused) != 1 || res.Plan.Paused[0].Object != "Service/web" || len(res.Plan.Paused[0].Withheld) == 0 {
		t.Fatalf("paused report: %+v", res.Plan.Paused)
	}
	p := findingsOf(res, ReasonPaused)
	if len(p) != 1 || !strings.HasPrefix(p[0].Message, "paused until 14:32 by alice: hotfix INC-123; would: write ") {
		t.Errorf("Paused finding: %+v", p)
	}
	if !res.Plan.Empty() {
		t.Errorf("plan not empty (a reload only the paused write asked for?): %v", res.Plan.Steps)
	}
	if st := Classify(res)["Service/web"].State; st != StatePaused {
		t.Errorf("web is %s, want Paused", st)
	}
	if res.RequeueAfter != 29*time.Minute {
		t.Errorf("requeue after %s, want the lease's expiry in 29m", res.RequeueAfter)
	}

	c.advance(29 * time.Minute)
	f.applied = nil
	res = pass(t, r, Options{})
	if len(res.Plan.Paused) != 0 || !f.active["web.service"] || !strings.Contains(string(f.files["web.service"]), "MODE=two") {
		t.Fatalf("expired lease: web not converged: %v %+v", f.applied, res.Plan.Paused)
	}
	if ev := eventsOf(ring, ReasonLeaseExpired); len(ev) != 1 || ev[0].Object != "web" {
		t.Errorf("LeaseExpired events: %+v", ev)
	}
	if _, ok, _ := NewLeaseDir(state).Get("web"); ok {
		t.Error("expired lease file kept")
	}
}

// Removing the lease (resume) converges the object on the next pass, and
// a lease longer than MaxLease ends at MaxLease.
func TestResumeAndMaxLease(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeManifest(t, dir, "web.yaml", svcManifest("web", "one"))
	f := newFake()
	c := &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	r, _ := newSafetyReconciler(t, dir, state, f, c, Safety{MaxLease: time.Hour})
	pass(t, r, Options{})
	ld := NewLeaseDir(state)
	if err := ld.Put(Lease{Object: "Service/web", Reason: "r", Since: c.t, Until: c.t.Add(48 * time.Hour), User: "bob"}); err != nil {
		t.Fatal(err)
	}
	f.active["web.service"] = false
	res := pass(t, r, Options{})
	if f.active["web.service"] || len(res.Plan.Paused) != 1 {
		t.Fatal("lease did not pause web")
	}
	if res.RequeueAfter != time.Hour {
		t.Errorf("requeue %s, want the 1h cap", res.RequeueAfter)
	}
	// diff (dry run) shows the same and writes nothing
	if ok, err := ld.Remove("Service/web"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	pass(t, r, Options{})
	if !f.active["web.service"] {
		t.Error("resume did not converge web")
	}
}

func TestGuardPrune(t *testing.T) {
	for _, tc := range []struct {
		name              string
		due, owned, allow int
		max               float64
		confirmed, held   []string
		blocked           bool
	}{
		{"one of one", 1, 1, 0, 0.5, nil, nil, false},
		{"half", 2, 4, 0, 0.5, nil, nil, false},
		{"more than half", 3, 4, 0, 0.5, nil, nil, true},
		{"all of two", 2, 2, 0, 0.5, nil, nil, true},
		{"guard off", 4, 4, 0, 0, nil, nil, false},
		{"allowed", 3, 4, 3, 0.5, nil, nil, false},
		{"allowed too few", 3, 4, 2, 0.5, nil, nil, true},
		{"confirmed", 2, 2, 0, 0.5, []string{"Service/o0", "Service/o1"}, nil, false},
		{"confirmed in part", 2, 2, 0, 0.5, []string{"Service/o0"}, nil, true},
		// an earlier block holds, whatever the share
		{"held, half", 4, 8, 0, 0.5, nil, []string{"Service/o0", "Service/o1", "Service/o2", "Service/o3"}, true},
		{"held, one", 1, 8, 0, 0.5, nil, []string{"Service/o0"}, true},
		{"held other objects", 1, 8, 0, 0.5, nil, []string{"Service/x"}, false},
		{"held, allowed", 2, 8, 2, 0.5, nil, []string{"Service/o0"}, false},
		{"held, confirmed", 2, 8, 0, 0.5, []string{"Service/o0", "Service/o1"}, []string{"Service/o0"}, false},
		{"held, confirmed in part", 2, 8, 0, 0.5, []string{"Service/o0"}, []string{"Service/o0"}, true},
		{"held, guard off", 2, 8, 0, 0, nil, []string{"Service/o0"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var due []string
			for i := 0; i < tc.due; i++ {
				due = append(due, "Service/o"+string(rune('0'+i)))
			}
			in := Input{SafetyInput: SafetyInput{MaxPrune: tc.max, AllowPrune: tc.allow, ConfirmedPrune: map[string]bool{}}}
			for _, id := range tc.confirmed {
				in.ConfirmedPrune[id] = true
			}
			for _, id := range tc.held {
				if in.PruneHeld == nil {
					in.PruneHeld = map[string]time.Time{}
				}
				in.PruneHeld[id] = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
			}
			p := &planner{in: in}
			if got := p.guardPrune(due, tc.owned) != nil; got != tc.blocked {
				t.Errorf("blocked %v, want %v", got, tc.blocked)
			}
		})
	}
}

// Deleting most manifests prunes nothing (PruneBlocked) while the rest
// converges; --allow-prune N lets it through once, and so does a
// confirmation for exactly those objects.
func TestMassPruneGuard(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	for _, n := range []string{"a", "b", "c"} {
		writeManifest(t, dir, n+".yaml", svcManifest(n, "one"))
	}
	f := newFake()
	c := &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	r, ring := newSafetyReconciler(t, dir, state, f, c, Safety{MaxPrune: 0.5})
	pass(t, r, Options{})
	os.Remove(filepath.Join(dir, "a.yaml"))
	os.Remove(filepath.Join(dir, "b.yaml"))
	writeManifest(t, dir, "c.yaml", svcManifest("c", "two"))
	f.applied = nil
	res := pass(t, r, Options{})
	b := res.Plan.PruneBlocked
	if b == nil || strings.Join(b.Objects, ",") != "Service/a,Service/b" || b.Owned != 3 {
		t.Fatalf("PruneBlocked: %+v", b)
	}
	if f.files["a.service"] == nil || !f.active["b.service"] {
		t.Errorf("blocked prune touched a or b: %v", f.applied)
	}
	if !strings.Contains(string(f.files["c.service"]), "MODE=two") {
		t.Errorf("c did not converge beside the blocked prune: %v", f.applied)
	}
	if ev := eventsOf(ring, ReasonPruneBlocked); len(ev) != 1 || !strings.Contains(ev[0].Message, "would prune 2 of 3 owned objects, more than --max-prune 50%") {
		t.Errorf("PruneBlocked events: %+v", ev)
	}
	// a dry run with a confirmation for a only stays blocked
	if err := WritePruneConfirm(state, PruneConfirm{Objects: []string{"Service/a"}, Until: c.t.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if res := pass(t, r, Options{DryRun: true}); res.Plan.PruneBlocked == nil {
		t.Error("a confirmation of a part let the prune through")
	}
	res = pass(t, r, Options{AllowPrune: 2})
	if res.Plan.PruneBlocked != nil || f.files["a.service"] != nil || f.files["b.service"] != nil {
		t.Fatalf("--allow-prune 2 did not prune a and b: %v", f.applied)
	}
	// confirmation: two more, deleted at once
	for _, n := range []string{"d", "e"} {
		writeManifest(t, dir, n+".yaml", svcManifest(n, "one"))
	}
	pass(t, r, Options{})
	os.Remove(filepath.Join(dir, "d.yaml"))
	os.Remove(filepath.Join(dir, "e.yaml"))
	if res := pass(t, r, Options{}); res.Plan.PruneBlocked == nil {
		t.Fatal("2 of 3 not blocked")
	}
	if err := WritePruneConfirm(state, PruneConfirm{Objects: []string{"Service/d", "Service/e"}, Until: c.t.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	pass(t, r, Options{})
	if f.files["d.service"] != nil || f.files["e.service"] != nil {
		t.Fatal("confirmed prune did not happen")
	}
	if _, err := os.Stat(filepath.Join(state, PruneConfirmFileName)); !os.IsNotExist(err) {
		t.Errorf("used confirmation kept: %v", err)
	}
}

// With --prune-grace an object whose manifest disappears keeps running
// until its deadline, which survives an agent restart; back in time,
// nothing happens; after it, it is pruned.
func TestPruneGrace(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeManifest(t, dir, "web.yaml", svcManifest("web", "one"))
	writeManifest(t, dir, "db.yaml", svcManifest("db", "one"))
	f := newFake()
	c := &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	s := Safety{MaxPrune: 0.5, PruneGrace: 10 * time.Minute}
	r, _ := newSafetyReconciler(t, dir, state, f, c, s)
	pass(t, r, Options{})
	os.Remove(filepath.Join(dir, "web.yaml"))
	f.applied = nil
	res := pass(t, r, Options{})
	if len(f.applied) != 0 || !res.Plan.Empty() {
		t.Fatalf("grace: steps %v", f.applied)
	}
	if p := findingsOf(res, ReasonPrunePending); len(p) != 1 || !strings.Contains(p[0].Message, "until 2026-12-01T10:10:00.000Z") {
		t.Errorf("PrunePending: %+v", p)
	}
	if res.RequeueAfter != 10*time.Minute {
		t.Errorf("requeue %s", res.RequeueAfter)
	}
	// back within the grace: nothing at all
	c.advance(5 * time.Minute)
	writeManifest(t, dir, "web.yaml", svcManifest("web", "one"))
	res = pass(t, r, Options{})
	if len(f.applied) != 0 || len(res.Plan.PrunePending) != 0 {
		t.Fatalf("comeback: steps %v, pending %v", f.applied, res.Plan.PrunePending)
	}
	// gone again: a new deadline, which survives a restart
	os.Remove(filepath.Join(dir, "web.yaml"))
	pass(t, r, Options{})
	deadline := c.t.Add(10 * time.Minute)
	b, err := os.ReadFile(filepath.Join(state, PrunePendingFileName))
	if err != nil {
		t.Fatal(err)
	}
	var saved map[string]time.Time
	if err := json.Unmarshal(b, &saved); err != nil || !saved["Service/web"].Equal(deadline) {
		t.Fatalf("persisted deadlines %s: %v", b, err)
	}
	c.advance(9 * time.Minute)
	r2, _ := newSafetyReconciler(t, dir, state, f, c, s)
	if res := pass(t, r2, Options{}); len(f.applied) != 0 || res.RequeueAfter != time.Minute {
		t.Fatalf("restarted agent: steps %v, requeue %s", f.applied, res.RequeueAfter)
	}
	c.advance(time.Minute)
	pass(t, r2, Options{})
	if f.files["web.service"] != nil || f.active["web.service"] {
		t.Fatalf("not pruned after the grace: %v", f.applied)
	}
	if !f.active["db.service"] {
		t.Error("db touched")
	}
}

// A pause and a resume between two polls of the signature change it: the
// same files (none) but not the same directory.
func TestLeaseSignaturePauseThenResume(t *testing.T) {
	d := NewLeaseDir(t.TempDir())
	if err := d.Put(Lease{Object: "web", Reason: "first", Since: time.Now(), Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Remove("web"); err != nil {
		t.Fatal(err)
	}
	before := d.Signature()
	time.Sleep(10 * time.Millisecond)
	if err := d.Put(Lease{Object: "web", Reason: "second", Since: time.Now(), Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Remove("web"); err != nil {
		t.Fatal(err)
	}
	if after := d.Signature(); after == before {
		t.Errorf("signature unchanged by a pause and a resume: %q", after)
	}
}

// The state files that authorize or hold back a change are acted on only
// when root wrote them: a prune confirmation, a lease or a prune deadline
// writable by group or other is ignored (the confirmation prunes nothing,
// the lease pauses nothing).
func TestSafetyStateFilesMustBeTrusted(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	for _, n := range []string{"a", "b", "c"} {
		writeManifest(t, dir, n+".yaml", svcManifest(n, "one"))
	}
	f := newFake()
	c := &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	r, _ := newSafetyReconciler(t, dir, state, f, c, Safety{MaxPrune: 0.5})
	pass(t, r, Options{})
	os.Remove(filepath.Join(dir, "a.yaml"))
	os.Remove(filepath.Join(dir, "b.yaml"))
	if err := WritePruneConfirm(state, PruneConfirm{Objects: []string{"Service/a", "Service/b"}, Until: c.t.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	confirm := filepath.Join(state, PruneConfirmFileName)
	if err := os.Chmod(confirm, 0o666); err != nil {
		t.Fatal(err)
	}
	if res := pass(t, r, Options{}); res.Plan.PruneBlocked == nil || f.files["a.service"] == nil {
		t.Fatalf("a world-writable confirmation let the prune through: %v", f.applied)
	}
	if err := os.Chmod(confirm, 0o600); err != nil {
		t.Fatal(err)
	}
	if pass(t, r, Options{}); f.files["a.service"] != nil || f.files["b.service"] != nil {
		t.Fatalf("the confirmation, root's again, did not prune: %v", f.applied)
	}

	leases := NewLeaseDir(state)
	if err := leases.Put(Lease{Object: "Service/c", Reason: "test", Since: c.t, Until: c.t.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(leases.path("Service/c"), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := leases.Get("Service/c"); ok || err == nil || !strings.Contains(err.Error(), "writable by group or other") {
		t.Errorf("a world-writable lease read: ok %v, err %v", ok, err)
	}
	writeManifest(t, dir, "c.yaml", svcManifest("c", "two"))
	if pass(t, r, Options{}); !strings.Contains(string(f.files["c.service"]), "MODE=two") {
		t.Errorf("a world-writable lease held c back: %v", f.applied)
	}
}

// Every state file the agent acts on is read only when root's and
// writable by nobody else: a forged rollout record would mark restarts
// done, a forged acknowledgement resume a halted rollout, a forged prune
// deadline prune early.
func TestStateFileReadersRefuseUntrusted(t *testing.T) {
	readers := []struct {
		file string
		read func(state string) error
	}{
		{RolloutFileName, func(s string) error { _, _, err := ReadRolloutRecord(s); return err }},
		{RolloutResumeFileName, func(s string) error { _, err := ReadRolloutResume(s); return err }},
		{PrunePendingFileName, readTimesErr(PrunePendingFileName)},
		// a forged held set is harmless (it holds, never prunes), but
		// it is read as the others are
		{PruneHeldFileName, readTimesErr(PruneHeldFileName)},
	}
	files := []struct {
		name     string
		uid      int
		mode     os.FileMode
		wantFail string
	}{
		{"root's", 0, 0o644, ""},
		{"writable by others", 0, 0o666, "writable by group or other"},
		{"writable by the group", 0, 0o664, "writable by group or other"},
		{"a user's", 1234, 0o644, "not owned by root"},
	}
	for _, rd := range readers {
		for _, f := range files {
			t.Run(rd.file+"/"+f.name, func(t *testing.T) {
				state := t.TempDir()
				path := filepath.Join(state, rd.file)
				if err := os.WriteFile(path, []byte("{}\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(path, f.uid, f.uid); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, f.mode); err != nil {
					t.Fatal(err)
				}
				err := rd.read(state)
				if f.wantFail == "" && err != nil || f.wantFail != "" && (err == nil || !strings.Contains(err.Error(), f.wantFail)) {
					t.Errorf("read: %v, want %q", err, f.wantFail)
				}
			})
		}
	}
}

// readTimesErr reads a state file of times as the agent does and returns
// the warning it logged, if any.
func readTimesErr(name string) func(state string) error {
	return func(s string) error {
		core, logged := observer.New(zap.WarnLevel)
		r := &Reconciler{cfg: Config{Safety: Safety{StateDir: s}}, log: zap.New(core)}
		r.readTimes(name)
		if logged.Len() > 0 {
			return fmt.Errorf("%s", logged.All()[0].ContextMap()["error"])
		}
		return nil
	}
}

// A paused object's manifest change is withheld by its lease, not held for
// a rollout wave: with rollouts on (run's default), the lease reports the
// write and the restart it withholds, and no RolloutPending finding claims
// it waits for a slot.
func TestPausedChangeNotPacedByRollout(t *testing.T) {
	dir, state, f, c := webAndDB(t)
	r, _ := newSafetyReconciler(t, dir, state, f, c, Safety{MaxLease: 24 * time.Hour}, func(cfg *Config) { cfg.MaxParallelRestarts = 2 })
	pass(t, r, Options{})
	if err := NewLeaseDir(state).Put(Lease{Object: "web", Reason: "hotfix", Since: c.t, Until: c.t.Add(30 * time.Minute), UID: 1000, User: "alice"}); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "web.yaml", svcManifest("web", "two"))
	c.advance(time.Minute)
	f.applied = nil
	res := pass(t, r, Options{})
	if len(f.applied) != 0 {
		t.Errorf("paused web touched: %v", f.applied)
	}
	if rp := findingsOf(res, ReasonRolloutPending); len(rp) != 0 {
		t.Errorf("RolloutPending for a paused object: %+v", rp)
	}
	if len(res.Plan.Paused) != 1 {
		t.Fatalf("paused report: %+v", res.Plan.Paused)
	}
	var ops []string
	for _, s := range res.Plan.Paused[0].Withheld {
		ops = append(ops, s.String())
	}
	if w := strings.Join(ops, "\n"); !strings.Contains(w, "web.service") || !strings.Contains(w, "restart") {
		t.Errorf("withheld steps lack the write and restart:\n%s", w)
	}
}
