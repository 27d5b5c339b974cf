package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

// Results, as systemd's Result= property.
const (
	ResultSuccess       = "success"
	ResultExitCode      = "exit-code"
	ResultSignal        = "signal"
	ResultCoreDump      = "core-dump"
	ResultWatchdog      = "watchdog"
	ResultStartLimitHit = "start-limit-hit"
	ResultTimeout       = "timeout"
	// ResultUnknown: an adopted process (not our child) exited; its status
	// went to its real parent. It counts as a failure for restart policies.
	ResultUnknown = "unknown"
)

// opTrigger is a timer's start request: asynchronous, ignored when the unit
// is not idle (never two runs at once), and it starts a job's retry count afresh.
const opTrigger actuators.Op = "trigger"

type opReply struct {
	res actuators.Result
	err error
}

type command struct {
	op    actuators.Op
	reply chan opReply // buffered 1; nil for fire-and-forget
	// taken, when set, is closed once the unit's goroutine has acted on
	// the command (a start has begun: the unit is activating, active or
	// failed), without waiting for the command's outcome.
	taken chan struct{}
	// auto (OpStart at agent start only): the unit's last process died
	// while no agent ran; this start is an automatic restart, counted on
	// top of nRestarts, the count recorded with that process.
	auto      bool
	nRestarts uint32
}

// done closes taken, if set.
func (c command) done() {
	if c.taken != nil {
		close(c.taken)
	}
}

func (c command) answer(res actuators.Result, err error) {
	if c.reply != nil {
		c.reply <- opReply{res, err}
	}
}

// status is what Observe reports for a unit; guarded by unit.mu.
type status struct {
	ActiveState    string
	SubState       string
	Result         string
	NRestarts      uint32
	MainPID        int
	ExecMainStatus int32
	ExecMainStart  time.Time
	ExecMainExit   time.Time // zero while the process started last has not exited
	StatusText     string
	// SpecHash is the hash (fileHash) of the unit file the main process was
	// started from; empty while no process runs. Observe compares it with
	// the file on disk (observed.Unit.StaleProcess).
	SpecHash string
	// Timers.
	LastTrigger time.Time
	NextElapse  time.Time
	// Missed counts timer runs skipped because they were later than maxLateness.
	Missed int
}

// unit is one loaded unit and the goroutine that runs it.
type unit struct {
	s    *Supervisor
	name string
	cmds chan command

	mu   sync.Mutex
	spec *Spec  // latest loaded spec; a running process keeps the one it started with
	file []byte // bytes the spec was loaded from
	hash string // fileHash(file)
	st   status
}

func (u *unit) loaded() *Spec {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.spec
}

// current returns the latest loaded spec and the hash of the file it was
// loaded from, read together so a start records what it really runs.
func (u *unit) current() (*Spec, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.spec, u.hash
}

func (u *unit) status() status {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st
}

func (u *unit) update(f func(st *status)) {
	u.mu.Lock()
	f(&u.st)
	u.mu.Unlock()
	u.s.wake()
}

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
	restartAfterStop bool
	autoRestart      bool   // the next start is an automatic restart (NRestarts)
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
	r := &runner{u: u, log: u.s.log.With(zap.String("unit", u.name)), notifyCh: make(chan notifyMsg, 16), bgCancel: cancel}
	defer r.shutdown()
	if testHookBeforeInit != nil {
		testHookBeforeInit()
	}
	if adopt != nil && spec != nil {
		r.adopt(bgCtx, spec, adopt)
	} else {
		u.update(func(st *status) {
			if st.ActiveState == "" {
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
			r.notified(m)
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

func (r *runner) command(ctx context.Context, c command) {
	switch c.op {
	case actuators.OpStart, opTrigger:
		switch r.phase {
		case phIdle:
			if r.tracker != nil && r.spec.Type == TypeOneshot {
				r.tracker.Reset() // a job's attempts count per activation
			}
			r.wait(c, &r.startWaiters)
			if c.auto {
				r.u.update(func(st *status) { st.NRestarts = c.nRestarts })
			}
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
		case phAutoRestart:
			if c.op == opTrigger {
				return
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
		switch r.phase {
		case phIdle:
			c.answer(actuators.Unchanged, nil)
		case phLock, phCheckWait, phAutoRestart, phRetryWait:
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
		switch r.phase {
		case phIdle:
			r.wait(c, &r.startWaiters)
			r.beginStart(ctx)
		case phLock, phCheckWait, phAutoRestart, phRetryWait:
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
	case actuators.OpResetFailed:
		if r.tracker != nil {
			r.tracker.Reset()
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

// beginStart starts the unit with its latest loaded spec. A new spec (file
// hash) starts the restart tracker afresh.
func (r *runner) beginStart(ctx context.Context) { r.beginStartAs(ctx, false) }

// beginStartAs is beginStart; auto counts the start as an automatic restart.
func (r *runner) beginStartAs(ctx context.Context, auto bool) {
	spec, hash := r.u.current()
	if spec == nil {
		r.answerStarts(actuators.Unchanged, fmt.Errorf("unit %s is not loaded", r.u.name))
		return
	}
	if hash != r.hash || r.tracker == nil {
		r.tracker = NewTracker(*spec.Restart, r.u.s.now)
	}
	r.spec, r.hash = spec, hash
	r.autoRestart = auto
	r.attempt = 1
	r.startAttempt(ctx)
}

// startAttempt is one start, manual or automatic: limit check, lock, checks, main.
func (r *runner) startAttempt(ctx context.Context) {
	if ok, reason := r.tracker.AllowStart(); !ok {
		r.log.Warn("start refused", zap.String("reason", string(reason)))
		r.fail(ResultStartLimitHit, nil)
		return
	}
	r.tracker.Started()
	r.checkIdx, r.checkTry = 0, 0
	r.requested, r.watchdogFired, r.readyTimedOut = false, false, false
	r.lockThenRun(ctx)
}

func (r *runner) lockThenRun(ctx context.Context) {
	if r.spec.Lock != "" && r.lock == nil {
		f, busy, err := tryLock(r.spec.Lock)
		if err != nil {
			r.log.Error("lock failed", zap.Error(err))
			r.fail(ResultExitCode, err)
			return
		}
		if busy {
			r.phase = phLock
			r.set("activating", "start-pre", nil)
			r.setTimer(100 * time.Millisecond)
			return
		}
		r.lock = f
	}
	r.checkOrMain(ctx)
}

func (r *runner) releaseLock() {
	if r.lock != nil {
		r.lock.Close()
		r.lock = nil
	}
}

func (r *runner) checkOrMain(ctx context.Context) {
	if r.checkIdx < len(r.spec.PreStart) {
		c := r.spec.PreStart[r.checkIdx]
		r.phase = phCheck
		r.set("activating", "start-pre", nil)
		p, err := r.spawn(ctx, c.Command, nil, false)
		if err != nil {
			r.log.Error("pre-start check failed to run", zap.Error(err))
			r.fail(ResultExitCode, err)
			return
		}
		r.proc, r.isCheck = p, true
		return
	}
	r.startMain(ctx)
}

func (r *runner) startMain(ctx context.Context) {
	var extra []string
	if r.spec.Type == TypeNotify {
		if err := r.ensureNotify(ctx); err != nil {
			r.log.Error("notify socket failed", zap.Error(err))
			r.fail(ResultExitCode, err)
			return
		}
		extra = append(extra, "NOTIFY_SOCKET="+r.notify.path)
		if w := r.spec.Watchdog; w != nil && w.Timeout.D() > 0 {
			extra = append(extra, "WATCHDOG_USEC="+strconv.FormatInt(w.Timeout.D().Microseconds(), 10))
		}
	}
	// The restart count this process starts with goes into the intent row
	// written before the fork: an agent killed between the fork and the
	// table write leaves a launch the next agent adopts with its count (an
	// automatic restart then stays counted; found by the torture suite).
	restarted := r.autoRestart
	n := r.u.status().NRestarts
	if restarted {
		n++
	}
	r.nextRestarts = n
	p, err := r.spawn(ctx, r.spec.Command, extra, true)
	r.releaseLock() // the child holds it now
	if err != nil {
		r.log.Error("start failed", zap.Error(err))
		r.fail(ResultExitCode, err)
		return
	}
	r.proc, r.isCheck = p, false
	r.autoRestart = false
	p.rec.NRestarts = n
	r.u.s.recordProc(r.u.name, &p.rec)
	r.log.Info("process started", zap.Int("pid", p.rec.PID), zap.Bool("autoRestart", restarted))
	r.u.update(func(st *status) {
		st.MainPID, st.ExecMainStart, st.ExecMainStatus = p.rec.PID, time.UnixMicro(p.rec.Started), 0
		st.SpecHash = p.rec.SpecHash
		st.ExecMainExit = time.Time{}
		st.NRestarts = n
	})
	r.wdTimeout = 0
	if w := r.spec.Watchdog; w != nil {
		r.wdTimeout = w.Timeout.D()
	}
	r.resetWatchdog()
	switch r.spec.Type {
	case TypeNotify:
		r.phase = phStart
		r.set("activating", "start", nil)
		d, _ := time.ParseDuration(defaultReadyTimeout)
		r.setTimer(d)
	case TypeOneshot:
		r.phase = phStart
		r.set("activating", "start", nil)
	default:
		r.phase = phRunning
		r.set("active", "running", nil)
		r.answerStarts(actuators.Changed, nil)
	}
}

// spawn forks argv (a check or the main command) with the unit's identity,
// environment and logs. Every child carries the markers of its launch in
// its environment (markerEnv), so a restarted agent finds it without the
// process table. A main process is written to the table as an intent
// (PID 0) before the fork, then with its PID: whenever the agent is killed,
// the table names every main process it may have started.
func (r *runner) spawn(ctx context.Context, argv []string, extra []string, main bool) (*child, error) {
	s := r.u.s
	id, err := resolveIdentity(r.spec.User, r.spec.Group)
	if err != nil {
		return nil, err
	}
	nonce := newNonce()
	env, err := buildEnv(r.spec, id, append(extra, s.markerEnv(r.u.name, nonce)...))
	if err != nil {
		return nil, err
	}
	now := s.now()
	base := filepath.Join(s.runDir, r.u.name+"."+strconv.FormatInt(now.UnixNano(), 36))
	l := launch{argv: argv, env: env, dir: r.spec.WorkingDirectory, id: id, out: base + ".out", errp: base + ".err", stamp: now}
	rec := procRecord{Unit: r.u.name, Nonce: nonce, Started: now.UnixMicro(), SpecHash: r.hash, Stdout: l.out, Stderr: l.errp}
	if main {
		l.lock = r.lock
		rec.NRestarts = r.nextRestarts
		s.recordIntent(r.u.name, rec)
		if s.beforeFork != nil {
			s.beforeFork(r.u.name)
		}
	}
	p, err := s.forkExec(l)
	if err != nil {
		if main {
			s.recordProc(r.u.name, nil)
		}
		return nil, err
	}
	p.rec.Unit, p.rec.Nonce, p.rec.SpecHash = rec.Unit, rec.Nonce, rec.SpecHash
	r.startCopiers(p)
	return p, nil
}

func (r *runner) startCopiers(p *child) {
	outW, errW := r.u.s.writers(r.u.name, r.spec.Logs)
	for i, f := range p.readers {
		w := outW
		if i == 1 {
			w = errW
		}
		r.copiers.Add(1)
		go func() {
			defer r.copiers.Done()
			copyLines(f, w)
			f.Close()
		}()
	}
}

func (r *runner) ensureNotify(ctx context.Context) error {
	if r.notify != nil {
		return nil
	}
	id, _ := resolveIdentity(r.spec.User, r.spec.Group)
	ns, err := listenNotify(filepath.Join(r.u.s.runDir, r.u.name+".notify"), id.uid, id.gid)
	if err != nil {
		return err
	}
	r.notify = ns
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		ns.serve(ctx, r.notifyCh)
	}()
	return nil
}

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
	signalGroup(r.proc.rec.PGID, sig)
	r.phase = phStopping
	r.set("deactivating", sub, nil)
	r.setTimer(r.stopTimeout())
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

func (r *runner) stopTimeout() time.Duration {
	if d := r.spec.StopTimeout.D(); d > 0 {
		return d
	}
	d, _ := time.ParseDuration(defaultStopTimeout)
	return d
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
		// Like systemd, an automatic restart runs the latest loaded spec.
		if spec, hash := r.u.current(); spec != nil && (spec != r.spec || hash != r.hash) {
			r.spec, r.hash = spec, hash
			r.tracker.SetSpec(*spec.Restart)
		}
		r.autoRestart = true
		r.startAttempt(ctx)
	case phStart: // no READY=1 in time
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

func (r *runner) watchdogExpired(why string) {
	if r.proc == nil || r.isCheck || r.phase == phStopping {
		return
	}
	r.log.Warn("watchdog expired", zap.Int("pid", r.proc.rec.PID), zap.String("why", why))
	r.watchdogFired = true
	r.stopWatchdog()
	r.kill(syscall.SIGABRT, "stop-watchdog")
}

func (r *runner) notified(m notifyMsg) {
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
	if m.Ready && r.phase == phStart && r.spec.Type == TypeNotify {
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
	signalGroup(p.rec.PGID, syscall.SIGKILL) // what is left of the group (KillMode=control-group)
	r.stopWatchdog()
	r.stopTimer()
	switch {
	case r.watchdogFired:
		result, clean = ResultWatchdog, false
	case r.readyTimedOut:
		result, clean = ResultTimeout, false
	}
	exitAt := r.u.s.now()
	r.u.update(func(st *status) {
		st.ExecMainStatus, st.MainPID, st.ExecMainExit, st.SpecHash = es.execMainStatus(), 0, exitAt, ""
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

// adopt takes over a process a previous agent started (same PID and start
// time). It keeps running what it was started from (rec.SpecHash): a newer
// unit file on disk is the planner's business (StaleProcess), never a
// restart the supervisor decides on its own. spec is the unit's spec at
// load, not the unit's current one: a reload may have unloaded it since.
func (r *runner) adopt(ctx context.Context, spec *Spec, rec *procRecord) {
	r.spec = spec
	r.hash = rec.SpecHash
	r.tracker = NewTracker(*r.spec.Restart, r.u.s.now)
	r.attempt = 1
	exit := make(chan exitStatus, 1)
	p := &child{rec: *rec, exit: exit}
	for _, path := range []string{rec.Stdout, rec.Stderr} {
		if path == "" {
			continue
		}
		f, err := openFIFOReader(path)
		if err != nil {
			r.log.Warn("adopted process output lost", zap.Error(err))
			continue
		}
		p.readers = append(p.readers, f)
	}
	if len(p.readers) == 2 {
		r.startCopiers(p)
	}
	r.proc = p
	r.unwatch = watchExit(&r.bg, rec.PID, exit)
	if r.spec.Type == TypeNotify {
		if err := r.ensureNotify(ctx); err != nil {
			r.log.Error("notify socket failed", zap.Error(err))
		}
		if w := r.spec.Watchdog; w != nil {
			r.wdTimeout = w.Timeout.D()
			r.resetWatchdog()
		}
	}
	r.phase = phRunning
	r.set("active", "running", func(st *status) {
		st.MainPID, st.ExecMainStart, st.SpecHash = rec.PID, time.UnixMicro(rec.Started), rec.SpecHash
		st.NRestarts = rec.NRestarts
	})
	r.log.Info("process adopted", zap.Int("pid", rec.PID), zap.Bool("stopping", rec.Stopping))
	if rec.Stopping {
		// The previous agent was stopping it when it was killed: finish
		// the stop, and start it again if that was a restart.
		r.requested = true
		r.restartAfterStop = rec.stopReason() == stopRestart
		r.kill(syscall.SIGTERM, "stop-sigterm")
	}
}

// watchExit reports the exit of a process that may not be our child, using
// a pidfd (poll says when it exited). When it is our child after all (same
// agent process, as in tests) the status is reaped with wait4; otherwise it
// is unknown. The returned func stops the watch; wg tracks the goroutine.
func watchExit(wg *sync.WaitGroup, pid int, exit chan<- exitStatus) (stop func()) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return pollExit(wg, pid, exit)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return pollExit(wg, pid, exit)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := rc.Read(func(fd uintptr) bool {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, _ := unix.Poll(pfd, 0)
			return n > 0
		})
		if err == nil {
			exit <- reapIfChild(pid)
		}
	}()
	return func() { f.Close() }
}

// pollExit is watchExit without pidfd (kernels before 5.3): /proc, once a second.
func pollExit(wg *sync.WaitGroup, pid int, exit chan<- exitStatus) (stop func()) {
	quit := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if st, err := readProcStat("/proc", pid); err != nil || st.State == 'Z' {
					exit <- reapIfChild(pid)
					return
				}
			}
		}
	}()
	return func() { close(quit) }
}

// reapIfChild collects the status of an exited process if it is our child.
func reapIfChild(pid int) exitStatus {
	var ws unix.WaitStatus
	for i := 0; i < 50; i++ {
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid {
			if ws.Signaled() {
				return exitStatus{Known: true, Signal: syscall.Signal(ws.Signal()), Core: ws.CoreDump()}
			}
			return exitStatus{Known: true, Code: ws.ExitStatus()}
		}
		if err != nil { // ECHILD: not ours
			return exitStatus{}
		}
		time.Sleep(10 * time.Millisecond) // exited but not yet a zombie
	}
	return exitStatus{}
}
