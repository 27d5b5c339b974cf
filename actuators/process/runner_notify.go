package process

// sd_notify messages and the watchdog of a running unit.

import (
	"context"
	"syscall"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
)

func (r *runner) watchdogExpired(why string) {
	if r.proc == nil || r.isCheck || r.phase == phStopping {
		return
	}
	r.log.Warn("watchdog expired", zap.Int("pid", r.proc.rec.PID), zap.String("why", why))
	r.watchdogFired = true
	r.stopWatchdog()
	r.kill(syscall.SIGABRT, "stop-watchdog")
}

func (r *runner) notified(ctx context.Context, m notifyMsg) {
	if r.proc == nil || r.isCheck || !r.accepts(m.Sender) {
		r.log.Debug("notify message ignored", zap.Int("sender", m.Sender))
		return
	}
	if m.Status != nil {
		r.u.update(func(st *status) { st.StatusText = *m.Status })
	}
	if m.WatchdogUSec > 0 {
		r.wdTimeout = time.Duration(m.WatchdogUSec) * time.Microsecond
	}
	if m.Watchdog || m.WatchdogUSec > 0 {
		if r.phase == phStart || r.phase == phRunning {
			r.resetWatchdog()
		}
	}
	if m.Ready && r.phase == phStart && r.spec.Type == TypeNotify && r.probeCancel == nil {
		if r.spec.Startup != nil {
			r.beginStartupProbe(ctx) // like ExecStartPost=: after READY=1
			return
		}
		r.stopTimer()
		r.phase = phRunning
		r.set("active", "running", nil)
		r.answerStarts(actuators.Changed, nil)
	}
	if m.WatchdogTrigger {
		r.watchdogExpired("WATCHDOG=trigger")
	}
}

// accepts applies NotifyAccess: main accepts only the main PID; all accepts
// any process of the main process's group. A sender that already exited
// (systemd-notify exits right after sending) cannot be checked and is
// accepted under all.
func (r *runner) accepts(pid int) bool {
	if pid == 0 {
		return false
	}
	if pid == r.proc.rec.PID {
		return true
	}
	if r.spec.Watchdog == nil || r.spec.Watchdog.NotifyAccess != "all" {
		return false
	}
	st, err := readProcStat(r.u.s.procRoot, pid)
	if err != nil {
		return true
	}
	return st.PGID == r.proc.rec.PGID
}
