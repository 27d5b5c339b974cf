package process

// Starting a unit: start limit, lock, preStart checks, then the main
// process (spawn, output copiers, notify socket).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ident"
)

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
	r.u.s.forgetIdle(r.u.name)
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
	r.requested, r.watchdogFired, r.readyTimedOut, r.startupFailed = false, false, false, false
	r.lockThenRun(ctx)
}

func (r *runner) lockThenRun(ctx context.Context) {
	if r.spec.Lock != "" && r.lock == nil {
		id, err := resolveIdentity(r.spec.User, r.spec.Group)
		if err != nil {
			r.log.Error("lock failed", zap.Error(err))
			r.fail(ResultExitCode, err)
			return
		}
		f, busy, err := tryLock(r.spec.Lock, id.cred)
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
	// A start that is not an automatic restart (a start or restart job,
	// a boot) zeroes the count, as systemd's does: NRestarts counts the
	// restarts by policy since the unit was last started.
	restarted := r.autoRestart
	var n uint32
	if restarted {
		n = r.u.status().NRestarts + 1
	}
	r.nextRestarts = n
	p, err := r.spawn(ctx, r.spec.Command, extra, true)
	r.releaseLock() // the child holds it now
	if err != nil {
		r.owedRestart = false
		r.log.Error("start failed", zap.Error(err))
		// This start is the last run, as systemd shows a main process
		// whose exec failed (its exit status 217/USER, 203/EXEC, …), not
		// the process before it.
		now := r.u.s.now()
		r.u.update(func(st *status) {
			st.MainPID, st.ExecMainStart, st.ExecMainExit, st.ExecMainStatus = 0, now, now, spawnStatus(err, r.spec.WorkingDirectory)
		})
		r.spawnFailed(err)
		return
	}
	r.proc, r.isCheck = p, false
	r.autoRestart, r.owedRestart = false, false
	p.rec.NRestarts = n
	p.rec.Next = r.reserveNext(n + 1)
	r.u.s.recordProc(r.u.name, &p.rec)
	r.log.Info("process started", zap.Int("pid", p.rec.PID), zap.Bool("autoRestart", restarted))
	r.u.update(func(st *status) {
		st.MainPID, st.ExecMainStart, st.ExecMainStatus = p.rec.PID, time.UnixMicro(p.rec.Started), 0
		st.SpecHash, st.ProcHash = p.rec.SpecHash, p.rec.ProcHash
		st.ExecMainExit = time.Time{}
		st.NRestarts = n
		st.Owed = p.rec.Owed
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
		if r.spec.Startup != nil {
			r.beginStartupProbe(ctx)
			return
		}
		r.phase = phRunning
		r.set("active", "running", nil)
		r.answerStarts(actuators.Changed, nil)
	}
}

// spawnFailed ends a start whose main process could not be started (its
// exec failed: 203/EXEC, 217/USER, 200/CHDIR) as systemd ends a failed run
// of Type=exec: the start fails, and the restart policy decides (a job's
// attempts first, then Tracker.Decide: an automatic restart after the
// delay, until the start limit; never: failed).
func (r *runner) spawnFailed(err error) {
	if rt := r.spec.Retry; rt != nil && r.attempt < rt.Attempts {
		r.log.Warn("job attempt failed, retrying", zap.Error(err), zap.Int("attempt", r.attempt), zap.Int("attempts", rt.Attempts))
		r.attempt++
		r.phase = phRetryWait
		r.set("activating", "start", nil)
		r.setTimer(desired.RetryDelay(rt))
		return
	}
	d, delay, reason := r.tracker.Decide(false, false)
	r.log.Info("start failed, restart policy decides", zap.Stringer("decision", d), zap.String("reason", string(reason)))
	switch d {
	case DecisionRestart:
		r.answerStarts(actuators.Unchanged, fmt.Errorf("unit %s failed: %s: %w", r.u.name, ResultExitCode, err))
		r.phase = phAutoRestart
		r.set("activating", "auto-restart", func(st *status) { st.Result = ResultExitCode })
		r.setTimer(delay)
	case DecisionLimit:
		r.fail(ResultStartLimitHit, err)
	default:
		r.fail(ResultExitCode, err)
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
	var reserved *procRecord
	if main && r.autoRestart {
		reserved = r.reserved()
	}
	pre := false
	if main && reserved == nil {
		reserved = r.usePreIntent() // its intent is in the file already
		pre = reserved != nil
	}
	if reserved != nil {
		nonce = reserved.Nonce
	}
	env, err := buildEnv(r.spec, id, append(extra, s.markerEnv(r.u.name, nonce)...))
	if err != nil {
		if pre {
			s.recordProc(r.u.name, nil) // the batch's intent: never forked
		}
		return nil, err
	}
	now := s.now()
	base := filepath.Join(s.runDir, r.u.name+"."+strconv.FormatInt(now.UnixNano(), 36))
	dir := r.spec.WorkingDirectory
	if dir == "" {
		dir = "/" // systemd's for system services, not the agent's own
	}
	l := launch{argv: argv, env: env, dir: dir, id: id, out: base + ".out", errp: errPath(base, r.spec.Logs), stamp: now}
	if reserved != nil {
		l.out, l.errp = reserved.Stdout, reserved.Stderr
	}
	rec := procRecord{Unit: r.u.name, Nonce: nonce, Started: now.UnixMicro(), SpecHash: r.hash, ProcHash: procHash(r.spec), Stdout: l.out, Stderr: l.errp}
	if main {
		l.lock = r.lock
		rec.NRestarts = r.nextRestarts
		rec.Owed = r.owedRestart && !r.autoRestart
		if reserved == nil {
			s.recordIntent(r.u.name, rec)
		}
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
	p.rec.Unit, p.rec.Nonce, p.rec.SpecHash, p.rec.ProcHash, p.rec.Owed = rec.Unit, rec.Nonce, rec.SpecHash, rec.ProcHash, rec.Owed
	r.startCopiers(p)
	return p, nil
}

// reserveNext returns the reservation of the unit's next automatic
// restart, with count n (procRecord.Next), or nil when its policy never
// restarts.
func (r *runner) reserveNext(n uint32) *procRecord {
	if r.spec.Restart == nil || r.spec.Restart.Policy == desired.RestartNever || r.spec.Restart.Policy == "" {
		return nil
	}
	rec := r.u.s.launchRecord(r.u.name, "r", r.spec, r.hash, n)
	return &rec
}

// launchRecord is a launch written before its fork (a restart's
// reservation, tag "r"; a batch's intent, tag "p"): a new launch ID, the
// output FIFOs named after it, the spec and file it runs, restart count n.
// Started stays 0 (the process's own start time is taken when it is
// adopted by it).
func (s *Supervisor) launchRecord(unit, tag string, spec *Spec, hash string, n uint32) procRecord {
	nonce := newNonce()
	base := filepath.Join(s.runDir, unit+"."+tag+nonce[:16])
	return procRecord{Unit: unit, Nonce: nonce, SpecHash: hash, ProcHash: procHash(spec),
		Stdout: base + ".out", Stderr: errPath(base, spec.Logs), NRestarts: n}
}

// errPath is the stderr FIFO of a launch whose stdout FIFO is base.out:
// the same FIFO when stderr goes where stdout goes (no logs.stderr of its
// own; systemd's StandardError=inherit, where both are one stream too),
// so a process costs one FIFO, not two; otherwise base.err.
func errPath(base string, logs *desired.Logs) string {
	if logs == nil || logs.Stderr == "" || logs.Stderr == logs.Stdout {
		return base + ".out"
	}
	return base + ".err"
}

// reserved returns the reservation in the unit's table row that this
// automatic restart may use: the row still names the process that exited
// (so the reservation is in the file), and its spec and count are this
// launch's. Otherwise the restart writes an intent row before its fork.
func (r *runner) reserved() *procRecord {
	s := r.u.s
	s.mu.Lock()
	rec, ok := s.table[r.u.name]
	dirty := s.tableDirty
	s.mu.Unlock()
	if !ok || rec.Next == nil || rec.PID == 0 || dirty {
		return nil
	}
	if nx := rec.Next; nx.SpecHash == r.hash && nx.ProcHash == procHash(r.spec) && nx.NRestarts == r.nextRestarts {
		return nx
	}
	return nil
}

// startCopiers drains the launch's FIFOs: the first to stdout's writer,
// the second, if any, to stderr's (one FIFO carries both when stderr
// follows stdout).
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
	id, _ := resolveIdentity(r.spec.User, r.spec.Group)
	if r.notify != nil {
		// The socket outlives the process: a changed user or group must
		// still be able to send to it (0660, its owner the service's).
		uid, gid := id.uid, id.gid
		if uid < 0 {
			uid, gid = os.Geteuid(), os.Getegid()
		}
		if err := os.Lchown(r.notify.path, uid, gid); err != nil {
			return fmt.Errorf("chown notify socket: %w", err)
		}
		return nil
	}
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

// spawnStatus is the exit status systemd gives a main process that could
// not be started for err (systemd.exec(5), "Process exit codes"). The
// fork's errno does not say whether the chdir to wd or the exec failed:
// wd is looked at afterwards.
func spawnStatus(err error, wd string) int32 {
	switch {
	case errors.Is(err, ident.ErrUser):
		return 217 // USER
	case errors.Is(err, ident.ErrGroup):
		return 216 // GROUP
	}
	if wd != "" {
		if st, serr := os.Stat(wd); serr != nil || !st.IsDir() {
			return 200 // CHDIR
		}
	}
	return 203 // EXEC
}
