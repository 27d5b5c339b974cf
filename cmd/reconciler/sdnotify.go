package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"resil.dev/resil/reconcile"
)

// sdNotifier speaks sd_notify(3) for `reconciler run` when systemd started
// it as Type=notify (NOTIFY_SOCKET set); without a socket every send is a
// no-op.
//
// Liveness comes only from the control loop: afterPass runs in the loop's
// goroutine right after a pass, so WATCHDOG=1 is sent only when a pass
// finished. If a pass hangs (a wedged D-Bus call, a deadlock) no ping goes
// out and systemd kills and restarts the agent after WatchdogSec. There is
// deliberately no independent ping goroutine: it would keep pinging while
// the loop is stuck. To keep pings flowing while nothing changes, run
// clamps the loop's resync period to WatchdogSec/2 (watchdogResync), so the
// loop's own timer produces a pass, and so a ping, at least that often.
//
//	first pass done  → READY=1, STATUS=..., WATCHDOG=1
//	every later pass → STATUS=... (when it changed), WATCHDOG=1
//	shutdown         → STOPPING=1
type sdNotifier struct {
	log      *zap.Logger
	notify   func(state string) (bool, error)
	watchdog time.Duration // WatchdogSec systemd asked for; 0: not enabled
	ready    bool
	status   string
}

// newSDNotifier reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID (kept in
// the environment: nothing we spawn inherits them, we spawn nothing).
func newSDNotifier(log *zap.Logger) *sdNotifier {
	n := &sdNotifier{log: log.Named("sdnotify"), notify: func(s string) (bool, error) { return daemon.SdNotify(false, s) }}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("watchdog environment invalid; not pinging", zap.Error(err))
	}
	n.watchdog = wd
	return n
}

// watchdogResync returns the resync period to use: resync itself, or
// WatchdogSec/2 when that is shorter, so an idle agent still completes a
// pass (and pings) twice per watchdog interval.
func (n *sdNotifier) watchdogResync(resync time.Duration) time.Duration {
	if n.watchdog <= 0 {
		return resync
	}
	if half := n.watchdog / 2; half < resync {
		return half
	}
	return resync
}

// afterPass is the loop's after-pass hook.
func (n *sdNotifier) afterPass(res reconcile.Result, err error) {
	status := statusLine(res, err)
	var msgs []string
	if !n.ready {
		msgs = append(msgs, "READY=1")
	}
	if status != n.status {
		msgs = append(msgs, "STATUS="+status)
	}
	if n.watchdog > 0 {
		msgs = append(msgs, "WATCHDOG=1")
	}
	if len(msgs) == 0 {
		return
	}
	sent, serr := n.notify(strings.Join(msgs, "\n"))
	switch {
	case serr != nil:
		n.log.Warn("sd_notify failed", zap.Error(serr))
		return
	case !sent:
		// No NOTIFY_SOCKET: not run by systemd as Type=notify.
	case !n.ready:
		n.log.Info("notified systemd: ready", zap.String("status", status), zap.Duration("watchdog", n.watchdog))
	}
	n.ready = true
	n.status = status
}

// stopping tells systemd the agent is shutting down.
func (n *sdNotifier) stopping() {
	if _, err := n.notify("STOPPING=1\nSTATUS=stopping"); err != nil {
		n.log.Debug("sd_notify failed", zap.Error(err))
	}
}

// statusLine is the one-line STATUS= summary of a pass: objects, steps
// applied, failed steps, drift (findings of category drift, enforced or
// reported) and other warnings.
func statusLine(res reconcile.Result, err error) string {
	drift, warn := 0, 0
	for _, f := range res.Plan.Findings {
		switch {
		case f.Reason.Category() == reconcile.CategoryDrift:
			drift++
		case f.Warning:
			warn++
		}
	}
	s := fmt.Sprintf("%d objects, %d steps, %d failed, %d drift, %d warnings", res.Objects, len(res.Plan.Steps), res.Failed(), drift, warn)
	if res.LoadErr != nil {
		s += ", invalid manifests"
	}
	if err != nil && res.Failed() == 0 {
		msg := err.Error()
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if len(msg) > 120 {
			msg = msg[:120] + "…"
		}
		s += "; error: " + msg
	}
	return s
}
