package reconcile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A file that lost an object is waited for (Config.PruneQuiet) before the
// object is pruned: a script appending documents one by one has written
// only some of them for a moment. The object stays at its last good
// version, the pass asks to be run again when the quiet period ends, and
// then prunes it. A removed file, and an agent with no quiet period
// (apply), prune at once.
func TestPruneQuiet(t *testing.T) {
	both := svcManifest("a", "one") + "---\n" + svcManifest("b", "one")
	for _, tc := range []struct {
		name      string
		quiet     time.Duration
		change    func(t *testing.T, dir string)
		wantKept  bool
		sinceEdit time.Duration // the clock's distance from the edit at the second pass
	}{
		{"file rewritten without b, quiet period running", 2 * time.Second, func(t *testing.T, dir string) {
			writeManifest(t, dir, "ab.yaml", svcManifest("a", "one"))
		}, true, 0},
		{"file rewritten without b, quiet period over", 2 * time.Second, func(t *testing.T, dir string) {
			writeManifest(t, dir, "ab.yaml", svcManifest("a", "one"))
		}, false, 3 * time.Second},
		{"no quiet period (apply)", 0, func(t *testing.T, dir string) {
			writeManifest(t, dir, "ab.yaml", svcManifest("a", "one"))
		}, false, 0},
		{"file removed", 2 * time.Second, func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "ab.yaml")); err != nil {
				t.Fatal(err)
			}
		}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeManifest(t, dir, "ab.yaml", both)
			f := newFake()
			var offset time.Duration
			r, ring := newTestReconciler(t, dir, f, func() time.Time { return time.Now().Add(offset) })
			r.cfg.PruneQuiet = tc.quiet
			r.cfg.Safety.MaxPrune = 0 // the mass-prune guard off: one of two is half
			pass(t, r, Options{})
			if !f.active["b.service"] {
				t.Fatal("b not started")
			}
			tc.change(t, dir)
			offset = tc.sinceEdit
			res := pass(t, r, Options{})
			pruned := !f.active["b.service"]
			if pruned == tc.wantKept {
				t.Fatalf("b pruned %v, want kept %v; steps %v", pruned, tc.wantKept, res.Plan.Steps)
			}
			if !tc.wantKept {
				return
			}
			if !hasEvent(ring, ReasonPrunePending, "ab.yaml declares it no more and changed less than 2s ago") {
				t.Errorf("no PrunePending naming the file: %+v", ring.Events())
			}
			if res.RequeueAfter <= 0 || res.RequeueAfter > tc.quiet {
				t.Errorf("RequeueAfter %s, want the rest of the quiet period (≤ %s)", res.RequeueAfter, tc.quiet)
			}
			// The script appends b back: nothing was pruned or restarted.
			writeManifest(t, dir, "ab.yaml", both)
			res = pass(t, r, Options{})
			for _, s := range res.Plan.Steps {
				if strings.Contains(s.Unit, "b.service") {
					t.Errorf("b touched once its file holds it again: %v", res.Plan.Steps)
				}
			}
		})
	}
}

// The quiet period is bounded: a change time in the future (a clock
// stepped back) holds an object one quiet period, not the skew; and a file
// whose change time keeps moving (chmod by configuration management) holds
// it at most pruneQuietMaxHolds periods.
func TestPruneQuietBounded(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "ab.yaml", svcManifest("a", "one")+"---\n"+svcManifest("b", "one"))
	f := newFake()
	var offset time.Duration
	r, _ := newTestReconciler(t, dir, f, func() time.Time { return time.Now().Add(offset) })
	r.cfg.PruneQuiet = 2 * time.Second
	r.cfg.Safety.MaxPrune = 0
	pass(t, r, Options{})
	writeManifest(t, dir, "ab.yaml", svcManifest("a", "one"))

	offset = -time.Hour // the file changed "an hour from now"
	res := pass(t, r, Options{})
	if !f.active["b.service"] || res.RequeueAfter <= 0 || res.RequeueAfter > 2*time.Second {
		t.Fatalf("future change time: b active %v, RequeueAfter %s; want kept for at most one quiet period", f.active["b.service"], res.RequeueAfter)
	}
	offset = -time.Hour + 1500*time.Millisecond
	pass(t, r, Options{})
	if !f.active["b.service"] {
		t.Fatal("future change time: b pruned before one quiet period")
	}
	offset = -time.Hour + 2*time.Second
	pass(t, r, Options{})
	if f.active["b.service"] {
		t.Fatal("future change time: b still kept one quiet period after its first hold")
	}

	// A file that changes again and again (its ctime now each time) is
	// kept until pruneQuietMaxHolds periods have passed since the first
	// hold (set back here: the test's clock cannot move past the file's
	// real change time).
	writeManifest(t, dir, "cd.yaml", svcManifest("c", "one")+"---\n"+svcManifest("d", "one"))
	offset = 0
	pass(t, r, Options{})
	writeManifest(t, dir, "cd.yaml", svcManifest("c", "one"))
	touch := func() {
		if err := os.Chmod(filepath.Join(dir, "cd.yaml"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pass(t, r, Options{})
	if !f.active["d.service"] {
		t.Fatal("d pruned at once")
	}
	for _, ago := range []time.Duration{pruneQuietMaxHolds*2*time.Second - time.Second, pruneQuietMaxHolds * 2 * time.Second} {
		r.quietSince["Service/d"] = time.Now().Add(-ago)
		touch()
		pass(t, r, Options{})
		if kept := f.active["d.service"]; kept != (ago < pruneQuietMaxHolds*2*time.Second) {
			t.Fatalf("first held %s ago, the file just changed: d kept %v", ago, kept)
		}
	}
}
