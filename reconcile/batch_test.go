package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

// batchFake is fakeBackend plus ApplyBatch for enable, disable, start,
// restart and stop; it logs each batch as "OP u1,u2,...".
type batchFake struct {
	*fakeBackend
	bmu     sync.Mutex
	batches []string
	// failBatch fails every step of a batch of this op as a whole.
	failBatch actuators.Op
	// writes: unit file writes are batched too (the process backend).
	writes bool
}

func (b *batchFake) Batches(op actuators.Op) bool {
	switch op {
	case actuators.OpEnable, actuators.OpDisable, actuators.OpStart, actuators.OpRestart, actuators.OpStop:
		return true
	case actuators.OpWriteFile:
		return b.writes
	}
	return false
}

func (b *batchFake) ApplyBatch(ctx context.Context, steps []actuators.Step) ([]actuators.Result, []error) {
	var units []string
	for _, s := range steps {
		units = append(units, s.Unit)
	}
	b.bmu.Lock()
	b.batches = append(b.batches, fmt.Sprintf("%s %s", steps[0].Op, strings.Join(units, ",")))
	b.bmu.Unlock()
	res, errs := make([]actuators.Result, len(steps)), make([]error, len(steps))
	for i, s := range steps {
		if s.Op == b.failBatch {
			res[i], errs[i] = actuators.Unchanged, errors.New("batch call failed")
			continue
		}
		res[i], errs[i] = b.Apply(ctx, s)
	}
	return res, errs
}

func newBatchReconciler(t *testing.T, dir string, b *batchFake, parallel int) (*Reconciler, *Ring) {
	log := zaptest.NewLogger(t)
	ring := NewRing(100, log)
	return New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: b.fakeBackend, Applier: b,
		Events: ring, Log: log, Parallel: parallel}), ring
}

func TestBatchedRuntimeSteps(t *testing.T) {
	tests := []struct {
		name      string
		parallel  int
		writes    bool         // the applier batches unit file writes
		failOn    string       // fakeBackend failOn prefix
		failBatch actuators.Op // whole batch fails
		batches   []string
		active    map[string]bool
		failed    int
		// systemd: the fake observes as the systemd backend (enables
		// before the reload, in the file phase).
		systemd           bool
		reloadAfterEnable bool
	}{{
		name: "systemd: one enable batch before the reload, then one start batch", parallel: 8, systemd: true,
		batches:           []string{"enable a.service,b.service,c.service", "start a.service,b.service,c.service"},
		active:            map[string]bool{"a.service": true, "b.service": true, "c.service": true},
		reloadAfterEnable: true,
	}, {
		name: "systemd: an enable failing in its batch skips its unit's start", parallel: 8, systemd: true,
		failOn:  "enable b.service",
		batches: []string{"enable a.service,b.service,c.service", "start a.service,c.service"},
		active:  map[string]bool{"a.service": true, "c.service": true},
		failed:  1, reloadAfterEnable: true,
	}, {
		name: "one enable batch, then one start batch", parallel: 8,
		batches: []string{"enable a.service,b.service,c.service", "start a.service,b.service,c.service"},
		active:  map[string]bool{"a.service": true, "b.service": true, "c.service": true},
	}, {
		name: "a step failing in a batch skips only its unit's later steps", parallel: 8,
		failOn:  "enable b.service",
		batches: []string{"enable a.service,b.service,c.service", "start a.service,c.service"},
		active:  map[string]bool{"a.service": true, "c.service": true},
		failed:  1,
	}, {
		name: "a failed batch fails every step it covered", parallel: 8,
		failBatch: actuators.OpEnable,
		batches:   []string{"enable a.service,b.service,c.service"},
		active:    map[string]bool{},
		failed:    3,
	}, {
		name: "unit file writes in one batch, then the reload", parallel: 8, writes: true,
		batches: []string{"write a.service,b.service,c.service", "enable a.service,b.service,c.service", "start a.service,b.service,c.service"},
		active:  map[string]bool{"a.service": true, "b.service": true, "c.service": true},
	}, {
		name: "a write failing in a batch skips only its unit's later steps", parallel: 8, writes: true,
		failOn:  "write /units/b.service",
		batches: []string{"write a.service,b.service,c.service", "enable a.service,c.service", "start a.service,c.service"},
		active:  map[string]bool{"a.service": true, "c.service": true},
		failed:  1,
	}, {
		name: "parallel 1 is strictly serial: no batches", parallel: 1, writes: true,
		active: map[string]bool{"a.service": true, "b.service": true, "c.service": true},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, n := range []string{"a", "b", "c"} {
				writeManifest(t, dir, n+".yaml", strings.Replace(webManifest, "name: web", "name: "+n, 1))
			}
			b := &batchFake{fakeBackend: newFake(), failBatch: tt.failBatch, writes: tt.writes}
			if tt.systemd {
				b.backend = "systemd"
			}
			if tt.failOn != "" {
				b.failOn[tt.failOn] = errors.New("boom")
			}
			r, ring := newBatchReconciler(t, dir, b, tt.parallel)
			res, _ := r.Reconcile(context.Background(), Options{})
			if strings.Join(b.batches, "; ") != strings.Join(tt.batches, "; ") {
				t.Errorf("batches = %q, want %q", b.batches, tt.batches)
			}
			for _, n := range []string{"a.service", "b.service", "c.service"} {
				if b.active[n] != tt.active[n] {
					t.Errorf("%s active = %v, want %v", n, b.active[n], tt.active[n])
				}
			}
			if res.Failed() != tt.failed {
				t.Errorf("%d failed steps, want %d: %+v", res.Failed(), tt.failed, res.Outcomes)
			}
			// Every failed step has its own ApplyFailed event; every step
			// after a failure of its unit is skipped, with the reason.
			failedEvents := 0
			for _, e := range ring.Events() {
				if e.Reason == ReasonApplyFailed {
					failedEvents++
				}
			}
			if failedEvents != tt.failed {
				t.Errorf("%d ApplyFailed events, want %d", failedEvents, tt.failed)
			}
			failedUnit := map[string]bool{}
			for _, oc := range res.Outcomes {
				if oc.Err != nil {
					failedUnit[oc.Step.Unit] = true
				} else if failedUnit[oc.Step.Unit] && oc.Skipped == "" {
					t.Errorf("%s ran after its unit failed", oc.Step)
				}
			}
			if stepStrings(res.Plan.Steps) != stepStringsOf(res.Outcomes) {
				t.Errorf("outcomes out of plan order")
			}
			lastEnable, reload := -1, -1
			for i, s := range res.Plan.Steps {
				switch s.Op {
				case actuators.OpEnable:
					lastEnable = i
				case actuators.OpDaemonReload:
					reload = i
				}
			}
			if got := lastEnable >= 0 && reload > lastEnable; got != tt.reloadAfterEnable {
				t.Errorf("daemon-reload after every enable: %v, want %v\n%s", got, tt.reloadAfterEnable, stepStrings(res.Plan.Steps))
			}
		})
	}
}

// countingRecorder is a BatchRecorder that counts how events arrive.
type countingRecorder struct {
	mu      sync.Mutex
	singles int
	batches []int
}

func (c *countingRecorder) Record(Event) { c.mu.Lock(); c.singles++; c.mu.Unlock() }
func (c *countingRecorder) RecordBatch(evs []Event) {
	c.mu.Lock()
	c.batches = append(c.batches, len(evs))
	c.mu.Unlock()
}

// The events of a batch of steps reach a BatchRecorder (the store) in one
// call; the other steps' events one by one, as before.
func TestBatchEventsRecordedTogether(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a", "b", "c"} {
		writeManifest(t, dir, n+".yaml", strings.Replace(webManifest, "name: web", "name: "+n, 1))
	}
	b := &batchFake{fakeBackend: newFake(), writes: true}
	rec := &countingRecorder{}
	log := zaptest.NewLogger(t)
	ring := NewRing(100, log)
	r := New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: b.fakeBackend, Applier: b,
		Events: Fanout{ring, rec}, Log: log, Parallel: 8})
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	// write ×3, enable ×3, start ×3 in batches; the daemon-reload alone.
	if fmt.Sprint(rec.batches) != "[3 3 3]" || rec.singles != 1 {
		t.Fatalf("batches %v, single events %d; want [3 3 3] and 1 (the daemon-reload)", rec.batches, rec.singles)
	}
	if n := len(ring.Events()); n != 10 {
		t.Fatalf("the ring has %d events, want 10", n)
	}
}
