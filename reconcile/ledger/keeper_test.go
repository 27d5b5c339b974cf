package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/store"
)

func webUnit(n, pid uint32, start uint64) *observed.State {
	return &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{
		"web.service": {Name: "web.service", Owner: "Service/web", File: []byte("x"), LoadState: "loaded", ActiveState: "active", SubState: "running",
			Result: "success", NRestarts: n, MainPID: pid, ExecMainStartTimestamp: start},
	}}
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), store.FileName), store.Options{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func observe(k *Keeper, obs *observed.State) {
	k.Observe(context.Background(), reconcile.Result{Observed: obs}, time.Now())
}

func TestParsePolicy(t *testing.T) {
	for in, w := range map[string]string{"10/1h": "10 1h0m0s", "off": "0 0s", "3/90s": "3 1m30s", "x": "error", "0/1h": "error", "5/": "error"} {
		p, err := ParsePolicy(in)
		got := fmt.Sprintf("%d %s", p.Restarts, p.Within)
		if err != nil {
			got = "error"
		}
		if got != w {
			t.Errorf("%q: got %s, want %s", in, got, w)
		}
	}
}

// TestLedgerSurvivesAgentRestart: a new agent (new keeper, same store)
// continues from the last observation of the same boot, and counts the
// restarts that happened while no agent ran; from another boot it does not.
func TestLedgerSurvivesAgentRestart(t *testing.T) {
	log := zaptest.NewLogger(t)
	s := openStore(t)
	newKeeper := func(boot string) *Keeper {
		return NewKeeper(Config{Store: s, Events: s, Log: log, HookTimeout: time.Second, BootID: boot})
	}
	count := func() int {
		n, err := s.RestartCount(context.Background(), "Service/web", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	first := newKeeper("boot-a")
	observe(first, webUnit(2, 100, 1000))
	observe(first, webUnit(3, 101, 2000))
	if n := count(); n != 1 {
		t.Fatalf("first agent: %d restarts, want 1", n)
	}
	second := newKeeper("boot-a") // agent restarted; web crashed twice meanwhile
	observe(second, webUnit(5, 105, 5000))
	if n := count(); n != 3 {
		t.Errorf("after an agent restart: %d restarts, want 3", n)
	}
	third := newKeeper("boot-b") // host rebooted: counters restarted from zero
	observe(third, webUnit(0, 50, 100))
	if n := count(); n != 3 {
		t.Errorf("after a reboot: %d restarts, want still 3", n)
	}
}

// TestLedgerCountsUnitNewSinceBaseline: an agent started a new unit and
// was killed before its ledger observed it; the unit crashed and was
// restarted automatically. The next agent's baseline has no row for it, and
// the restart is still counted (found by the torture suite).
func TestLedgerCountsUnitNewSinceBaseline(t *testing.T) {
	s := openStore(t)
	k := NewKeeper(Config{Store: s, Events: s, Log: zaptest.NewLogger(t), HookTimeout: time.Second, BootID: "boot-a"})
	observe(k, &observed.State{Backend: "process", Units: map[string]*observed.Unit{}}) // the killed agent's last observation
	next := NewKeeper(Config{Store: s, Events: s, Log: zaptest.NewLogger(t), HookTimeout: time.Second, BootID: "boot-a"})
	observe(next, webUnit(1, 105, 5000))
	if n, err := s.RestartCount(context.Background(), "Service/web", time.Time{}); err != nil || n != 1 {
		t.Errorf("restarts of a unit new since the baseline: %d, %v; want 1", n, err)
	}
	evs, err := s.Events(context.Background(), store.Query{Reason: string(reconcile.ReasonRestarted)})
	if err != nil || len(evs) != 1 {
		t.Errorf("Restarted events: %+v, %v; want 1", evs, err)
	}
}

// baselineProbe is an event recorder that reads the saved ledger baseline
// at the instant a Restarted event is recorded: an agent killed right then
// must find a baseline that still predates the restart.
type baselineProbe struct {
	t    *testing.T
	s    *store.Store
	seen []uint32 // the baseline's NRestarts of web.service at each Restarted event
}

func (p *baselineProbe) Record(e reconcile.Event) {
	p.s.Record(e)
	if e.Reason != reconcile.ReasonRestarted {
		return
	}
	_, data, err := p.s.Baseline(context.Background())
	if err != nil {
		p.t.Fatal(err)
	}
	var units map[string]baselineUnit
	if err := json.Unmarshal(data, &units); err != nil {
		p.t.Fatalf("baseline %q: %v", data, err)
	}
	p.seen = append(p.seen, units["web.service"].NRestarts)
}

// The saved baseline moves on only after the restarts it covers are
// recorded, so a kill -9 between the two loses no restart.
func TestLedgerBaselineSavedAfterRestartsRecorded(t *testing.T) {
	s := openStore(t)
	probe := &baselineProbe{t: t, s: s}
	k := NewKeeper(Config{Store: s, Events: probe, Log: zaptest.NewLogger(t), HookTimeout: time.Second, BootID: "boot-a"})
	observe(k, webUnit(2, 100, 1000))
	observe(k, webUnit(3, 101, 2000))
	if len(probe.seen) != 1 || probe.seen[0] != 2 {
		t.Fatalf("baseline NRestarts when the restart was recorded: %v, want [2] (the restart not yet in it)", probe.seen)
	}
	_, data, err := s.Baseline(context.Background())
	if err != nil || !strings.Contains(string(data), `"nRestarts":3`) {
		t.Fatalf("baseline after the pass: %s, %v; want nRestarts 3", data, err)
	}
}

// A failing hook is itself an event.
func TestFailingHookIsAnEvent(t *testing.T) {
	s := openStore(t)
	k := NewKeeper(Config{Store: s, Events: s, Log: zaptest.NewLogger(t), HookTimeout: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.RunHooks(ctx) }()
	defer func() { cancel(); <-done }()
	k.hooks <- hookJob{command: []string{"/bin/sh", "-c", "echo nope >&2; exit 7"}, event: reconcile.Event{Object: "Service/web", Reason: reconcile.ReasonRestartStorm}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, _ := s.Events(context.Background(), store.Query{Reason: string(reconcile.ReasonAlertHookFailed)})
		if len(evs) == 1 && strings.Contains(evs[0].Message, "exit status 7: nope") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for hook failure event: %+v", evs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReadBootID(t *testing.T) {
	p := filepath.Join(t.TempDir(), "boot_id")
	if got := ReadBootID(p); got != "" {
		t.Errorf("missing file: %q", got)
	}
	if err := writeFile(p, "0f1e2d3c-aaaa-bbbb-cccc-000000000001\n"); err != nil {
		t.Fatal(err)
	}
	if got := ReadBootID(p); got != "0f1e2d3c-aaaa-bbbb-cccc-000000000001" {
		t.Errorf("got %q", got)
	}
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }

// Restarts counted in the pass that prunes a crash-looping service (no
// longer desired) are judged by the spec.alert it last had, not by the
// default policy: deleting a noisy service raises no storm it never asked
// for.
func TestPrunedServiceKeepsItsAlertPolicy(t *testing.T) {
	s := openStore(t)
	k := NewKeeper(Config{Store: s, Events: s, Log: zaptest.NewLogger(t), Default: Policy{Restarts: 2, Within: time.Hour}})
	web := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"},
		Service: &desired.ServiceSpec{Command: []string{"/bin/false"}, Alert: &desired.Alert{Restarts: 1000, Within: "1h"}}}
	ctx, now := context.Background(), time.Now()
	k.Observe(ctx, reconcile.Result{Desired: []*desired.Object{web}, Observed: webUnit(0, 100, 1000)}, now)
	k.Observe(ctx, reconcile.Result{Desired: []*desired.Object{web}, Observed: webUnit(1, 101, 2000)}, now)
	// The manifest is gone; the loop crashed twice more before the prune.
	k.Observe(ctx, reconcile.Result{Observed: webUnit(3, 103, 4000)}, now)
	if n, _ := s.RestartCount(ctx, "Service/web", time.Time{}); n != 3 {
		t.Fatalf("%d restarts counted, want 3", n)
	}
	evs, err := s.Events(ctx, store.Query{Reason: string(reconcile.ReasonRestartStorm)})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 0 {
		t.Errorf("storm alert at the default threshold for a service whose own is 1000: %+v", evs)
	}
	// A service that never had a spec.alert keeps the default.
	k.Observe(ctx, reconcile.Result{Observed: webUnitNamed("db", 0, 200, 1000)}, now)
	k.Observe(ctx, reconcile.Result{Observed: webUnitNamed("db", 3, 203, 4000)}, now)
	if evs, _ := s.Events(ctx, store.Query{Reason: string(reconcile.ReasonRestartStorm)}); len(evs) != 1 || evs[0].Object != "Service/db" {
		t.Errorf("default policy of an undeclared service: %+v", evs)
	}
}

func webUnitNamed(name string, n, pid uint32, start uint64) *observed.State {
	return &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{
		name + ".service": {Name: name + ".service", Owner: "Service/" + name, File: []byte("x"), LoadState: "loaded", ActiveState: "active", SubState: "running",
			Result: "success", NRestarts: n, MainPID: pid, ExecMainStartTimestamp: start},
	}}
}

// The storm alert counts crashes, watchdog kills, liveness and manual
// restarts, not the agent's own restart steps: a day of deploys does not
// page (the fleet rule ResilRestartStorm leaves them out too). The ledger
// keeps them.
func TestStormLeavesOutTheAgentsOwnRestarts(t *testing.T) {
	s := openStore(t)
	k := NewKeeper(Config{Store: s, Events: s, Log: zaptest.NewLogger(t), Default: Policy{Restarts: 2, Within: time.Hour}})
	ctx, now := context.Background(), time.Now()
	var deploys []store.Restart
	for i := range 5 {
		deploys = append(deploys, store.Restart{Time: now.Add(-time.Duration(i) * time.Minute), Object: "Service/web", Unit: "web.service", Cause: string(CauseAgent)})
	}
	if err := s.AddRestarts(ctx, deploys); err != nil {
		t.Fatal(err)
	}
	storms := func() int {
		evs, err := s.Events(ctx, store.Query{Reason: string(reconcile.ReasonRestartStorm)})
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	k.Observe(ctx, reconcile.Result{Observed: webUnit(0, 100, 1000)}, now)
	k.Observe(ctx, reconcile.Result{Observed: webUnit(1, 101, 2000)}, now)
	if n := storms(); n != 0 {
		t.Fatalf("%d storm alerts after 5 deploys and 1 crash, threshold 2: want 0", n)
	}
	k.Observe(ctx, reconcile.Result{Observed: webUnit(2, 102, 3000)}, now)
	if n := storms(); n != 1 {
		t.Fatalf("%d storm alerts after a second crash, want 1", n)
	}
	if n, _ := s.RestartCount(ctx, "Service/web", time.Time{}); n != 7 {
		t.Errorf("ledger holds %d restarts, want 7 (deploys included)", n)
	}
}

// countingStore counts baseline writes.
type countingStore struct {
	*store.Store
	puts int
}

func (c *countingStore) PutBaseline(ctx context.Context, boot string, data []byte) error {
	c.puts++
	return c.Store.PutBaseline(ctx, boot, data)
}

// An unchanged baseline is not written again (a converged agent's pass,
// a no-op apply); a changed one is, and a new keeper that read it back
// does not write it again either.
func TestBaselineWrittenOnlyWhenChanged(t *testing.T) {
	s := &countingStore{Store: openStore(t)}
	newK := func() *Keeper {
		return NewKeeper(Config{Store: s, Events: s.Store, Log: zaptest.NewLogger(t), HookTimeout: time.Second, BootID: "boot-a"})
	}
	k := newK()
	observe(k, webUnit(0, 100, 1000))
	observe(k, webUnit(0, 100, 1000))
	if s.puts != 1 {
		t.Fatalf("%d baseline writes for two equal observations, want 1", s.puts)
	}
	observe(k, webUnit(1, 101, 2000))
	if s.puts != 2 {
		t.Fatalf("%d baseline writes after a restart, want 2", s.puts)
	}
	observe(newK(), webUnit(1, 101, 2000))
	if s.puts != 2 {
		t.Fatalf("%d baseline writes by a new keeper that found it unchanged, want 2", s.puts)
	}
}
