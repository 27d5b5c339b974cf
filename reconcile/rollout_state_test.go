package reconcile

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

// restartsOf are the units a pass restarted, in plan order.
func restartsOf(res Result) string {
	var out []string
	for _, o := range res.Outcomes {
		if o.Step.Op == actuators.OpRestart && o.Err == nil {
			out = append(out, strings.TrimSuffix(o.Step.Unit, ".service"))
		}
	}
	return strings.Join(out, " ")
}

// A rollout across passes: the record in the state dir counts the waves
// and the services restarted, the jitter gate holds each later wave for a
// while once the previous one is ready, a failed service of the rollout
// halts it, `rollout resume` lets the failure pass, and a new agent on the
// same state dir goes on with the same rollout.
func TestRolloutRecordJitterHaltResume(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	names := []string{"a", "b", "c", "d", "e"}
	write := func(mode string) {
		for _, n := range names {
			writeManifest(t, dir, n+".yaml", svcManifest(n, mode))
		}
	}
	write("one")
	f := newFake()
	c := &clock{t: time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)}
	ring := NewRing(500, zaptest.NewLogger(t))
	newR := func() *Reconciler {
		return New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: f, Applier: f,
			Events: ring, Log: zaptest.NewLogger(t), Now: c.now, Safety: Safety{StateDir: state},
			MaxParallelRestarts: 2, Rollout: RolloutConfig{Jitter: 10 * time.Second}})
	}
	r := newR()
	pass(t, r, Options{}) // cold start: nothing runs yet, no rollout
	if _, ok, _ := ReadRolloutRecord(state); ok {
		t.Fatal("a cold start wrote a rollout record")
	}

	write("two")
	res := pass(t, r, Options{})
	if got := restartsOf(res); got != "a b" {
		t.Fatalf("first wave %q, want a b", got)
	}
	rec, ok, err := ReadRolloutRecord(state)
	if err != nil || !ok || !rec.Active || rec.WaveCount != 1 || rec.Total() != 5 {
		t.Fatalf("record after wave 1: %+v %v %v", rec, ok, err)
	}
	// The first wave is ready: the next one waits for its jitter gate.
	res = pass(t, r, Options{})
	if got := restartsOf(res); got != "" || res.Plan.Rollout == nil || res.Plan.Rollout.HoldUntil == nil {
		t.Fatalf("wave 2 not held by the jitter gate: restarted %q, report %+v", got, res.Plan.Rollout)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > 10*time.Second {
		t.Errorf("requeue %v, want the gate (at most the jitter)", res.RequeueAfter)
	}
	c.advance(10 * time.Second)
	if got := restartsOf(pass(t, r, Options{})); got != "c d" {
		t.Fatalf("wave 2 after the gate %q, want c d", got)
	}
	pass(t, r, Options{}) // gate for wave 3
	c.advance(10 * time.Second)
	if got := restartsOf(pass(t, r, Options{})); got != "e" {
		t.Fatalf("wave 3 %q, want e", got)
	}
	pass(t, r, Options{})
	rec, _, _ = ReadRolloutRecord(state)
	if rec.Active || rec.Ended == nil || rec.WaveCount != 3 || strings.Join(rec.Restarted, " ") != "a.service b.service c.service d.service e.service" {
		t.Fatalf("record after the rollout: %+v", rec)
	}
	if len(eventsOf(ring, ReasonRolloutStarted)) != 1 || len(eventsOf(ring, ReasonRolloutComplete)) != 1 {
		t.Errorf("events: %d started, %d complete, want 1 each", len(eventsOf(ring, ReasonRolloutStarted)), len(eventsOf(ring, ReasonRolloutComplete)))
	}

	// A bad version: a fails in the first wave and halts the rollout.
	f.after["a.service"] = "failed"
	write("three")
	if got := restartsOf(pass(t, r, Options{})); got != "a b" {
		t.Fatalf("bad first wave %q, want a b", got)
	}
	res = pass(t, r, Options{})
	if got := restartsOf(res); got != "" || res.Plan.Rollout == nil || !res.Plan.Rollout.Halted || len(findingsOf(res, ReasonRolloutHalted)) != 1 {
		t.Fatalf("not halted: restarted %q, report %+v", got, res.Plan.Rollout)
	}
	if h := res.Plan.Rollout.Failed; len(h) != 1 || h[0].Unit != "a.service" || h[0].Hash == "" {
		t.Fatalf("failed %+v", h)
	}
	// A new agent (kill -9 and restart) keeps the halt: the record says a
	// is the rollout's.
	r = newR()
	if res = pass(t, r, Options{}); res.Plan.Rollout == nil || !res.Plan.Rollout.Halted {
		t.Fatalf("a new agent forgot the halted rollout: %+v", res.Plan.Rollout)
	}
	// A record the agent may not trust (writable by others: anyone could
	// have emptied it) keeps the halt too: every service counts as the
	// rollout's; the file is left for the operator, then trusted again.
	recPath := filepath.Join(state, RolloutFileName)
	if err := os.Chmod(recPath, 0o666); err != nil {
		t.Fatal(err)
	}
	r = newR()
	for range 2 {
		res = pass(t, r, Options{})
		if got := restartsOf(res); got != "" || res.Plan.Rollout == nil || !res.Plan.Rollout.Halted {
			t.Fatalf("a refused record dropped the halt: restarted %q, report %+v", got, res.Plan.Rollout)
		}
		if !slices.ContainsFunc(findingsOf(res, ReasonRolloutPending), func(f Finding) bool { return strings.Contains(f.Message, "rollout record refused") }) {
			t.Fatalf("no finding names the refused record: %+v", res.Plan.Findings)
		}
	}
	if fi, err := os.Stat(recPath); err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("the refused record was replaced: %v %v", fi.Mode(), err)
	}
	if err := os.Chmod(recPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if res = pass(t, r, Options{}); res.Plan.Rollout == nil || !res.Plan.Rollout.Halted ||
		slices.ContainsFunc(findingsOf(res, ReasonRolloutPending), func(f Finding) bool { return strings.Contains(f.Message, "rollout record refused") }) {
		t.Fatalf("record trusted again: %+v %+v", res.Plan.Rollout, res.Plan.Findings)
	}
	// rollout resume: acknowledge a's failed version.
	if err := WriteRolloutResume(state, RolloutResume{Time: c.t, User: "alice", Acks: map[string]string{"a.service": res.Plan.Rollout.Failed[0].Hash}}); err != nil {
		t.Fatal(err)
	}
	pass(t, r, Options{}) // the jitter gate before the next wave
	c.advance(10 * time.Second)
	res = pass(t, r, Options{})
	if got := restartsOf(res); got != "c d" || !slices.Contains(res.Plan.Rollout.Acknowledged, "a.service") {
		t.Fatalf("after resume: restarted %q, report %+v", got, res.Plan.Rollout)
	}
	// The acknowledgement is for that version only: a's next version,
	// failing too, halts the rollout again (e still pending).
	writeManifest(t, dir, "a.yaml", svcManifest("a", "four"))
	pass(t, r, Options{}) // a is restarted at once (it is not running: no wave)
	res = pass(t, r, Options{})
	if res.Plan.Rollout == nil || !res.Plan.Rollout.Halted || len(res.Plan.Rollout.Acknowledged) != 0 {
		t.Fatalf("a's new failing version did not halt: %+v", res.Plan.Rollout)
	}
	if got := res.Plan.Rollout.Pending(); len(got) != 1 || got[0] != "e.service" {
		t.Errorf("pending %v, want e.service", got)
	}
	if _, err := os.Stat(filepath.Join(state, RolloutFileName)); err != nil {
		t.Fatal(err)
	}
}

// A record trusted again keeps what this agent did while it was refused.
func TestMergeRollout(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	ended := t0.Add(time.Minute)
	old := RolloutRecord{Active: false, Started: t0, Ended: &ended, Restarted: []string{"a.service"}, WaveCount: 1}
	mem := RolloutRecord{Active: true, Started: t0.Add(time.Hour), Restarted: []string{"b.service", "c.service"}, WaveCount: 1,
		Last: &RolloutReport{MaxParallel: 2}}
	got := mergeRollout(old, mem)
	if !got.Active || got.Ended != nil || !got.Started.Equal(mem.Started) || got.Last == nil ||
		strings.Join(got.Restarted, " ") != "a.service b.service c.service" {
		t.Errorf("merged %+v", got)
	}
	// Nothing in flight here: the file's record as read, plus members.
	got = mergeRollout(RolloutRecord{Active: true, Started: t0, Restarted: []string{"a.service"}, WaveCount: 2}, RolloutRecord{Restarted: []string{"b.service"}})
	if !got.Active || !got.Started.Equal(t0) || got.WaveCount != 2 || strings.Join(got.Restarted, " ") != "a.service b.service" {
		t.Errorf("merged %+v", got)
	}
}

// A rollout a paced agent left in flight (killed after its first wave) is
// over once a pass without pacing (apply) has restarted the rest without
// a failure: the record says so, and a RolloutComplete event is recorded.
// A dry run (diff) leaves it as it is.
func TestUnpacedPassFinishesRollout(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	names := []string{"a", "b", "c"}
	write := func(mode string) {
		for _, n := range names {
			writeManifest(t, dir, n+".yaml", svcManifest(n, mode))
		}
	}
	write("one")
	f := newFake()
	ring := NewRing(500, zaptest.NewLogger(t))
	newR := func(maxParallel int) *Reconciler {
		return New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: f, Applier: f,
			Events: ring, Log: zaptest.NewLogger(t), Safety: Safety{StateDir: state}, MaxParallelRestarts: maxParallel})
	}
	paced := newR(1)
	pass(t, paced, Options{})
	write("two")
	if got := restartsOf(pass(t, paced, Options{})); got != "a" {
		t.Fatalf("first wave %q, want a", got)
	}
	if rec, ok, err := ReadRolloutRecord(state); err != nil || !ok || !rec.Active {
		t.Fatalf("record after wave 1: %+v %v %v", rec, ok, err)
	}
	apply := newR(0) // the paced agent is gone
	pass(t, apply, Options{DryRun: true})
	if rec, _, _ := ReadRolloutRecord(state); !rec.Active {
		t.Fatal("a dry run ended the rollout")
	}
	if got := restartsOf(pass(t, apply, Options{})); got != "b c" {
		t.Fatalf("unpaced pass restarted %q, want b c", got)
	}
	rec, ok, err := ReadRolloutRecord(state)
	if err != nil || !ok || rec.Active || rec.Ended == nil {
		t.Fatalf("record after the unpaced pass: %+v %v %v", rec, ok, err)
	}
	if !hasEvent(ring, ReasonRolloutComplete, "without pacing") {
		t.Fatalf("no RolloutComplete event: %+v", ring.Events())
	}
}
