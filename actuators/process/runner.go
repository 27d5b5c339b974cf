package process

// The unit runner: one goroutine per service unit, its phases and the
// events that move it between them (see the diagram and table on phase).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
)

// phase is where a service unit's runner is; only its goroutine reads or
// changes it. ActiveState/SubState are in the comments of the constants.
//
// Phases and the events that move the runner between them ("start" is a
// start, trigger or restart command; code in runner_start.go and
// runner_exit.go):
//
//	Idle ──start──► startAttempt ──limit hit──► Idle (failed, start-limit-hit)
//	Idle ──the supervisor's own start at Run──► Queued ──Release──► startAttempt
//	     (an automatic restart owed at Run: AutoRestart, its delay, then Release)
//	                     │
//	                     ▼          busy
//	                take the lock ──────► Lock ──timer──► (take the lock again)
//	                     │
//	                     ▼          a preStart check left
//	                run a check? ───────► Check ──exit ok──► (next check)
//	                     │                  │ failed, tries left ──► CheckWait ──timer──► Check
//	                     │                  └ failed, none left ───► Idle (failed)
//	                     ▼
//	                main process ──simple──────────────────► Running
//	                     │ notify, oneshot, startup probe
//	                     ▼
//	                   Start ──READY=1 (notify)────────────► Running
//	                     │  (with a startup probe: simple at once, notify
//	                     │  after READY=1, Start/start-post runs the probe)
//	                     │ ──probe passed──────────────────► Running
//	                     │ ──probe timed out──► Stopping (SIGTERM; exit-code)
//	                     │ exit (oneshot)         Running ──exit──┐
//	                     └────────────────────────────────────────┤
//	                                                              ▼
//	                                                        exit handling
//	  job attempt failed, attempts left ──► RetryWait ──timer──► take the lock
//	  Tracker.Decide restart            ──► AutoRestart ──timer──► startAttempt (latest spec;
//	                                        before Release, at Release; no spec: Idle)
//	  Tracker.Decide stop               ──► Idle (inactive)
//	  Tracker.Decide fail, limit        ──► Idle (failed)
//
//	Start ──ready timeout──► Stopping (SIGTERM)
//	Start, Running ──watchdog expired, WATCHDOG=trigger──► Stopping (SIGABRT)
//	Check, Start, Running ──stop, restart──► Stopping (SIGTERM)
//	Stopping ──stop timeout──► SIGKILL, still Stopping
//	Stopping ──exit──► Idle (inactive: the stop was requested), then a
//	                   start if a restart was asked (restartAfterStop)
//	lock or notify socket error ──► Idle (failed)
//	spawn error (203/EXEC, 217/USER, …) ──► exit handling, as a failed run
//
// What each command does in each phase (runner.command; "wait" adds the
// caller to the start or stop waiters, answered when the phase settles):
//
//	phase        start, trigger           stop                     restart                  reset-failed
//	Idle         begin start (a job:      Unchanged                begin start              failed: inactive,
//	             attempts afresh)                                                           Changed; else Unchanged
//	Lock,        start: wait;             cancel timer and lock,   cancel timer and lock,   tracker reset,
//	CheckWait,   trigger: ignored         starts fail, Idle        begin start              Unchanged
//	RetryWait                             (inactive), Changed
//	Check, Start start: wait;             SIGTERM, Stopping,       SIGTERM, Stopping,       tracker reset,
//	             trigger: ignored         starts fail, wait        restart after, wait      Unchanged
//	Running      Unchanged                SIGTERM, Stopping, wait  SIGTERM, Stopping,       tracker reset,
//	                                                               restart after, wait      Unchanged
//	Stopping     start: restart after,    stop stands, queued      restart after, wait      tracker reset,
//	             wait; trigger: ignored   start fails, wait                                 Unchanged
//	AutoRestart, start: cancel delay,     cancel delay, starts     cancel delay, begin      tracker reset,
//	Queued       begin start;             fail, Idle (inactive),   start                    Unchanged
//	             trigger: ignored         Changed; the dead
//	                                      process's row dropped
//
// reset-failed always resets the restart tracker (start limit); it changes
// the state only of a failed idle unit.
type phase int

const (
	phIdle        phase = iota // inactive/dead or failed
	phLock                     // waiting for the lock (activating/start-pre)
	phCheck                    // a preStart check runs (activating/start-pre)
	phCheckWait                // between check tries (activating/start-pre)
	phStart                    // main process runs, not yet started (notify: READY; oneshot: exit)
	phRunning                  // active/running
	phStopping                 // deactivating: signal sent, waiting for exit
	phAutoRestart              // activating/auto-restart: waiting the restart delay
	phRetryWait                // activating/start: a job waits between attempts of one run
	// phQueued (activating/start): a start the supervisor decided itself
	// at Run (startEnabled's) waits for Release
	// (Options.HoldUntilRelease), then runs the spec loaded then.
	phQueued
)

// runner is the state of one service's goroutine; only that goroutine touches it.
type runner struct {
	u       *unit
	log     *zap.Logger
	spec    *Spec
	hash    string
	tracker *Tracker
	phase   phase

	proc     *child
	isCheck  bool
	checkIdx int
	checkTry int
	attempt  int // a job's attempt within the current run, from 1
	lock     *os.File

	requested        bool // the current process is being stopped on request
	watchdogFired    bool
	readyTimedOut    bool
	startupFailed    bool // the startup probe did not pass: a failed start
	restartAfterStop bool
	autoRestart      bool   // the next start is an automatic restart (NRestarts)
	owedRestart      bool   // the next start is a restart job's, or finishes one a killed agent began (procRecord.Owed)
	queuedOwed       bool   // phQueued's start finishes a restart a killed agent began
	waitRelease      bool   // a start waits for Release (phQueued, or AutoRestart's delay is over)
	nextRestarts     uint32 // NRestarts of the main process being spawned (its intent row)

	startWaiters []chan opReply
	stopWaiters  []chan opReply

	timer     *time.Timer
	timerC    <-chan time.Time
	wd        *time.Timer
	wdC       <-chan time.Time
	wdTimeout time.Duration

	notify   *notifySocket
	notifyCh chan notifyMsg

	probeCh     chan probeResult   // startup probe results
	probeCancel context.CancelFunc // the running startup probe's

	copiers  sync.WaitGroup
	bg       sync.WaitGroup
	bgCancel context.CancelFunc
	unwatch  func() // stops an adopted process's pidfd watch
}

// testHookBeforeInit, set only by tests that run alone, delays each new
// service goroutine before it sets its first status (a unit goroutine
// scheduled late).
var testHookBeforeInit func()

// runService is the goroutine of one service unit. It adopts adopt (a
// process started from spec, the unit's spec when it was loaded), sets the
// unit's first status, closes initialized, and serves commands. It returns
// when ctx is done, leaving any process running (the supervisor stops
// processes before cancelling ctx when it should).
func (u *unit) runService(ctx context.Context, spec *Spec, adopt *procRecord, initialized chan<- struct{}) {
	bgCtx, cancel := context.WithCancel(ctx)
	r := &runner{u: u, log: u.s.log.With(zap.String("unit", u.name)), notifyCh: make(chan notifyMsg, 16), probeCh: make(chan probeResult, 1), bgCancel: cancel}
	defer r.shutdown()
	if testHookBeforeInit != nil {
		testHookBeforeInit()
	}
	if adopt != nil && spec != nil {
		r.adopt(bgCtx, spec, adopt)
	} else {
		_, hash := u.current()
		idle, ok := u.s.idleAtLoad(u.name, hash)
		u.update(func(st *status) {
			switch {
			case st.ActiveState != "":
			case ok && (idle.State == idleFailed || idle.State == idleExited):
				// Failed, or done (exited by itself, not restarted by its
				// policy), when the last agent of this boot died, from
				// this same unit file: with its last run.
				*st = idle.status()
			default:
				st.ActiveState, st.SubState = "inactive", "dead"
			}
		})
	}
	close(initialized)
	for {
		var exitC <-chan exitStatus
		if r.proc != nil {
			exitC = r.proc.exit
		}
		var relC <-chan struct{}
		if r.waitRelease {
			relC = u.s.released
		}
		select {
		case <-ctx.Done():
			return
		case c := <-u.cmds:
			r.command(bgCtx, c)
			c.done()
		case st := <-exitC:
			r.exited(bgCtx, st)
		case <-r.timerC:
			r.timerC = nil
			r.timerFired(bgCtx)
		case <-r.wdC:
			r.wdC = nil
			r.watchdogExpired("timeout")
		case m := <-r.notifyCh:
			r.notified(bgCtx, m)
		case res := <-r.probeCh:
			r.probed(res)
		case <-relC:
			r.waitRelease = false
			r.release(bgCtx)
		}
	}
}

func (r *runner) shutdown() {
	r.stopTimer()
	r.stopWatchdog()
	if r.unwatch != nil {
		r.unwatch()
	}
	if r.proc != nil {
		for _, f := range r.proc.readers {
			f.Close() // abandon: the next agent re-opens the FIFOs
		}
	}
	if r.lock != nil {
		r.lock.Close()
	}
	if r.notify != nil {
		r.notify.close()
	}
	r.bgCancel()
	r.bg.Wait()
	r.copiers.Wait()
	err := errors.New("supervisor stopped")
	r.answerStarts(actuators.Unchanged, err)
	r.answerStops(actuators.Unchanged, err)
}

func (r *runner) command(ctx context.Context, c command) {
	switch c.op {
	case actuators.OpStart, opTrigger:
		switch r.phase {
		case phIdle:
			if c.auto || c.atRun && !r.u.s.isReleased() {
				r.queue(c)
				return
			}
			if r.tracker != nil && r.spec.Type == TypeOneshot {
				r.tracker.Reset() // a job's attempts count per activation
			}
			r.wait(c, &r.startWaiters)
			if c.auto {
				r.u.update(func(st *status) { st.NRestarts = c.nRestarts })
			}
			r.owedRestart = c.owed
			r.beginStartAs(ctx, c.auto)
		case phRunning:
			c.answer(actuators.Unchanged, nil)
		case phStopping:
			if c.op == opTrigger {
				return
			}
			r.restartAfterStop = true
			r.recordStop()
			r.wait(c, &r.startWaiters)
		case phAutoRestart, phQueued:
			if c.op == opTrigger {
				return
			}
			if r.phase == phQueued {
				r.owedRestart = r.owedRestart || r.queuedOwed
			}
			r.stopTimer()
			r.wait(c, &r.startWaiters)
			r.beginStart(ctx)
		default: // activating
			if c.op == opTrigger {
				return
			}
			r.wait(c, &r.startWaiters)
		}
	case actuators.OpStop:
		// Stopped on request: the next agent of this boot leaves it
		// stopped (startEnabled), unless its unit file changed.
		_, hash := r.u.current()
		r.u.s.noteIdle(r.u.name, idleEntry{State: idleStopped, Hash: hash})
		switch r.phase {
		case phIdle:
			c.answer(actuators.Unchanged, nil)
		case phLock, phCheckWait, phAutoRestart, phRetryWait, phQueued:
			if r.phase == phAutoRestart || r.phase == phQueued {
				// The row of the process that exited (kept for the
				// restart, or for the next agent to owe it) goes: the
				// stop stands, no next agent restarts it.
				r.u.s.dropRow(r.u.name)
			}
			r.stopTimer()
			r.releaseLock()
			r.answerStarts(actuators.Unchanged, errors.New("start canceled by stop"))
			r.set("inactive", "dead", nil)
			r.phase = phIdle
			c.answer(actuators.Changed, nil)
		case phStopping:
			r.requested, r.restartAfterStop = true, false
			r.recordStop()
			r.answerStarts(actuators.Unchanged, errors.New("start canceled by stop"))
			r.wait(c, &r.stopWaiters)
		default: // check, start, running
			r.requested, r.restartAfterStop = true, false
			r.answerStarts(actuators.Unchanged, errors.New("start canceled by stop"))
			r.wait(c, &r.stopWaiters)
			r.kill(syscall.SIGTERM, "stop-sigterm")
		}
	case actuators.OpRestart:
		// The process it starts is marked as a restart job's (the
		// agent's): a next agent that finds it started, this one killed
		// before its ledger saw it, counts it as the agent's, not manual.
		r.owedRestart = true
		switch r.phase {
		case phIdle:
			r.wait(c, &r.startWaiters)
			r.beginStart(ctx)
		case phLock, phCheckWait, phAutoRestart, phRetryWait, phQueued:
			r.stopTimer()
			r.releaseLock()
			r.wait(c, &r.startWaiters)
			r.beginStart(ctx)
		case phStopping:
			r.restartAfterStop = true
			r.recordStop()
			r.wait(c, &r.startWaiters)
		default:
			r.requested, r.restartAfterStop = true, true
			r.wait(c, &r.startWaiters)
			r.kill(syscall.SIGTERM, "stop-sigterm")
		}
	case opReload:
		r.reloadSpec()
	case actuators.OpResetFailed:
		if r.tracker != nil {
			r.tracker.Reset()
		}
		if c.thenStart && r.phase == phIdle {
			// Straight from failed (or stopped) to activating: asked
			// for against the manifests (reconciler reset), not held.
			r.command(ctx, command{op: actuators.OpStart})
			c.answer(actuators.Changed, nil)
			return
		}
		if r.phase == phIdle && r.u.status().ActiveState == "failed" {
			r.set("inactive", "dead", func(st *status) { st.Result = ResultSuccess })
			c.answer(actuators.Changed, nil)
			return
		}
		c.answer(actuators.Unchanged, nil)
	default:
		c.answer(actuators.Unchanged, fmt.Errorf("unit %s: unsupported op %s", r.u.name, c.op))
	}
}

func (r *runner) timerFired(ctx context.Context) {
	switch r.phase {
	case phLock:
		r.lockThenRun(ctx)
	case phCheckWait:
		r.checkOrMain(ctx)
	case phRetryWait:
		r.lockThenRun(ctx)
	case phAutoRestart:
		if !r.u.s.isReleased() {
			// Held (Options.HoldUntilRelease): the restart runs once the
			// first pass has written what the manifests say.
			r.waitRelease = true
			return
		}
		// Like systemd, an automatic restart runs the latest loaded spec;
		// none (its unit file is gone) restarts nothing.
		spec, hash := r.u.current()
		if spec == nil {
			r.goneBeforeStart()
			return
		}
		if spec != r.spec || hash != r.hash {
			r.spec, r.hash = spec, hash
			r.tracker.SetSpec(*spec.Restart)
		}
		r.autoRestart = true
		r.startAttempt(ctx)
	case phStart: // no READY=1 in time (a startup probe has no timer: it times out itself)
		r.log.Warn("start timed out")
		r.readyTimedOut = true
		r.kill(syscall.SIGTERM, "stop-sigterm")
	case phStopping:
		if r.proc != nil {
			r.log.Warn("stop timed out, killing", zap.Int("pid", r.proc.rec.PID))
			signalGroup(r.proc.rec.PGID, syscall.SIGKILL)
		}
	}
}

// queue takes a start the supervisor decided itself at Run (c.atRun,
// Supervisor.startEnabled): held until Release (phQueued), or,
// for the automatic restart of a process that died while no agent ran
// (c.auto), the restart delay of its policy and then Release
// (AutoRestart), as systemd waits RestartSec. Either runs the spec loaded
// when it starts: the first pass may have rewritten, stopped or pruned it.
func (r *runner) queue(c command) {
	spec, hash := r.u.current()
	if spec == nil {
		c.answer(actuators.Unchanged, fmt.Errorf("unit %s is not loaded", r.u.name))
		return
	}
	r.wait(c, &r.startWaiters)
	r.owedRestart, r.queuedOwed = false, c.owed
	if !c.auto {
		r.phase = phQueued
		r.waitRelease = true
		r.set("activating", "start", nil)
		return
	}
	if hash != r.hash || r.tracker == nil {
		r.tracker = NewTracker(*spec.Restart, r.u.s.now)
	}
	r.spec, r.hash = spec, hash
	r.attempt = 1
	r.owedRestart = c.owed
	r.phase = phAutoRestart
	r.set("activating", "auto-restart", func(st *status) { st.NRestarts = c.nRestarts })
	r.setTimer(spec.Restart.Delay.D())
}

// goneBeforeStart ends a start that waited (the restart delay, Release)
// for a unit whose file is gone meanwhile: nothing to start, and the row
// of the process that exited goes, so no next agent restarts it.
func (r *runner) goneBeforeStart() {
	r.u.s.dropRow(r.u.name)
	r.phase = phIdle
	r.set("inactive", "dead", nil)
	r.answerStarts(actuators.Unchanged, fmt.Errorf("unit %s is not loaded", r.u.name))
}

// release runs what waited for Release.
func (r *runner) release(ctx context.Context) {
	switch r.phase {
	case phQueued:
		if r.u.loaded() == nil {
			r.goneBeforeStart() // pruned without a stop
			return
		}
		r.phase = phIdle
		r.owedRestart = r.queuedOwed
		r.beginStartAs(ctx, false)
	case phAutoRestart:
		if r.timerC == nil { // its delay is over
			r.timerFired(ctx)
		}
	}
}

func (r *runner) set(active, sub string, f func(st *status)) {
	r.u.update(func(st *status) {
		st.ActiveState, st.SubState = active, sub
		if f != nil {
			f(st)
		}
	})
}

func (r *runner) answerStarts(res actuators.Result, err error) {
	for _, c := range r.startWaiters {
		c <- opReply{res, err}
	}
	r.startWaiters = nil
}

func (r *runner) answerStops(res actuators.Result, err error) {
	for _, c := range r.stopWaiters {
		c <- opReply{res, err}
	}
	r.stopWaiters = nil
}

func (r *runner) wait(c command, list *[]chan opReply) {
	if c.reply != nil {
		*list = append(*list, c.reply)
	}
}

func (r *runner) setTimer(d time.Duration) {
	r.stopTimer()
	r.timer = time.NewTimer(d)
	r.timerC = r.timer.C
}

func (r *runner) stopTimer() {
	if r.timer != nil {
		r.timer.Stop()
	}
	r.timer, r.timerC = nil, nil
}

func (r *runner) resetWatchdog() {
	r.stopWatchdog()
	if r.wdTimeout > 0 {
		r.wd = time.NewTimer(r.wdTimeout)
		r.wdC = r.wd.C
	}
}

func (r *runner) stopWatchdog() {
	if r.wd != nil {
		r.wd.Stop()
	}
	r.wd, r.wdC = nil, nil
}
