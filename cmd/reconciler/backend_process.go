package main

import (
	"context"
	"os"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/actuators/process"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
)

// openProcess opens the built-in supervisor on the state directory. Its Run
// is a background task of the agent; the loop's kick is handed to it so a
// process exit, restart or timer firing wakes a pass.
func openProcess(_ context.Context, g *globals, log *zap.Logger, readOnly bool) (*backend, error) {
	stopOnExit := g.stopOnExit || os.Getpid() == 1
	var wake atomic.Pointer[func()]
	var events atomic.Pointer[reconcile.Recorder]
	sup, err := process.New(g.stateDir, log, process.Options{
		Event: func(reason, object, unit string, warning bool, msg string) {
			if r := events.Load(); r != nil {
				typ := reconcile.Normal
				if warning {
					typ = reconcile.Warning
				}
				(*r).Record(reconcile.Event{Time: time.Now(), Type: typ, Reason: reconcile.Reason(reason), Object: object, Unit: unit, Message: msg})
			}
		},
		StopOnExit: stopOnExit,
		Subreaper:  os.Getpid() == 1,
		OneShot:    !g.agent,
		// Nothing starts from the unit files an earlier agent left before
		// the first pass has written what the manifests say (be.Release).
		HoldUntilRelease: !readOnly,
		Wake: func() {
			if f := wake.Load(); f != nil {
				(*f)()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	be := &backend{
		Name: "process", UnitDir: sup.UnitDir(), ManagerDir: "",
		Render: process.Render, Classify: classifyProcessUnit, Observer: sup, Applier: process.NewApplier(sup),
		Close: func() {},
		Reset: func(_ context.Context, unit string, start bool) error {
			return process.RequestReset(g.stateDir, unit, start)
		},
		SetEvents: func(r reconcile.Recorder) { events.Store(&r) },
	}
	if stopOnExit {
		be.StoppedAll = func() *observed.State {
			st, err := sup.Observe(context.Background(), nil)
			if err != nil {
				return nil
			}
			return st
		}
	}
	if readOnly {
		be.Applier = readOnlyApplier{}
		return be, nil
	}
	// The supervisor runs beside the loop: the first pass must not observe
	// before it has adopted what a previous agent left running, or it would
	// see adopted processes as stopped.
	be.Observer = readyObserver{sup}
	be.Release = sup.Release
	be.Background = append(be.Background, func(ctx context.Context, kick func()) error {
		wake.Store(&kick)
		return sup.Run(ctx)
	})
	return be, nil
}

// readyObserver waits until the supervisor is ready before observing.
type readyObserver struct{ s *process.Supervisor }

func (r readyObserver) Observe(ctx context.Context, names []string) (*observed.State, error) {
	select {
	case <-r.s.Ready():
	case <-r.s.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return r.s.Observe(ctx, names)
}

// classifyProcessUnit is the planner's view of process.ClassifyChange.
func classifyProcessUnit(old, cur []byte) reconcile.UnitChange {
	restart, keys := process.ClassifyChange(old, cur)
	return reconcile.UnitChange{Restart: restart, Keys: keys}
}
