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
			if !hasEvent(ring, ReasonLastGoodRetained, "ab.yaml declares it no more and changed less than 2s ago") {
				t.Errorf("no LastGoodRetained naming the file: %+v", ring.Events())
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
