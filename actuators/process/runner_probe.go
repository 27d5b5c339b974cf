package process

// The startup probe of spec.health: like the ExecStartPost= the systemd
// backend renders, it runs after the main process started (a notify
// service: after READY=1) while the unit stays activating (start-post);
// the start is done only when it passes. A probe that does not pass
// within its timeout fails the start: the main process is stopped, the
// result is exit-code and the restart policy applies.

import (
	"context"
	"syscall"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/reconcile/health"
)

// probeResult is the outcome of one startup probe of the process pid.
type probeResult struct {
	pid int
	err error
}

// beginStartupProbe moves the just started (or READY) main process into
// start-post and runs the startup probe in a goroutine owned by r.bg; its
// result comes back on r.probeCh.
func (r *runner) beginStartupProbe(ctx context.Context) {
	p := *r.spec.Startup
	r.stopTimer()
	r.phase = phStart
	r.set("activating", "start-post", nil)
	c, err := health.NewChecker(p, health.Identity{User: r.spec.User, Group: r.spec.Group})
	if err != nil {
		r.startupProbeFailed(err)
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	r.probeCancel = cancel
	pid := r.proc.rec.PID
	r.log.Info("startup probe begins", zap.Int("pid", pid), zap.Stringer("timeout", p.Timeout.D()))
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		err := health.Until(pctx, c, p.Interval.D(), p.Timeout.D(), p.InitialDelay.D())
		select {
		case r.probeCh <- probeResult{pid: pid, err: err}:
		case <-pctx.Done():
		}
	}()
}

// cancelProbe stops a running startup probe (its process exits or is
// stopped).
func (r *runner) cancelProbe() {
	if r.probeCancel != nil {
		r.probeCancel()
		r.probeCancel = nil
	}
}

// probed handles a startup probe's result; one for a process or a phase
// that is gone is ignored.
func (r *runner) probed(res probeResult) {
	if r.probeCancel == nil || r.proc == nil || r.isCheck || r.proc.rec.PID != res.pid || r.phase != phStart {
		return
	}
	r.cancelProbe()
	if res.err != nil {
		r.startupProbeFailed(res.err)
		return
	}
	r.log.Info("startup probe passed", zap.Int("pid", res.pid))
	r.phase = phRunning
	r.set("active", "running", nil)
	r.answerStarts(actuators.Changed, nil)
}

// startupProbeFailed fails the start: the main process is stopped and its
// exit handled as a failure (exit-code), so the restart policy applies.
func (r *runner) startupProbeFailed(err error) {
	r.log.Warn("startup probe failed", zap.Error(err))
	r.startupFailed = true
	r.kill(syscall.SIGTERM, "stop-sigterm")
}
