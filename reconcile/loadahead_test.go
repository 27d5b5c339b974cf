package reconcile

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
)

// TestLoadAhead: a pass given a LoadAhead uses its manifests when no
// manifest event came since it began, and loads again when one did; with
// no ManifestSeq there is none.
func TestLoadAhead(t *testing.T) {
	for _, tc := range []struct {
		name     string
		seq      bool // a ManifestSeq
		event    bool // a manifest event after the load ahead began
		wantNew  bool // the pass sees api.yaml, written after it began
		wantUsed int  // passes that used the load ahead
	}{
		{name: "no event: the load ahead", seq: true, wantNew: false, wantUsed: 1},
		{name: "an event: loaded again", seq: true, event: true, wantNew: true},
		{name: "no manifest count: no load ahead", wantNew: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _, r, _ := appliedWeb(t)
			var events atomic.Uint64
			if tc.seq {
				r.cfg.ManifestSeq = events.Load
			}
			la := r.StartLoadAhead()
			if (la != nil) != tc.seq {
				t.Fatalf("load ahead %v, want one: %v", la, tc.seq)
			}
			la.Wait()
			// Written after the load ahead read the directory (a real
			// watch would count it: here only when the case says so).
			writeManifest(t, dir, "api.yaml", strings.ReplaceAll(webManifest, "web", "api"))
			if tc.event {
				events.Add(1)
			}
			res, err := r.Reconcile(context.Background(), Options{DryRun: true, LoadAhead: la})
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Objects == 2; got != tc.wantNew {
				t.Errorf("%d objects planned (steps %v), want api.yaml seen: %v", res.Objects, res.Plan.Steps, tc.wantNew)
			}
			if r.loadsAhead != tc.wantUsed {
				t.Errorf("%d passes used the load ahead, want %d", r.loadsAhead, tc.wantUsed)
			}
		})
	}
}

// TestRestartLoadAhead: a kick during the settle delay keeps the load
// ahead when no manifest event came since it began, and starts a new one
// (which sees the change) when one did.
func TestRestartLoadAhead(t *testing.T) {
	dir, _, r, _ := appliedWeb(t)
	var events atomic.Uint64
	r.cfg.ManifestSeq = events.Load
	la := r.StartLoadAhead()
	if got := r.restartLoadAhead(la); got != la {
		t.Fatal("no event: the load ahead was started again")
	}
	la.Wait()
	writeManifest(t, dir, "api.yaml", strings.ReplaceAll(webManifest, "web", "api"))
	events.Add(1)
	again := r.restartLoadAhead(la)
	if again == la || again == nil {
		t.Fatalf("an event: load ahead %p, want a new one (was %p)", again, la)
	}
	res, err := r.Reconcile(context.Background(), Options{DryRun: true, LoadAhead: again})
	again.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.Objects != 2 || r.loadsAhead != 1 {
		t.Errorf("%d objects planned, %d passes used the load ahead; want 2 and 1", res.Objects, r.loadsAhead)
	}
}
