package main

import (
	"context"

	"go.uber.org/zap"

	sdapply "resil.dev/resil/actuators/systemd"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/health"
)

// probes are the liveness and readiness probes `run` runs (startup probes
// run where the service starts: its ExecStartPost= or the supervisor).
// After each pass the targets follow the observed state (a restarted
// process starts its probes afresh); each pass plans from their statuses;
// a probe whose state changes wakes the loop.
type probes struct {
	prober *health.Prober
	// wake is set (to the loop's Kick) before run starts the probe loops.
	wake func()
}

func newProbes(log *zap.Logger, runner health.Runner) *probes {
	p := &probes{wake: func() {}}
	p.prober = health.New(log.Named("health"), func() { p.wake() })
	p.prober.SetRunner(runner)
	return p
}

// transientProbes runs exec probes as transient units (systemd backend).
type transientProbes struct{ r *sdapply.ProbeRunner }

func (t transientProbes) Run(ctx context.Context, argv []string, id health.Identity) error {
	return t.r.Run(ctx, argv, id.User, id.Group)
}

// status returns every probe's status (reconcile.Config.Health).
func (p *probes) status() []health.Status { return p.prober.Status() }

// afterPass points the probes at the processes this pass observed (after
// its steps, when it observed again: a restarted service's new process);
// a pass that observed nothing leaves them as they are.
func (p *probes) afterPass(res reconcile.Result, _ error) {
	if res.After != nil && res.After.Observed != nil {
		res = *res.After
	}
	if res.Observed != nil {
		p.prober.Set(health.Targets(res.Desired, res.Observed))
	}
}

// run runs the probe loops until ctx is done and waits for them.
func (p *probes) run(ctx context.Context) error { return p.prober.Run(ctx) }
