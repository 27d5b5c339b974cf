package process

// Stopping a unit and handling an exit: signals and the stop timeout,
// checks retried, job retries, the restart tracker's decision, failure.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

// kill signals the process group and waits for the exit, escalating to
// SIGKILL after the stop timeout.
func (r *runner) kill(sig syscall.Signal, sub string) {
	if r.proc == nil {
		return
	}
	// Recorded before the signal: an agent killed now leaves a row that
	// says the stop was asked for, and the next one finishes it instead of
	// taking the exit for a failure.
	r.recordStop()
	r.cancelProbe()
	signalGroup(r.proc.rec.PGID, sig)
	// Like systemd, SIGCONT after the signal: a stopped (SIGSTOP, hung
	// in a debugger) process gets to act on it.
	signalGroup(r.proc.rec.PGID, syscall.SIGCONT)
	r.phase = phStopping
	r.set("deactivating", sub, nil)
	if d := r.stopTimeout(); d > 0 {
		r.setTimer(d)
	} else {
		r.stopTimer() // stopTimeout: 0 waits for the exit (TimeoutStopSec=0)
	}
}

// recordStop writes to the table that the main process is being stopped
// on request, and why: a stop, or a restart (restartAfterStop). It is
// called again whenever a command changes the why during the stop.
func (r *runner) recordStop() {
	if r.proc == nil || !r.requested || r.isCheck {
		return
	}
	why := stopStop
	if r.restartAfterStop {
		why = stopRestart
	}
	if r.proc.rec.Stopping && r.proc.rec.StopReason == why {
		return
	}
	r.proc.rec.Stopping, r.proc.rec.StopReason = true, why
	r.u.s.recordStopping(r.u.name, r.proc.rec.PID, why)
}

// stopTimeout is how long a stop waits before SIGKILL; 0 (an explicit
// `stopTimeout: 0s`) waits for good, as systemd's TimeoutStopSec=0 does.
func (r *runner) stopTimeout() time.Duration {
	if d := r.spec.StopTimeout.D(); d > 0 || r.spec.StopTimeout.IsSet() {
		return d
	}
	d, _ := time.ParseDuration(defaultStopTimeout)
	return d
}

func (r *runner) exited(ctx context.Context, es exitStatus) {
	p := r.proc
	r.proc = nil
	os.Remove(p.rec.Stdout)
	os.Remove(p.rec.Stderr)
	result, clean := es.result()
	if r.isCheck {
		r.isCheck = false
		if r.requested {
			r.afterExit(ctx, DecisionStop, ResultSuccess)
			return
		}
		if clean {
			r.checkIdx, r.checkTry = r.checkIdx+1, 0
			r.checkOrMain(ctx)
			return
		}
		c := r.spec.PreStart[r.checkIdx]
		if r.checkTry < c.Retries {
			r.checkTry++
			d := c.Delay.D()
			if !c.Delay.IsSet() {
				d = time.Second
			}
			r.phase = phCheckWait
			r.setTimer(d)
			return
		}
		r.log.Warn("pre-start check failed", zap.Strings("check", c.Command), zap.Int("tries", c.Retries+1))
		r.u.update(func(st *status) { st.ExecMainStatus = es.execMainStatus() })
		r.fail(result, nil)
		return
	}
	r.cancelProbe()
	signalGroup(p.rec.PGID, syscall.SIGKILL) // what is left of the group (KillMode=control-group)
	r.stopWatchdog()
	r.stopTimer()
	switch {
	case r.watchdogFired:
		result, clean = ResultWatchdog, false
	case r.readyTimedOut:
		result, clean = ResultTimeout, false
	case r.startupFailed:
		result, clean = ResultExitCode, false
	}
	exitAt := r.u.s.now()
	r.u.update(func(st *status) {
		st.RunHash = st.SpecHash
		st.ExecMainStatus, st.MainPID, st.ExecMainExit, st.SpecHash, st.ProcHash = es.execMainStatus(), 0, exitAt, "", ""
	})
	if rt := r.spec.Retry; !clean && !r.requested && rt != nil && r.attempt < rt.Attempts {
		// A job's retry stays within the run: still activating, no
		// restart counted, the schedule untouched (like the retry loop
		// the systemd backend renders).
		r.log.Warn("job attempt failed, retrying", zap.Int("pid", p.rec.PID), zap.String("result", result),
			zap.Int32("status", es.execMainStatus()), zap.Int("attempt", r.attempt), zap.Int("attempts", rt.Attempts))
		r.u.s.recordProc(r.u.name, nil)
		r.attempt++
		r.phase = phRetryWait
		r.set("activating", "start", nil)
		r.setTimer(desired.RetryDelay(rt))
		return
	}
	d, delay, reason := r.tracker.Decide(clean, r.requested)
	r.log.Info("process exited", zap.Int("pid", p.rec.PID), zap.String("result", result),
		zap.Int32("status", es.execMainStatus()), zap.Stringer("decision", d), zap.String("reason", string(reason)))
	if len(r.startWaiters) > 0 && !r.requested {
		if clean && r.spec.Type == TypeOneshot {
			r.answerStarts(actuators.Changed, nil)
		} else if !clean {
			r.answerStarts(actuators.Unchanged, fmt.Errorf("unit %s failed: %s", r.u.name, result))
		}
	}
	if d != DecisionRestart {
		r.u.s.recordProc(r.u.name, nil)
	}
	// On DecisionRestart the dead process's row stays until the restart's
	// spawn replaces it: an agent killed during the restart delay finds it
	// (PID dead, not stopping) and starts the unit as the automatic restart
	// it was, its count carried on (startEnabled), so no restart escapes
	// the ledger.
	if d == DecisionRestart {
		r.phase = phAutoRestart
		r.set("activating", "auto-restart", func(st *status) { st.Result = result })
		r.setTimer(delay)
		return
	}
	if d == DecisionLimit {
		result = ResultStartLimitHit
	}
	r.afterExit(ctx, d, result)
}

// afterExit settles an idle unit and runs a queued restart.
func (r *runner) afterExit(ctx context.Context, d Decision, result string) {
	r.phase = phIdle
	r.releaseLock()
	switch d {
	case DecisionStop:
		if r.requested {
			result = ResultSuccess
		}
		r.set("inactive", "dead", func(st *status) { st.Result = result })
		if st := r.u.status(); !r.requested && st.ExecMainStatus == 0 && strings.HasSuffix(r.u.name, ".service") {
			// Exited by itself and not restarted by its policy (or a
			// timer's job run that succeeded): the next agent of this
			// boot leaves it so (startEnabled), and reports it done
			// (observed.Unit.ExitedOnItsOwn) with its last run.
			// The record names the file the run was started from, which
			// may be older than the one loaded now (a change whose
			// restart a crash cut off): that run is stale to the next
			// agent (idleEntry.status).
			hash := st.RunHash
			if hash == "" {
				_, hash = r.u.current()
			}
			r.u.s.noteIdle(r.u.name, lastRun(idleExited, "", hash, st))
		}
	default:
		r.set("failed", "failed", func(st *status) { st.Result = result })
	}
	r.requested = false
	r.answerStops(actuators.Changed, nil)
	if r.restartAfterStop {
		r.restartAfterStop = false
		r.beginStart(ctx)
		return
	}
	if d != DecisionStop {
		r.answerStarts(actuators.Unchanged, fmt.Errorf("unit %s failed: %s", r.u.name, result))
	} else {
		// A notify service that exited cleanly before READY=1.
		r.answerStarts(actuators.Unchanged, fmt.Errorf("unit %s exited before it was started (%s)", r.u.name, result))
	}
}

// fail ends a start attempt that never got a main process running.
func (r *runner) fail(result string, err error) {
	r.phase = phIdle
	r.releaseLock()
	r.set("failed", "failed", func(st *status) { st.Result = result })
	msg := fmt.Errorf("unit %s failed: %s", r.u.name, result)
	if err != nil {
		msg = fmt.Errorf("unit %s failed: %s: %w", r.u.name, result, err)
	}
	r.answerStarts(actuators.Unchanged, msg)
	r.answerStops(actuators.Changed, nil)
}
