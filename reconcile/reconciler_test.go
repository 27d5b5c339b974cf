package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

// fakeBackend is a tiny in-memory backend: unit files and active/enabled
// flags. It is declared beside the consumer's interfaces; when in doubt,
// the e2e suite tests the real thing against systemd.
type fakeBackend struct {
	mu      sync.Mutex // Apply runs from several workers
	files   map[string][]byte
	active  map[string]bool
	enabled map[string]bool
	failOn  map[string]error // step String prefix → error
	applied []string
	// pid is each active unit's main PID, new at each start or restart;
	// after is the ActiveState a unit takes at its next start or restart
	// ("failed", "activating"), state such a state in force.
	pid          map[string]uint32
	after, state map[string]string
	nextPID      uint32
	// backend is the observed Backend ("fake" when empty).
	backend string
}

func newFake() *fakeBackend {
	return &fakeBackend{files: map[string][]byte{}, active: map[string]bool{}, enabled: map[string]bool{}, failOn: map[string]error{},
		pid: map[string]uint32{}, after: map[string]string{}, state: map[string]string{}, nextPID: 100}
}

func (f *fakeBackend) Observe(_ context.Context, names []string) (*observed.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := &observed.State{Backend: "fake", UnitDir: "/units", Units: map[string]*observed.Unit{}}
	if f.backend != "" {
		st.Backend = f.backend
	}
	add := func(n string) {
		u := &observed.Unit{Name: n, Path: "/units/" + n, LoadState: "not-found", ActiveState: "inactive"}
		if d, ok := f.files[n]; ok {
			u.File, u.LoadState = d, "loaded"
			u.Owner, _ = ownmark.IsOwned(d)
			u.UnitFileState = "disabled"
		}
		if f.enabled[n] {
			u.UnitFileState = "enabled"
		}
		if f.active[n] {
			u.ActiveState, u.MainPID = "active", f.pid[n]
		}
		if s := f.state[n]; s != "" {
			u.ActiveState = s
		}
		st.Units[n] = u
	}
	for _, n := range names {
		add(n)
	}
	for n := range f.files {
		if _, ok := st.Units[n]; !ok {
			add(n)
		}
	}
	return st, nil
}

func (f *fakeBackend) Apply(_ context.Context, s actuators.Step) (actuators.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for prefix, err := range f.failOn {
		if strings.HasPrefix(s.String(), prefix) {
			f.applied = append(f.applied, "FAIL "+s.String())
			return actuators.Unchanged, err
		}
	}
	f.applied = append(f.applied, s.String())
	switch s.Op {
	case actuators.OpWriteFile:
		f.files[filepath.Base(s.Path)] = s.Data
	case actuators.OpRemoveFile:
		delete(f.files, filepath.Base(s.Path))
	case actuators.OpStart, actuators.OpRestart:
		f.active[s.Unit] = true
		f.nextPID++
		f.pid[s.Unit] = f.nextPID
		f.state[s.Unit] = f.after[s.Unit]
	case actuators.OpStop:
		f.active[s.Unit] = false
	case actuators.OpEnable:
		f.enabled[s.Unit] = true
	case actuators.OpDisable:
		f.enabled[s.Unit] = false
	}
	return actuators.Changed, nil
}

var _ Observer = (*fakeBackend)(nil)
var _ Applier = (*fakeBackend)(nil)

func writeManifest(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

const webManifest = `apiVersion: resil.dev/v1
kind: Service
metadata: {name: web}
spec:
  command: ["/bin/sleep", "infinity"]
`

// appliedWeb is a manifests dir with web.yaml and a reconciler over a fake
// backend that has applied it once.
func appliedWeb(t *testing.T) (dir string, f *fakeBackend, r *Reconciler, ring *Ring) {
	t.Helper()
	dir = t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f = newFake()
	r, ring = newTestReconciler(t, dir, f, nil)
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	return dir, f, r, ring
}

func newTestReconciler(t *testing.T, dir string, f *fakeBackend, now func() time.Time) (*Reconciler, *Ring) {
	log := zaptest.NewLogger(t)
	ring := NewRing(100, log)
	return New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: f, Applier: f,
		Events: ring, Log: log, Now: now}), ring
}

func TestReconcileConvergesThenNoop(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	r, _ := newTestReconciler(t, dir, f, nil)
	res, err := r.Reconcile(context.Background(), Options{})
	if err != nil || len(res.Outcomes) != 4 {
		t.Fatalf("first pass: %v, %d outcomes: %v", err, len(res.Outcomes), f.applied)
	}
	if !f.active["web.service"] || !f.enabled["web.service"] {
		t.Fatalf("not converged: %+v", f)
	}
	res, err = r.Reconcile(context.Background(), Options{})
	if err != nil || !res.Plan.Empty() {
		t.Fatalf("second pass not a no-op: %v %v", err, res.Plan.Steps)
	}
}

func TestDryRunAppliesNothing(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	r, _ := newTestReconciler(t, dir, f, nil)
	res, err := r.Reconcile(context.Background(), Options{DryRun: true})
	if err != nil || len(res.Plan.Steps) != 4 || len(f.applied) != 0 || len(res.Outcomes) != 0 {
		t.Fatalf("dry run: err %v steps %d applied %v", err, len(res.Plan.Steps), f.applied)
	}
	// The same plan is what apply then executes.
	res2, err := r.Reconcile(context.Background(), Options{ExpectPlan: res.Hash})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.applied, "\n") != stepStrings(res.Plan.Steps) || res2.Hash != res.Hash {
		t.Fatalf("apply did not execute the dry-run plan:\n%s\nvs\n%s", strings.Join(f.applied, "\n"), stepStrings(res.Plan.Steps))
	}
}

func stepStrings(steps []actuators.Step) string {
	var s []string
	for _, x := range steps {
		s = append(s, x.String())
	}
	return strings.Join(s, "\n")
}

func TestExpectPlanMismatchRefuses(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	r, _ := newTestReconciler(t, dir, f, nil)
	_, err := r.Reconcile(context.Background(), Options{ExpectPlan: "0000000000000000"})
	if !errors.Is(err, ErrExpectPlan) || len(f.applied) != 0 {
		t.Fatalf("err %v, applied %v", err, f.applied)
	}
}

// An invalid manifest keeps the last good version: nothing is stopped or pruned.
func TestInvalidManifestKeepsLastGood(t *testing.T) {
	dir, f, r, ring := appliedWeb(t)
	for _, bad := range []string{"apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: web\n", // half-written
		strings.Replace(webManifest, "command", "comand", 1)} { // invalid field
		writeManifest(t, dir, "web.yaml", bad)
		f.applied = nil
		res, err := r.Reconcile(context.Background(), Options{})
		if err != nil || !res.Plan.Empty() || res.LoadErr == nil {
			t.Fatalf("pass with a broken manifest: err %v, steps %v, load %v", err, res.Plan.Steps, res.LoadErr)
		}
		if !f.active["web.service"] || f.files["web.service"] == nil {
			t.Fatalf("broken manifest disturbed the service")
		}
	}
	var sawInvalid, sawRetained bool
	for _, e := range ring.Events() {
		sawInvalid = sawInvalid || (e.Reason == ReasonInvalid && strings.Contains(e.Message, "web.yaml"))
		sawRetained = sawRetained || e.Reason == ReasonLastGoodRetained
	}
	if !sawInvalid || !sawRetained {
		t.Fatalf("events: %+v", ring.Events())
	}
	// A fresh agent (no memory) with the broken file must not prune either.
	r2, _ := newTestReconciler(t, dir, f, nil)
	res, err := r2.Reconcile(context.Background(), Options{})
	if err != nil || !res.Plan.Empty() {
		t.Fatalf("fresh agent with broken manifest planned %v (%v)", res.Plan.Steps, err)
	}
	// Deleting the file really prunes.
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if f.files["web.service"] != nil || f.active["web.service"] {
		t.Fatalf("deleted manifest not pruned: %v", f.applied)
	}
}

func TestUnreadableDirPrunesNothing(t *testing.T) {
	dir, _, r, _ := appliedWeb(t)
	r.cfg.Manifests = filepath.Join(dir, "missing")
	res, err := r.Reconcile(context.Background(), Options{})
	if err != nil || !res.Plan.Empty() {
		t.Fatalf("missing dir: err %v plan %v", err, res.Plan.Steps)
	}
}

// A failing object backs off; a healthy one is not held back.
func TestBackoffHoldsBackOnlyTheFailingObject(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	writeManifest(t, dir, "api.yaml", strings.Replace(webManifest, "name: web", "name: api", 1))
	f := newFake()
	f.failOn["start web.service"] = errors.New("job result \"failed\"")
	now := time.Unix(1_800_000_000, 0)
	r, _ := newTestReconciler(t, dir, f, func() time.Time { return now })
	res, err := r.Reconcile(context.Background(), Options{})
	if err == nil || res.Failed() != 1 || res.RequeueAfter <= 0 {
		t.Fatalf("first pass: err %v failed %d requeue %v", err, res.Failed(), res.RequeueAfter)
	}
	if !f.active["api.service"] {
		t.Fatalf("healthy object held back: %v", f.applied)
	}
	// Within the backoff window the failing start is skipped, not retried.
	f.applied = nil
	res, _ = r.Reconcile(context.Background(), Options{})
	for _, o := range res.Outcomes {
		if o.Step.Unit == "web.service" && o.Skipped == "" {
			t.Fatalf("web retried inside its backoff: %+v", res.Outcomes)
		}
	}
	// After it, it is retried and, once healthy, forgotten.
	now = now.Add(10 * time.Minute)
	delete(f.failOn, "start web.service")
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil || !f.active["web.service"] {
		t.Fatalf("retry after backoff: %v %v", err, f.applied)
	}
	if len(r.failures) != 0 {
		t.Fatalf("failure state kept after success: %v", r.failures)
	}
}

// A failed step stops the remaining steps of that unit.
func TestFailedStepStopsUnitSteps(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	f.failOn["enable web.service"] = errors.New("boom")
	r, _ := newTestReconciler(t, dir, f, nil)
	res, _ := r.Reconcile(context.Background(), Options{})
	last := res.Outcomes[len(res.Outcomes)-1]
	if last.Step.Op != actuators.OpStart || last.Skipped == "" {
		t.Fatalf("start ran after enable failed: %+v", res.Outcomes)
	}
}

func TestPanicInPassIsRecovered(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	log := zaptest.NewLogger(t)
	r := New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, Observer: panicObserver{}, Applier: newFake(), Log: log})
	if _, err := r.Reconcile(context.Background(), Options{}); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("err = %v", err)
	}
}

type panicObserver struct{}

func (panicObserver) Observe(context.Context, []string) (*observed.State, error) { panic("boom") }

func TestLoopCollapsesKicks(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	r, _ := newTestReconciler(t, dir, f, nil)
	l := NewLoop(r, zaptest.NewLogger(t))
	l.Resync, l.Settle = time.Hour, 20*time.Millisecond
	passes := make(chan struct{}, 100)
	l.AfterPass = func(Result, error) { passes <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	<-passes // the first pass
	for i := 0; i < 50; i++ {
		l.Kick()
	}
	<-passes // one pass for the burst
	select {
	case <-passes:
		// A second pass may run only if a kick landed after the settle drained; at most one.
		select {
		case <-passes:
			t.Fatal("a burst of kicks ran more than two passes")
		case <-time.After(200 * time.Millisecond):
		}
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A kick that came before Run (a backend or watch starting) does not delay
// the first pass by the settle: the first pass covers it, and runs once.
// (Run chose between that kick and its first pass at random: a few runs
// catch it.)
func TestLoopFirstPassDoesNotSettle(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	for i := range 8 {
		r, _ := newTestReconciler(t, dir, newFake(), nil)
		l := NewLoop(r, zaptest.NewLogger(t))
		l.Resync, l.Settle = time.Hour, time.Hour
		passes := make(chan struct{}, 10)
		l.AfterPass = func(Result, error) { passes <- struct{}{} }
		l.Kick()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- l.Run(ctx) }()
		select {
		case <-passes:
		case <-time.After(10 * time.Second):
			t.Errorf("run %d: the first pass waited for the settle of a kick that came before it", i)
		}
		select {
		case <-passes:
			t.Errorf("run %d: the kick before the first pass ran a second pass", i)
		case <-time.After(20 * time.Millisecond):
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// Kicked runs when a kick wakes the loop, before the settle and the pass.
func TestLoopKickedBeforeSettle(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	r, _ := newTestReconciler(t, dir, newFake(), nil)
	l := NewLoop(r, zaptest.NewLogger(t))
	l.Resync, l.Settle = time.Hour, 50*time.Millisecond
	var kicked atomic.Int32
	var kickedAt time.Time
	l.Kicked = func() {
		if kicked.Add(1) == 1 {
			kickedAt = time.Now()
		}
	}
	passes := make(chan time.Time, 10)
	l.AfterPass = func(Result, error) { passes <- time.Now() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	<-passes // the first pass: no kick
	if n := kicked.Load(); n != 0 {
		t.Errorf("Kicked called %d times before any kick", n)
	}
	l.Kick()
	passAt := <-passes
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := kicked.Load(); n != 1 || passAt.Sub(kickedAt) < l.Settle {
		t.Errorf("Kicked called %d times, %s before the pass ended; want once, at least the settle (%s) before", n, passAt.Sub(kickedAt), l.Settle)
	}
}

// blockingApplier makes "start a-slow.service" wait until "start
// b-fast.service" ran: with serial execution it would give up and fail.
type blockingApplier struct {
	*fakeBackend
	fastStarted chan struct{}
}

func (b blockingApplier) Apply(ctx context.Context, s actuators.Step) (actuators.Result, error) {
	switch s.String() {
	case "start a-slow.service (new unit)":
		select {
		case <-b.fastStarted:
		case <-time.After(10 * time.Second):
			return actuators.Unchanged, errors.New("b-fast was never started while a-slow's start was pending")
		}
	case "start b-fast.service (new unit)":
		defer close(b.fastStarted)
	}
	return b.fakeBackend.Apply(ctx, s)
}

// One slow start does not hold back the other units' runtime steps.
func TestSlowStartDoesNotBlockOthers(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "a.yaml", strings.Replace(webManifest, "name: web", "name: a-slow", 1))
	writeManifest(t, dir, "b.yaml", strings.Replace(webManifest, "name: web", "name: b-fast", 1))
	f := newFake()
	log := zaptest.NewLogger(t)
	r := New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: f,
		Applier: blockingApplier{f, make(chan struct{})}, Log: log})
	res, err := r.Reconcile(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Outcomes still come back in plan order.
	if stepStrings(res.Plan.Steps) != stepStringsOf(res.Outcomes) {
		t.Fatalf("outcomes out of plan order")
	}
}

func stepStringsOf(oc []StepOutcome) string {
	var s []actuators.Step
	for _, o := range oc {
		s = append(s, o.Step)
	}
	return stepStrings(s)
}

// The AfterStep test hook sees every step that ran, with its plan index,
// and none that was skipped.
func TestAfterStepHookSeesStepsThatRan(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	writeManifest(t, dir, "db.yaml", strings.ReplaceAll(webManifest, "web", "db"))
	f := newFake()
	f.failOn["enable db.service"] = errors.New("boom")
	log := zaptest.NewLogger(t)
	var mu sync.Mutex
	seen := map[int]string{}
	r := New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: f, Applier: f, Log: log,
		AfterStep: func(i int, s actuators.Step) {
			mu.Lock()
			defer mu.Unlock()
			seen[i] = s.String()
		}})
	res, _ := r.Reconcile(context.Background(), Options{})
	for i, oc := range res.Outcomes {
		got, ok := seen[i]
		switch {
		case oc.Skipped != "" && ok:
			t.Errorf("hook called for skipped step %d %s", i, oc.Step)
		case oc.Skipped == "" && got != oc.Step.String():
			t.Errorf("hook for step %d: got %q, want %q", i, got, oc.Step)
		}
	}
	if len(seen) == 0 || len(seen) == len(res.Outcomes) {
		t.Fatalf("hook saw %d of %d steps; want all but the skipped start of db: %v", len(seen), len(res.Outcomes), seen)
	}
}

// A pass renders only the objects the loader did not hand back unchanged
// (its FileCache returns the same *Object for an unchanged file).
func TestReconcileRendersChangedObjectsOnly(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	writeManifest(t, dir, "api.yaml", strings.ReplaceAll(webManifest, "web", "api"))
	time.Sleep(2100 * time.Millisecond) // past the loader's racy window: cacheable
	f := newFake()
	log := zaptest.NewLogger(t)
	var mu sync.Mutex
	renders := map[string]int{}
	r := New(Config{Manifests: dir, Load: desired.Options{Insecure: true, Cache: desired.NewFileCache()}, UnitDir: "/units",
		Observer: f, Applier: f, Events: NewRing(100, log), Log: log,
		Render: func(o *desired.Object) ([]desired.UnitFile, error) {
			mu.Lock()
			renders[o.ID()]++
			mu.Unlock()
			return desired.Render(o)
		}})
	pass := func() {
		t.Helper()
		if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
			t.Fatal(err)
		}
	}
	pass()
	pass()
	if renders["Service/web"] != 1 || renders["Service/api"] != 1 {
		t.Errorf("two passes over unchanged files: renders %v, want one each", renders)
	}
	writeManifest(t, dir, "web.yaml", strings.Replace(webManifest, "/bin/sleep", "/bin/true", 1))
	pass()
	if renders["Service/web"] != 2 || renders["Service/api"] != 1 {
		t.Errorf("after web.yaml changed: renders %v, want web 2, api 1", renders)
	}
}

// A condition seen by consecutive passes (a unit left failed) is one
// event, recorded at its onset; it going away and coming back is a new
// occurrence of it.
func TestFindingRecordedAtOnsetOnly(t *testing.T) {
	_, f, r, ring := appliedWeb(t)
	count := func() int {
		n := 0
		for _, e := range ring.Events() {
			if e.Reason == ReasonFailed && e.Object == "Service/web" {
				n += e.Count
			}
		}
		return n
	}
	for i, tt := range []struct {
		state string
		want  int
	}{
		{"failed", 1}, {"failed", 1}, {"failed", 1}, {"", 1}, {"failed", 2}, {"failed", 2},
	} {
		f.mu.Lock()
		f.state["web.service"] = tt.state
		f.mu.Unlock()
		if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
			t.Fatal(err)
		}
		if got := count(); got != tt.want {
			t.Fatalf("pass %d (%q): %d Failed events, want %d: %+v", i+2, tt.state, got, tt.want, ring.Events())
		}
	}
}

// An object the backend cannot honour (its render refused with
// actuators.ErrUnsupported) is not applied, and its status is Invalid,
// not missing (it vanished from `status` and the Invalid metric).
func TestUnsupportedObjectIsInvalidInStatus(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	log := zaptest.NewLogger(t)
	r := New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: f, Applier: f, Events: NewRing(100, log), Log: log,
		Render: func(o *desired.Object) ([]desired.UnitFile, error) {
			return nil, fmt.Errorf("%s: resources: %w", o.ID(), actuators.ErrUnsupported)
		}})
	res, _ := r.Reconcile(context.Background(), Options{})
	if len(f.applied) != 0 || len(res.Unsupported) != 1 {
		t.Fatalf("applied %v, unsupported %v", f.applied, res.Unsupported)
	}
	if st := Classify(res)["Service/web"]; st.State != StateInvalid || !strings.Contains(st.Message, "Unsupported: ") {
		t.Errorf("status %+v", st)
	}
}

// A load problem (an invalid manifest, the last good version retained)
// is a condition too: recorded once while it lasts, not every pass.
func TestLoadConditionRecordedAtOnsetOnly(t *testing.T) {
	dir, _, r, ring := appliedWeb(t)
	writeManifest(t, dir, "web.yaml", webManifest+"  comand: [x]\n")
	for range 3 {
		r.Reconcile(context.Background(), Options{})
	}
	counts := map[Reason]int{}
	for _, e := range ring.Events() {
		counts[e.Reason] += e.Count
	}
	if counts[ReasonInvalid] != 1 || counts[ReasonLastGoodRetained] != 1 {
		t.Errorf("over 3 passes: %d InvalidManifest, %d LastGoodRetained events, want 1 each: %+v", counts[ReasonInvalid], counts[ReasonLastGoodRetained], ring.Events())
	}
}

// A condition that lasts is recorded again once a day, so the event
// store's retention (by last seen) never drops one still in force.
func TestLastingConditionRefreshedDaily(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	r, ring := newTestReconciler(t, dir, f, func() time.Time { return now })
	r.Reconcile(context.Background(), Options{})
	f.mu.Lock()
	f.state["web.service"] = "failed"
	f.mu.Unlock()
	count := func() int {
		n := 0
		for _, e := range ring.Events() {
			if e.Reason == ReasonFailed {
				n += e.Count
			}
		}
		return n
	}
	for _, step := range []struct {
		after time.Duration
		want  int
	}{{time.Minute, 1}, {time.Hour, 1}, {23 * time.Hour, 2}, {time.Hour, 2}} {
		now = now.Add(step.after)
		r.Reconcile(context.Background(), Options{})
		if got := count(); got != step.want {
			t.Fatalf("at %s: %d Failed events, want %d", now, got, step.want)
		}
	}
}

// A manifest held open for writing holds its objects (Invalid); a writer
// that closes it without writing makes no event the watch sees (no
// IN_CLOSE_WRITE), so the loop comes back by itself while a file is busy,
// and the objects are released without a kick or a resync (QA: Invalid
// until the 5-minute resync after `sleep 30 7>>web.yaml`).
func TestLoopRechecksBusyManifest(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	r, _ := newTestReconciler(t, dir, newFake(), nil)
	l := NewLoop(r, zaptest.NewLogger(t))
	l.Resync, l.Settle = time.Hour, 10*time.Millisecond
	passes := runLoop(t, l)
	held := func(res Result) bool {
		for _, f := range res.Plan.Findings {
			if f.Reason == ReasonLastGoodRetained && f.Object == "Service/web" {
				return true
			}
		}
		return false
	}
	if res := <-passes; held(res) || res.RequeueAfter != 0 {
		t.Fatalf("first pass: held %v, requeue %s", held(res), res.RequeueAfter)
	}
	w, err := os.OpenFile(filepath.Join(dir, "web.yaml"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	l.Kick() // another file's change
	if res := <-passes; !held(res) || res.RequeueAfter <= 0 || res.RequeueAfter > busyRecheck {
		t.Fatalf("pass with web.yaml open for writing: held %v, requeue %s", held(res), res.RequeueAfter)
	}
	if err := w.Close(); err != nil { // nothing written
		t.Fatal(err)
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case res := <-passes:
			if !held(res) {
				if res.RequeueAfter != 0 {
					t.Errorf("requeue %s once no file is busy", res.RequeueAfter)
				}
				return
			}
		case <-timeout:
			t.Fatal("web still held 20s after its writer closed the file (no pass came back)")
		}
	}
}

// runLoop runs l until the test ends (then stops it and checks it
// returned no error) and returns each pass's Result (AfterPass).
func runLoop(t *testing.T, l *Loop) <-chan Result {
	t.Helper()
	passes := make(chan Result, 100)
	l.AfterPass = func(res Result, _ error) { passes <- res }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return passes
}

// With AfterSteps, a pass whose steps changed something hands AfterPass
// what they left (Result.After), read after the steps; a pass that
// changed nothing has none. Without it, the agent's own start was seen
// only by the next pass.
func TestLoopAfterSteps(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("AfterSteps=%t", on), func(t *testing.T) {
			dir := t.TempDir()
			writeManifest(t, dir, "web.yaml", webManifest)
			r, _ := newTestReconciler(t, dir, newFake(), nil)
			l := NewLoop(r, zaptest.NewLogger(t))
			l.Resync, l.Settle, l.AfterSteps = time.Hour, 10*time.Millisecond, on
			passes := runLoop(t, l)
			first := <-passes
			if !first.Changed() || first.Observed.Units["web.service"].Active() {
				t.Fatalf("first pass: changed %t, web observed active before its start", first.Changed())
			}
			if !on {
				if first.After != nil {
					t.Fatal("After without AfterSteps")
				}
				return
			}
			a := first.After
			if a == nil || a.Observed == nil || len(a.Outcomes) != 0 || len(a.Plan.Steps) != 0 {
				t.Fatalf("After = %+v, want an observation with nothing left to do", a)
			}
			if u := a.Observed.Units["web.service"]; u == nil || !u.Active() {
				t.Fatalf("After: web.service %+v, want active (started by the pass)", u)
			}
			l.Kick()
			if res := <-passes; res.Changed() || res.After != nil {
				t.Fatalf("converged pass: changed %t, After %v", res.Changed(), res.After != nil)
			}
		})
	}
}
