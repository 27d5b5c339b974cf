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
	"time"

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
	r.beginStartupProbeWithin(ctx, r.spec.Startup.Timeout.D())
}

// beginStartupProbeWithin is beginStartupProbe with the probe's timeout
// (initial delay included) cut to timeout.
func (r *runner) beginStartupProbeWithin(ctx context.Context, timeout time.Duration) {
	p := *r.spec.Startup
	delay := p.InitialDelay.D()
	if full := p.Timeout.D(); timeout < full {
		delay = max(delay-(full-timeout), 0)
	}
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
	r.log.Info("startup probe begins", zap.Int("pid", pid), zap.Stringer("timeout", timeout))
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		err := health.Until(pctx, c, p.Interval.D(), timeout, delay)
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

// adoptedInStartup reports whether an adopted main process may still be in
// its start: the spec has a startup probe and the process is younger than
// the probe's budget (an older one passed it, or it would have been
// stopped).
func (r *runner) adoptedInStartup(rec *procRecord) bool {
	return r.spec.Startup != nil && r.spec.Type != TypeOneshot && r.startupLeft(rec) > 0
}

// startupLeft is what is left of the startup probe's budget for rec.
func (r *runner) startupLeft(rec *procRecord) time.Duration {
	return time.UnixMicro(rec.Started).Add(r.spec.Startup.Timeout.D()).Sub(r.u.s.now())
}
