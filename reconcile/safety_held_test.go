package reconcile

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	oldSet = []string{"live", "never", "rep", "web"}
	newSet = []string{"s1", "s2", "s3", "s4"}
)

func ids(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "Service/" + n
	}
	return out
}

// swapSets replaces the manifests of oldSet by those of newSet in dir.
func swapSets(t *testing.T, dir string) {
	t.Helper()
	for _, n := range oldSet {
		if err := os.Remove(filepath.Join(dir, n+".yaml")); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range newSet {
		writeManifest(t, dir, n+".yaml", svcManifest(n, "one"))
	}
}

// replaced is the tester's sequence up to the first pass after it: the
// agent owns web, live, never and rep; all four manifests are replaced by
// s1–s4 (while the agent was stopped) and a pass runs: it creates s1–s4
// and its guard blocks the prune of 4 of 4 owned objects.
func replaced(t *testing.T, s Safety) (dir, state string, f *fakeBackend, c *clock, r *Reconciler) {
	t.Helper()
	dir, state, f = t.TempDir(), t.TempDir(), newFake()
	c = &clock{t: time.Date(2026, 12, 1, 9, 13, 17, 0, time.UTC)}
	for _, n := range oldSet {
		writeManifest(t, dir, n+".yaml", svcManifest(n, "one"))
	}
	r, _ = newSafetyReconciler(t, dir, state, f, c, s)
	pass(t, r, Options{})
	swapSets(t, dir)
	r, _ = newSafetyReconciler(t, dir, state, f, c, s) // the agent started again
	res := pass(t, r, Options{})
	b := res.Plan.PruneBlocked
	if b == nil || !slices.Equal(b.Objects, ids(oldSet)) || b.Owned != 4 || !strings.Contains(b.Why, "would prune 4 of 4 owned objects, more than --max-prune 50%") {
		t.Fatalf("first pass: PruneBlocked %+v", b)
	}
	for _, n := range newSet {
		if !f.active[n+".service"] {
			t.Fatalf("first pass: %s not created beside the blocked prune: %v", n, f.applied)
		}
	}
	checkOldKept(t, f, "first pass")
	return dir, state, f, c, r
}

func checkOldKept(t *testing.T, f *fakeBackend, when string) {
	t.Helper()
	for _, n := range oldSet {
		if f.files[n+".service"] == nil || !f.active[n+".service"] {
			t.Fatalf("%s: %s pruned past the guard: %v", when, n, f.applied)
		}
	}
}

func checkHeld(t *testing.T, res Result, when string) {
	t.Helper()
	b := res.Plan.PruneBlocked
	if b == nil || !slices.Equal(b.Objects, ids(oldSet)) || !slices.Equal(b.Held, ids(oldSet)) || b.Owned != 8 {
		t.Fatalf("%s: PruneBlocked %+v", when, b)
	}
	if !strings.Contains(b.Why, "would prune 4 of 8 owned objects; the guard has held Service/live, Service/never, Service/rep, Service/web since 2026-12-01T09:13:17.000Z") {
		t.Errorf("%s: why %q", when, b.Why)
	}
	if f := findingsOf(res, ReasonPruneBlocked); len(f) != 1 || !f[0].Warning {
		t.Errorf("%s: PruneBlocked findings %+v", when, f)
	}
}

func readHeld(t *testing.T, state string) map[string]time.Time {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, PruneHeldFileName))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]time.Time
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

// The tester's bug: the pass after the block counted the objects the
// blocked pass created as owned (4 of 8 is not more than 50%) and pruned.
// The block holds, in diff as in the agent's pass, and s1–s4 stay up.
func TestPruneBlockHoldsAfterCreations(t *testing.T) {
	_, state, f, c, r := replaced(t, Safety{MaxPrune: 0.5})
	c.advance(150 * time.Millisecond)
	checkHeld(t, pass(t, r, Options{DryRun: true}), "diff")
	f.applied = nil
	res := pass(t, r, Options{})
	checkHeld(t, res, "second pass")
	checkOldKept(t, f, "second pass")
	if len(f.applied) != 0 {
		t.Errorf("second pass applied %v", f.applied)
	}
	held := readHeld(t, state)
	if len(held) != 4 || !held["Service/web"].Equal(time.Date(2026, 12, 1, 9, 13, 17, 0, time.UTC)) {
		t.Errorf("persisted held objects: %v", held)
	}
}

// The held objects survive an agent restart: the restarted agent (and a
// diff, which reads the state dir) blocks the same prune.
func TestPruneBlockHoldsAcrossRestart(t *testing.T) {
	dir, state, f, c, _ := replaced(t, Safety{MaxPrune: 0.5})
	c.advance(time.Minute)
	diff, _ := newSafetyReconciler(t, dir, state, f, c, Safety{MaxPrune: 0.5, ReadOnly: true})
	checkHeld(t, pass(t, diff, Options{DryRun: true}), "diff")
	r, _ := newSafetyReconciler(t, dir, state, f, c, Safety{MaxPrune: 0.5})
	checkHeld(t, pass(t, r, Options{}), "restarted agent")
	checkOldKept(t, f, "restarted agent")
}

// A confirmation releases the block: prune --confirm of exactly those
// objects, or apply --allow-prune N. The held set is then empty, and an
// ordinary prune of one object goes through; the guard judges by the
// share again.
func TestPruneBlockReleasedByConfirmation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		confirm func(t *testing.T, state string, c *clock) Options
	}{
		{"prune --confirm", func(t *testing.T, state string, c *clock) Options {
			if err := WritePruneConfirm(state, PruneConfirm{Objects: ids(oldSet), Until: c.t.Add(5 * time.Minute)}); err != nil {
				t.Fatal(err)
			}
			return Options{}
		}},
		{"apply --allow-prune 4", func(*testing.T, string, *clock) Options { return Options{AllowPrune: 4} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, state, f, c, r := replaced(t, Safety{MaxPrune: 0.5})
			// too little is no confirmation
			if res := pass(t, r, Options{AllowPrune: 3}); res.Plan.PruneBlocked == nil {
				t.Fatal("--allow-prune 3 let a prune of 4 through")
			}
			if err := WritePruneConfirm(state, PruneConfirm{Objects: ids(oldSet[:3]), Until: c.t.Add(5 * time.Minute)}); err != nil {
				t.Fatal(err)
			}
			if res := pass(t, r, Options{}); res.Plan.PruneBlocked == nil {
				t.Fatal("a confirmation of 3 of the 4 held objects let the prune through")
			}
			checkOldKept(t, f, "partial confirmation")
			res := pass(t, r, tc.confirm(t, state, c))
			if res.Plan.PruneBlocked != nil || !slices.Equal(res.Plan.Pruned, ids(oldSet)) {
				t.Fatalf("confirmed: blocked %+v, pruned %v", res.Plan.PruneBlocked, res.Plan.Pruned)
			}
			for _, n := range oldSet {
				if f.files[n+".service"] != nil {
					t.Errorf("%s not pruned after the confirmation", n)
				}
			}
			if held := readHeld(t, state); len(held) != 0 {
				t.Errorf("held objects kept after the confirmation: %v", held)
			}
			// an ordinary prune of one object works
			os.Remove(filepath.Join(dir, "s1.yaml"))
			res = pass(t, r, Options{})
			if res.Plan.PruneBlocked != nil || f.files["s1.service"] != nil {
				t.Fatalf("ordinary prune of s1 after the confirmation: blocked %+v, applied %v", res.Plan.PruneBlocked, f.applied)
			}
			// and the share guards again: 3 of 3 is blocked
			for _, n := range newSet[1:] {
				os.Remove(filepath.Join(dir, n+".yaml"))
			}
			if res := pass(t, r, Options{}); res.Plan.PruneBlocked == nil || res.Plan.PruneBlocked.Held != nil {
				t.Fatalf("3 of 3 after the confirmation: %+v", res.Plan.PruneBlocked)
			}
		})
	}
}

// Manifests back: an object desired again leaves the held set, and once
// none is left the share judges again (s1–s4, created by the accident,
// are pruned when the revert removes them: 4 of 8). One still unwanted
// stays held, however few objects it is.
func TestPruneBlockClearedByManifestsBack(t *testing.T) {
	dir, state, f, _, r := replaced(t, Safety{MaxPrune: 0.5})
	for _, n := range oldSet[:3] {
		writeManifest(t, dir, n+".yaml", svcManifest(n, "one"))
	}
	res := pass(t, r, Options{})
	if b := res.Plan.PruneBlocked; b == nil || !slices.Equal(b.Objects, []string{"Service/web"}) || !slices.Equal(b.Held, []string{"Service/web"}) {
		t.Fatalf("one held object left: %+v", b)
	}
	checkOldKept(t, f, "three back")
	if held := readHeld(t, state); len(held) != 1 {
		t.Errorf("held after three came back: %v", held)
	}
	// a due object the block did not hold joins it: nothing is pruned
	os.Remove(filepath.Join(dir, "s1.yaml"))
	res = pass(t, r, Options{})
	if b := res.Plan.PruneBlocked; b == nil || !slices.Equal(b.Objects, []string{"Service/s1", "Service/web"}) || f.files["s1.service"] == nil {
		t.Fatalf("s1 beside a held web: %+v, applied %v", b, f.applied)
	}
	// the revert: web back, s1–s4 gone
	writeManifest(t, dir, "web.yaml", svcManifest("web", "one"))
	for _, n := range newSet[1:] {
		os.Remove(filepath.Join(dir, n+".yaml"))
	}
	res = pass(t, r, Options{})
	if res.Plan.PruneBlocked != nil || !slices.Equal(res.Plan.Pruned, ids(newSet)) {
		t.Fatalf("after the revert: blocked %+v, pruned %v", res.Plan.PruneBlocked, res.Plan.Pruned)
	}
	checkOldKept(t, f, "after the revert")
	if held := readHeld(t, state); len(held) != 0 {
		t.Errorf("held after the revert: %v", held)
	}
}

// With --prune-grace the share is judged when the objects stop being
// wanted: a swap of the whole set is held then, and still blocked when
// the grace ends, although the new objects count as owned by then (4 of
// 8 is not over 50 %).
func TestPruneHeldWithGrace(t *testing.T) {
	dir, state, f := t.TempDir(), t.TempDir(), newFake()
	c := &clock{t: time.Date(2026, 12, 1, 9, 13, 17, 0, time.UTC)}
	s := Safety{MaxPrune: 0.5, PruneGrace: 10 * time.Minute}
	for _, n := range oldSet {
		writeManifest(t, dir, n+".yaml", svcManifest(n, "one"))
	}
	r, _ := newSafetyReconciler(t, dir, state, f, c, s)
	pass(t, r, Options{})
	swapSets(t, dir)
	res := pass(t, r, Options{})
	if f := findingsOf(res, ReasonPruneBlocked); len(f) != 1 || !strings.Contains(f[0].Message, "4 of 4 owned objects are no longer desired") {
		t.Errorf("swap in grace: PruneBlocked findings %+v", f)
	}
	checkOldKept(t, f, "in their grace")
	c.t = c.t.Add(11 * time.Minute)
	r, _ = newSafetyReconciler(t, dir, state, f, c, s) // and an agent restart meanwhile
	res = pass(t, r, Options{})
	if b := res.Plan.PruneBlocked; b == nil || !slices.Equal(b.Held, ids(oldSet)) {
		t.Fatalf("grace over: PruneBlocked %+v", b)
	}
	checkOldKept(t, f, "grace over")
}
