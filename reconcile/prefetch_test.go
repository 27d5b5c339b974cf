package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/observed"
)

// callObserver records the names of each Observe call and may fail the
// prefetch (a call without names).
type callObserver struct {
	*fakeBackend
	mu        sync.Mutex
	calls     []string
	failNoNil bool
}

func (c *callObserver) Observe(ctx context.Context, names []string) (*observed.State, error) {
	c.mu.Lock()
	c.calls = append(c.calls, fmt.Sprint(names))
	c.mu.Unlock()
	if names == nil && c.failNoNil {
		return nil, errors.New("prefetch failed")
	}
	return c.fakeBackend.Observe(ctx, names)
}

// prefetchSetup: a reconciler that applied web.yaml (and, with add, has
// api.yaml new), its observer now a callObserver, and the dry-run plan
// without any prefetch.
func prefetchSetup(t *testing.T, add, failNoNil bool) (*Reconciler, *callObserver, Result) {
	t.Helper()
	dir, f, r, _ := appliedWeb(t)
	if add {
		writeManifest(t, dir, "api.yaml", strings.ReplaceAll(webManifest, "web", "api"))
	}
	want, err := r.Reconcile(context.Background(), Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	obs := &callObserver{fakeBackend: f, failNoNil: failNoNil}
	r.cfg.Observer = obs
	return r, obs, want
}

// TestPrefetch: the observation made while the manifests load is used
// when it covers every desired unit, and made again with the desired names
// otherwise; the plan is the plan without the prefetch either way.
func TestPrefetch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		add       bool // a new manifest after the first apply
		failNoNil bool
		calls     string
	}{
		// The second pass of each case reads with the names: a prefetch
		// serves one pass only.
		{name: "converged: one read, the prefetch", calls: "[[] [web.service]]"},
		{name: "new unit: read again with the names", add: true, calls: "[[] [api.service web.service] [api.service web.service]]"},
		{name: "prefetch failed: read again", failNoNil: true, calls: "[[] [web.service] [web.service]]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, obs, want := prefetchSetup(t, tc.add, tc.failNoNil)
			pre := StartPrefetch(context.Background(), obs)
			defer pre.Wait()
			got, err := r.Reconcile(context.Background(), Options{DryRun: true, Prefetched: pre})
			if err != nil {
				t.Fatal(err)
			}
			again, err := r.Reconcile(context.Background(), Options{DryRun: true, Prefetched: pre})
			if err != nil {
				t.Fatal(err)
			}
			if again.Hash != want.Hash {
				t.Errorf("second pass with a used prefetch: plan %s, want %s", again.Hash, want.Hash)
			}
			if fmt.Sprint(obs.calls) != tc.calls {
				t.Errorf("Observe calls %v, want %s", obs.calls, tc.calls)
			}
			if got.Hash != want.Hash || len(got.Plan.Steps) != len(want.Plan.Steps) {
				t.Errorf("plan with the prefetch %s (%d steps), without %s (%d steps)", got.Hash, len(got.Plan.Steps), want.Hash, len(want.Plan.Steps))
			}
			if tc.add && len(got.Plan.Steps) == 0 {
				t.Error("no steps for the new manifest")
			}
		})
	}
}

// TestOverlap: an agent's pass (Options.Overlap) reads the backend while
// it loads and uses that read when it covers every desired unit, reads
// again with the desired names when it does not (the observed-only read
// of a new unit, from the cache in the agent) and not at all with Full;
// the plan is the plan without it.
func TestOverlap(t *testing.T) {
	for _, tc := range []struct {
		name      string
		add       bool
		full      bool
		failNoNil bool
		calls     string
	}{
		{name: "converged: one read, made while loading", calls: "[[]]"},
		{name: "new unit: read again with the names", add: true, calls: "[[] [api.service web.service]]"},
		{name: "read while loading failed: read again", failNoNil: true, calls: "[[] [web.service]]"},
		{name: "full pass: no read while loading", full: true, calls: "[[web.service]]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, obs, want := prefetchSetup(t, tc.add, tc.failNoNil)
			got, err := r.Reconcile(context.Background(), Options{DryRun: true, Overlap: true, Full: tc.full})
			checkSamePlan(t, "Overlap", obs, tc.calls, got, err, want)
		})
	}
}

// checkSamePlan checks a pass's result got (err) made with option what:
// the Observe calls it made are calls, and its plan is want's, the plan
// made without the option.
func checkSamePlan(t *testing.T, what string, obs *callObserver, calls string, got Result, err error, want Result) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(obs.calls) != calls {
		t.Errorf("Observe calls %v, want %s", obs.calls, calls)
	}
	if got.Hash != want.Hash || len(got.Plan.Steps) != len(want.Plan.Steps) {
		t.Errorf("plan with %s %s (%d steps), without %s (%d steps)", what, got.Hash, len(got.Plan.Steps), want.Hash, len(want.Plan.Steps))
	}
}

// seqObserver is a callObserver that is a ChangeCounter: seq is what
// ChangeSeq says (ok unless blind); a test moves seq to stand for a
// signal arriving after the read ahead began.
type seqObserver struct {
	*callObserver
	seq   uint64
	blind bool
}

func (s *seqObserver) ChangeSeq() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq, !s.blind
}

// TestAhead: the read the loop starts before its settle delay serves the
// pass when nothing changed since it began; otherwise (a change, an
// Observer that cannot tell, a full pass) the pass observes as it would
// have. The plan is the same either way.
func TestAhead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		blind   bool // ChangeSeq cannot tell
		changed bool // ChangeSeq moved after the read ahead began
		full    bool
		noAhead bool // ObserveAhead returned nil
		calls   string
	}{
		{name: "nothing changed: the read ahead is the pass's only read", calls: "[[]]"},
		{name: "a change since: the pass reads again", changed: true, calls: "[[] []]"},
		{name: "cannot tell: no read ahead", blind: true, noAhead: true, calls: "[[]]"},
		{name: "full pass: not used", full: true, calls: "[[] [web.service]]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, obs, want := prefetchSetup(t, false, false)
			so := &seqObserver{callObserver: obs, seq: 7, blind: tc.blind}
			r.cfg.Observer = so
			ahead := r.ObserveAhead(context.Background())
			if (ahead == nil) != tc.noAhead {
				t.Fatalf("ObserveAhead = %v, want nil: %v", ahead, tc.noAhead)
			}
			defer ahead.Wait()
			if ahead != nil {
				<-ahead.pre.done // as after the loop's settle delay
			}
			if tc.changed {
				so.mu.Lock()
				so.seq++
				so.mu.Unlock()
			}
			got, err := r.Reconcile(context.Background(), Options{DryRun: true, Overlap: true, Full: tc.full, Ahead: ahead})
			checkSamePlan(t, "Ahead", obs, tc.calls, got, err, want)
		})
	}
}

// TestLoopAhead: with Overlap, a kick starts the read ahead before the
// settle delay and the pass after it uses that read (no read of its own);
// cancelling during the settle waits for the read.
func TestLoopAhead(t *testing.T) {
	r, obs, _ := prefetchSetup(t, false, false)
	so := &seqObserver{callObserver: obs, seq: 1}
	r.cfg.Observer = so
	l := NewLoop(r, zaptest.NewLogger(t))
	l.Resync, l.Settle, l.Overlap = time.Hour, 30*time.Millisecond, true
	passes := make(chan struct{}, 10)
	l.AfterPass = func(Result, error) { passes <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	<-passes // the first pass: full
	l.Kick()
	<-passes
	obs.mu.Lock()
	got := fmt.Sprint(obs.calls)
	obs.mu.Unlock()
	if want := "[[web.service] []]"; got != want {
		t.Errorf("Observe calls %s, want %s (the full first pass, then the read ahead only)", got, want)
	}
	l.Settle = time.Hour
	l.Kick()
	time.Sleep(20 * time.Millisecond) // in the settle delay
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
