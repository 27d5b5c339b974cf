package process

import (
	"context"
	"fmt"

	"resil.dev/resil/actuators"
	"resil.dev/resil/internal/par"
)

// batchFileWorkers bounds the goroutines of a batch of file steps: enough
// for their fsyncs to overlap (the filesystem's journal commits them
// together), few enough not to flood the disk queue.
const batchFileWorkers = 16

// batchRunWorkers bounds the units a batch of runtime steps works on at
// once: their runners' table writes still share commits, and the agent
// does not grow an OS thread per unit blocked in a syscall (each one RSS
// it keeps).
const batchRunWorkers = 16

// Batches reports whether ApplyBatch takes steps of op (the reconciler's
// BatchApplier): unit file writes, enablement and the runtime ops.
func (a *Applier) Batches(op actuators.Op) bool {
	switch op {
	case actuators.OpWriteFile, actuators.OpEnable, actuators.OpDisable, actuators.OpStart, actuators.OpStop, actuators.OpRestart:
		return true
	}
	return false
}

// ApplyBatch runs steps (of one op, each for a different unit or file) at
// once and returns, per step, what Apply returns for it alone; it is Apply
// on several goroutines, and returns when every step did.
//
//   - write, enable, disable: on up to batchFileWorkers goroutines. Each
//     file is still its own temp file, fsync and rename; the fsyncs
//     overlap instead of queueing one behind the other (a cold start of
//     100 services writes 100 unit files and 100 enablement markers).
//   - start, stop, restart: on up to batchRunWorkers goroutines. Each
//     waits for its unit's runner; the runners fork concurrently and their
//     process table rows share writes (saveTable's group commit). As with
//     systemd's job batches, the batch answers once its slowest step did
//     (a notify service's READY=1, a startup probe): the outcomes and
//     events of the others wait for it, their units' later steps too.
func (a *Applier) ApplyBatch(ctx context.Context, steps []actuators.Step) ([]actuators.Result, []error) {
	res := make([]actuators.Result, len(steps))
	errs := make([]error, len(steps))
	if len(steps) == 0 {
		return res, errs
	}
	workers := batchRunWorkers
	switch steps[0].Op {
	case actuators.OpWriteFile, actuators.OpEnable, actuators.OpDisable:
		workers = batchFileWorkers
		// Create the state dirs (and the supervisor ID) once, before the
		// writers race to, and set their modes again (once a batch: the
		// writers' own calls return at once).
		a.s.forgetDirs()
		if err := a.s.makeDirs(); err != nil {
			for i := range steps {
				res[i], errs[i] = actuators.Unchanged, err
			}
			return res, errs
		}
	}
	if steps[0].Op == actuators.OpStart {
		names := make([]string, len(steps))
		for i, st := range steps {
			names[i] = st.Unit
		}
		defer a.s.dropPreIntents(a.s.preIntents(names))
	}
	par.For(len(steps), workers, 1, func(i int) {
		res[i], errs[i] = a.applyOne(ctx, steps[i])
	})
	return res, errs
}

// applyOne is Apply with a panic turned into the step's error (it runs on
// a batch goroutine, where the reconciler's recover does not reach).
func (a *Applier) applyOne(ctx context.Context, st actuators.Step) (res actuators.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = actuators.Unchanged, fmt.Errorf("apply %s: panic: %v", st, p)
		}
	}()
	return a.Apply(ctx, st)
}
