package reconcile

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
)

// BatchApplier is an Applier that can run several steps of one op at once,
// cheaper than one Apply each (systemd: one EnableUnitFiles call for every
// enable of a pass; start and restart jobs all queued before any is waited
// for, their results collected as they finish). Declared here, by its
// consumer.
type BatchApplier interface {
	Applier
	// Batches reports whether ApplyBatch takes steps of op.
	Batches(op actuators.Op) bool
	// ApplyBatch runs steps (all of one op Batches accepts, each for a
	// different unit) and returns one result and one error per step, in
	// order: for each step, what Apply would have returned for it alone. A
	// failure of the batch as a whole is the error of every step it
	// covered.
	ApplyBatch(ctx context.Context, steps []actuators.Step) ([]actuators.Result, []error)
}

// batchOrder is the order in which one round runs its batches.
var batchOrder = []actuators.Op{actuators.OpDisable, actuators.OpEnable, actuators.OpStop, actuators.OpStart, actuators.OpRestart}

// batches runs the runtime steps at the head of each unit's group (groups,
// by unit key, in plan order) in batches, when the Applier is a
// BatchApplier and Config.Parallel allows more than one unit at a time:
// each round takes the first remaining step of every group whose op
// Batches accepts, runs one batch per op, records every outcome in out
// like run does, and drops those steps from their groups. It stops when no
// group starts with a batchable step; the workers of execute run the rest.
//
// Per-unit order holds (only a unit's first remaining step is ever
// batched, and a round ends before the next begins) and so does the
// first-failure rule (admit skips the later steps of a unit whose step
// failed in a batch).
func (ex *execution) batches(ctx context.Context, steps []actuators.Step, groups map[string][]int, order []string, out []StepOutcome) {
	b, ok := ex.r.cfg.Applier.(BatchApplier)
	if !ok || ex.r.cfg.Parallel <= 1 {
		return
	}
	for {
		heads := map[actuators.Op][]int{}
		for _, k := range order {
			idx := groups[k]
			if len(idx) == 0 || steps[idx[0]].Unit == "" || !b.Batches(steps[idx[0]].Op) {
				continue
			}
			heads[steps[idx[0]].Op] = append(heads[steps[idx[0]].Op], idx[0])
			groups[k] = idx[1:]
		}
		if len(heads) == 0 {
			return
		}
		for _, op := range batchOrder {
			if idx := heads[op]; len(idx) > 0 {
				ex.batch(ctx, b, steps, idx, out)
				delete(heads, op)
			}
		}
		for op, idx := range heads { // an op batchOrder does not list
			ex.log.Debug("batch of an unlisted op", zap.String("op", string(op)))
			ex.batch(ctx, b, steps, idx, out)
		}
	}
}

// batch runs plan steps idx (one op) through one ApplyBatch.
func (ex *execution) batch(ctx context.Context, b BatchApplier, steps []actuators.Step, idx []int, out []StepOutcome) {
	var run []int
	var batch []actuators.Step
	for _, i := range idx {
		s := steps[i]
		out[i] = StepOutcome{Step: s}
		if out[i].Skipped = ex.admit(ctx, s); out[i].Skipped == "" {
			run = append(run, i)
			batch = append(batch, s)
		}
	}
	if len(batch) == 0 {
		return
	}
	start := time.Now()
	results, errs := ex.applyBatch(ctx, b, batch)
	took := time.Since(start)
	// The batch's events are recorded together (the store: one
	// transaction), before any AfterStep hook runs.
	var evs []Event
	ex.mu.Lock()
	ex.buffered = &evs
	ex.mu.Unlock()
	for j, i := range run {
		oc := &out[i]
		oc.Result, oc.Err, oc.Duration = results[j], errs[j], took
		if oc.Result == "" {
			oc.Result = actuators.Unchanged
		}
		ex.record(oc)
	}
	ex.mu.Lock()
	ex.buffered = nil
	ex.mu.Unlock()
	RecordAll(ex.r.cfg.Events, evs)
	if h := ex.r.cfg.AfterStep; h != nil {
		for _, i := range run {
			h(i, out[i].Step)
		}
	}
}

// applyBatch calls ApplyBatch, turning a panic or a malformed answer into
// the error of every step.
func (ex *execution) applyBatch(ctx context.Context, b BatchApplier, batch []actuators.Step) (results []actuators.Result, errs []error) {
	fail := func(err error) {
		results, errs = make([]actuators.Result, len(batch)), make([]error, len(batch))
		for j := range batch {
			results[j], errs[j] = actuators.Unchanged, err
		}
	}
	defer func() {
		if p := recover(); p != nil {
			ex.log.Error("batch panicked", zap.Int("steps", len(batch)), zap.Any("panic", p), zap.Stack("stack"))
			fail(fmt.Errorf("step panicked: %v", p))
		}
	}()
	results, errs = b.ApplyBatch(ctx, batch)
	if len(results) != len(batch) || len(errs) != len(batch) {
		fail(fmt.Errorf("batch of %d %s steps: applier answered %d results, %d errors", len(batch), batch[0].Op, len(results), len(errs)))
	}
	return results, errs
}
