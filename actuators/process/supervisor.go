package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

// Options configure a Supervisor.
type Options struct {
	// StopOnExit (PID 1 / container mode): when Run's ctx is done, stop every
	// service in reverse start order (SIGTERM, SIGKILL after its stop timeout)
	// and return once all are down. Without it, processes keep running for
	// the next agent to adopt.
	StopOnExit bool
	// Wake is called, without blocking, whenever a unit changes state (start,
	// exit, restart, failure, timer elapse), so the reconcile loop re-plans.
	Wake func()
	// Event, when set, receives what the supervisor decides itself and no
	// pass plans: a persistent timer's run missed while no agent ran,
	// caught up (TimerCatchUp) or skipped over maxLateness (TimerMissed)
	// when the timer starts at Run. It must not block.
	Event func(reason, object, unit string, warning bool, msg string)
	// Output receives the "NAME: line" output of units without log files;
	// default os.Stdout.
	Output io.Writer
	// Subreaper makes the agent a child subreaper (PR_SET_CHILD_SUBREAPER)
	// and reaps orphans; always on when the agent is PID 1. In this mode
	// nothing else in the agent may wait for children (exec.Cmd.Wait).
	Subreaper bool
	// Now is the clock (default time.Now).
	Now func() time.Time
	// ProcRoot is where /proc is (default "/proc"), for tests.
	ProcRoot string
	// OneShot (`apply`): Run starts the enabled timers, not the services;
	// a service that is not running is started by the pass's own step, so
	// `diff` and `apply` plan the same start (the agent, `run`, starts
	// every enabled unit at once, as systemd does at boot).
	OneShot bool
	// HoldUntilRelease: the starts the supervisor decides itself from the
	// unit files it finds at Run (enabled units, a restart owed by a
	// process that died while no agent ran or by an interrupted restart,
	// a timer's runs, a reset's start) wait for Release, which the agent
	// calls once its first pass has loaded the manifests and written,
	// reloaded, stopped or pruned what changed: what starts is what the
	// manifests say, not the unit files an earlier agent left. Until then
	// such a unit reads as activating (a timer as active), so the first
	// pass neither starts it twice nor takes it for stopped. A pass's own
	// steps are never held. Without it, Release is implied.
	HoldUntilRelease bool
}

// Supervisor runs the units in <stateDir>/units as child processes, the way
// systemd would: restart policies, start limits, pre-start checks, sd_notify
// watchdogs, log capture, timers and locks. It keeps a process table in
// <stateDir>/processes.json so a new agent adopts what an old one started.
type Supervisor struct {
	dir, unitDir, runDir, resetDir string
	id                             string          // the secret supervisor ID (idFile), in every child's RESIL_SUPERVISOR; "" until Run
	migrating                      bool            // Run created the ID: legacyStateID marks are still ours
	dirsMade                       bool            // makeDirs succeeded (under mu); forgetDirs clears it
	quit                           <-chan struct{} // Run's ctx.Done: stops waiting for stale processes
	procRoot                       string
	log                            *zap.Logger
	opts                           Options
	now                            func() time.Time
	started                        time.Time
	// boot is when this boot's first agent started (Run, or the process
	// table of an agent of the same boot: table.go): what a timer's onBoot
	// counts from, so an agent restart (kill -9, upgrade) does not fire a
	// once-per-boot job again.
	boot     time.Time
	reaper   *reaper
	logFiles logFiles
	outMu    sync.Mutex

	mu    sync.Mutex
	units map[string]*unit
	order []string              // units by last process start, oldest first
	table map[string]procRecord // the process table, by unit
	// bootID is this boot's /proc/sys/kernel/random/boot_id ("" when it
	// cannot be read), written into the table. restartedAgent: the table
	// loaded at Run was written by an agent of this boot that was not
	// stopping every service on its way out: its idle records stand (an
	// agent restart is not a boot). shuttingDown (under mu): stopAll has
	// begun, and the table says so (the next agent starts enabled
	// services as at boot).
	bootID         string
	restartedAgent bool
	shuttingDown   bool
	// idle (under mu) are the services left stopped by a stop request or
	// failed, with the unit file they were loaded from, kept in the table
	// (table.go): after an agent restart of the same boot such a service
	// is not started at Run, and a failed one is failed again (no start
	// until its manifest changes or reset-failed), as systemd keeps them
	// across a daemon re-exec, while its unit file is the same.
	idle map[string]idleEntry
	// tableMu serializes saveTable: a snapshot of the table and its write
	// happen as one, so a slower writer never replaces a newer table.
	tableMu sync.Mutex
	// writeMu is held shared by every atomic write into the state dir
	// (writeFile) and exclusively by removeLeftovers: the temporary file
	// of a write under way is not a killed agent's leftover (an adopted
	// process's first table write lost its temporary file to the start's
	// cleanup, and the table stayed old until the next change).
	writeMu sync.RWMutex
	// tableGen counts saveTable's calls (under mu); savedGen is the last
	// one a completed write holds (under tableMu): its group commit.
	tableGen, savedGen uint64
	// rows caches each row's JSON for saveTable (under tableMu).
	rows rowCache
	// tableWrites counts the table's completed writes, ownIntents the
	// intents a start wrote for itself, before its fork (tests).
	tableWrites, ownIntents atomic.Uint64
	// pre holds the launch IDs of the intents a batch of starts wrote
	// (preIntents), by unit, until each runner takes its own (under mu).
	pre map[string]string
	// tableDirty (under mu): the last table write failed, so the file may
	// lack rows held in memory (a restart's reservation is used only from
	// the file).
	tableDirty bool

	dirty   chan struct{} // status changed: rewrite status.json
	ctl     chan chan reloadReply
	ready   chan struct{} // closed once Run has loaded and adopted
	done    chan struct{} // closed when Run returns
	running bool
	// released is closed by Release (at New without
	// Options.HoldUntilRelease): starts the supervisor decides itself run.
	released    chan struct{}
	releaseOnce sync.Once

	// beforeFork, when set (tests), runs after a main process's intent row
	// is written and before its fork.
	beforeFork func(unit string)
}

type reloadReply struct {
	changed bool
	err     error
}

// New returns a supervisor for stateDir. It starts no goroutines and
// creates nothing; Run and the Applier's writes create the state dir.
func New(stateDir string, log *zap.Logger, opts Options) (*Supervisor, error) {
	if stateDir == "" {
		return nil, errors.New("process supervisor: empty state dir")
	}
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("process supervisor: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Output == nil {
		opts.Output = os.Stdout
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	id, _ := readStateID(dir) // created by Run; a read-only observer creates nothing
	s := &Supervisor{
		dir: dir, id: id, unitDir: filepath.Join(dir, "units"), runDir: filepath.Join(dir, "run"), resetDir: filepath.Join(dir, "reset"),
		procRoot: opts.ProcRoot, log: log.Named("process"), opts: opts, now: opts.Now,
		units: map[string]*unit{}, table: map[string]procRecord{}, idle: map[string]idleEntry{},
		dirty: make(chan struct{}, 1), ctl: make(chan chan reloadReply), ready: make(chan struct{}), done: make(chan struct{}),
		released: make(chan struct{}),
	}
	if !opts.HoldUntilRelease {
		close(s.released)
	}
	s.logFiles.log = s.log
	return s, nil
}

// makeDirs creates the state dir layout and the supervisor ID. New does
// not: a read-only observer (diff) must not create a state dir that does
// not exist. The state dir and run/ are 0711: nobody else may list them
// (nor read the process table, 0600), but a unit's user must reach its
// notify socket in run/.
//
// Once they were made it returns at once (dirsMade): a cold start of 100
// units called it for every unit file and enablement marker, and its
// chmods on the state dir queued the 16 writers on the directory's lock.
// A failed write in the state dir (forgetDirs) makes the next call check
// again.
func (s *Supervisor) makeDirs() error {
	s.mu.Lock()
	made := s.dirsMade
	s.mu.Unlock()
	if made {
		return nil
	}
	for _, d := range []string{s.unitDir, s.runDir, s.resetDir, filepath.Join(s.dir, "timers")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("process supervisor: %w", err)
		}
	}
	for _, d := range []string{s.dir, s.runDir} {
		if err := os.Chmod(d, 0o711); err != nil {
			return fmt.Errorf("process supervisor: %w", err)
		}
	}
	if err := os.Chmod(s.tablePath(), 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("process supervisor: %w", err)
	}
	_, terr := os.Stat(s.tablePath())
	id, created, err := ensureStateID(s.dir)
	if err != nil {
		return fmt.Errorf("process supervisor: supervisor id: %w", err)
	}
	s.mu.Lock()
	s.id, s.migrating = id, created && terr == nil // an older agent's state dir
	s.dirsMade = true
	s.mu.Unlock()
	return nil
}

// forgetDirs makes the next makeDirs check the state dirs again (a write
// in them failed: removed behind the agent's back?).
func (s *Supervisor) forgetDirs() {
	s.mu.Lock()
	s.dirsMade = false
	s.mu.Unlock()
}

// UnitDir is where unit files live (<stateDir>/units).
func (s *Supervisor) UnitDir() string { return s.unitDir }

// Run loads the units, adopts the processes a previous agent left running,
// starts the enabled units, and then serves reloads, requests and resets
// until ctx is done. It returns only after every goroutine it started has
// exited. See Options.StopOnExit for what happens to the processes.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("process supervisor: Run called twice")
	}
	s.running = true
	s.mu.Unlock()
	defer close(s.done)
	if err := s.makeDirs(); err != nil {
		return err
	}
	if n := closeInheritedOnExec(); n > 0 {
		s.log.Info("descriptors inherited by the agent will not reach its services", zap.Int("descriptors", n))
	}
	s.started = s.now()

	orphans := s.opts.Subreaper || os.Getpid() == 1
	if orphans {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("process supervisor: set child subreaper: %w", err)
		}
	}
	s.reaper = newReaper(s.log, orphans)
	sigs := notifySIGCHLD()
	defer signal.Stop(sigs)

	// Units outlive ctx so StopOnExit can still stop them in order.
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		s.logFiles.close()
		s.writeSnapshot()
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.writeSnapshots(runCtx)
	}()
	go func() {
		defer wg.Done()
		s.reaper.run(runCtx, sigs)
	}()

	s.quit = ctx.Done()
	s.bootID = readBootID()
	s.boot = s.started
	s.loadTable() // the first reload's cleanupStale writes the table, boot fields included, before any timer starts
	held := s.heldStops()
	prev := s.tableCopy()
	marks := s.scan()
	s.mu.Lock()
	resolveIntents(s.procRoot, s.table, marks)
	s.mu.Unlock()
	if _, err := s.reload(runCtx, &wg, true, marks); err != nil {
		s.log.Error("load units failed", zap.Error(err))
	}
	s.startEnabled(held, prev)

	resets := make(chan struct{}, 1)
	stopWatch := s.watchResets(&wg, resets)
	defer stopWatch()
	s.applyResets()
	close(s.ready)
	s.log.Info("supervisor running", zap.String("stateDir", s.dir), zap.Int("units", len(s.units)))

	for {
		select {
		case <-ctx.Done():
			if s.opts.StopOnExit {
				s.stopAll()
			}
			s.log.Info("supervisor stopped", zap.Bool("stoppedUnits", s.opts.StopOnExit))
			return nil
		case reply := <-s.ctl:
			changed, err := s.reload(runCtx, &wg, false, nil)
			reply <- reloadReply{changed, err}
		case <-resets:
			s.applyResets()
		}
	}
}

func (s *Supervisor) wake() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
	if s.opts.Wake != nil {
		s.opts.Wake()
	}
}

// stopAll stops timers first (no new jobs), then services in reverse start order.
func (s *Supervisor) stopAll() {
	// First say so in the table: the next agent, even if this one is
	// killed halfway, starts the enabled services as at boot.
	s.mu.Lock()
	s.shuttingDown = true
	s.mu.Unlock()
	s.saveTable()
	s.mu.Lock()
	order := append([]string(nil), s.order...)
	var timers, others []string
	inOrder := map[string]bool{}
	for _, n := range order {
		inOrder[n] = true
	}
	for n := range s.units {
		if strings.HasSuffix(n, ".timer") {
			timers = append(timers, n)
		} else if !inOrder[n] {
			others = append(others, n)
		}
	}
	s.mu.Unlock()
	sort.Strings(others)
	list := timers
	for i := len(order) - 1; i >= 0; i-- {
		list = append(list, order[i])
	}
	list = append(list, others...)
	for _, n := range list {
		if _, err := s.command(context.Background(), n, actuators.OpStop); err != nil {
			s.log.Error("stop on exit failed", zap.String("unit", n), zap.Error(err))
		}
	}
}

// Release lets the starts the supervisor decides itself run (see
// Options.HoldUntilRelease): the agent calls it once its first pass is
// done, whatever its result. Only the first call acts; it does not block.
func (s *Supervisor) Release() {
	s.releaseOnce.Do(func() {
		select {
		case <-s.released: // not holding
		default:
			close(s.released)
			s.log.Info("held starts released")
		}
	})
}

// isReleased reports whether Release was called (or nothing is held).
func (s *Supervisor) isReleased() bool {
	select {
	case <-s.released:
		return true
	default:
		return false
	}
}

// trigger asks a unit to start without waiting (a timer elapsed).
func (s *Supervisor) trigger(name string) bool {
	s.mu.Lock()
	u := s.units[name]
	s.mu.Unlock()
	if u == nil || u.loaded() == nil {
		return false
	}
	select {
	case u.cmds <- command{op: opTrigger}:
	default:
	}
	return true
}

var errNotRunning = errors.New("process supervisor is not running")

// live reports whether Run has loaded the units and not yet returned.
// Ready is closed once Run has loaded the units and adopted the processes a
// previous agent left running; from then on Observe reads live state.
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

// Done is closed when Run has returned.
func (s *Supervisor) Done() <-chan struct{} { return s.done }

func (s *Supervisor) live() bool {
	select {
	case <-s.done:
		return false
	default:
	}
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

func (s *Supervisor) waitReady(ctx context.Context) error {
	select {
	case <-s.ready:
	case <-s.done:
		return errNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-s.done:
		return errNotRunning
	default:
		return nil
	}
}

// command sends op to a unit's goroutine and waits for its answer.
func (s *Supervisor) command(ctx context.Context, name string, op actuators.Op) (actuators.Result, error) {
	if err := s.waitReady(ctx); err != nil {
		return actuators.Unchanged, err
	}
	s.mu.Lock()
	u := s.units[name]
	s.mu.Unlock()
	if u == nil || (u.loaded() == nil && op != actuators.OpStop) {
		if op == actuators.OpStop || op == actuators.OpResetFailed {
			return actuators.Unchanged, nil
		}
		return actuators.Unchanged, fmt.Errorf("unit %s not loaded", name)
	}
	reply := make(chan opReply, 1)
	select {
	case u.cmds <- command{op: op, reply: reply}:
	case <-ctx.Done():
		return actuators.Unchanged, ctx.Err()
	case <-s.done:
		return actuators.Unchanged, errNotRunning
	}
	select {
	case r := <-reply:
		return r.res, r.err
	case <-ctx.Done():
		return actuators.Unchanged, ctx.Err()
	case <-s.done:
		return actuators.Unchanged, errNotRunning
	}
}

// daemonReload makes Run re-read the unit files.
func (s *Supervisor) daemonReload(ctx context.Context) (bool, error) {
	if err := s.waitReady(ctx); err != nil {
		return false, err
	}
	reply := make(chan reloadReply, 1)
	select {
	case s.ctl <- reply:
	case <-ctx.Done():
		return false, ctx.Err()
	case <-s.done:
		return false, errNotRunning
	}
	select {
	case r := <-reply:
		return r.changed, r.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// writers returns the stdout and stderr destinations of a unit. Without a
// stderr file, stderr goes where stdout goes (systemd's StandardError=inherit).
func (s *Supervisor) writers(name string, logs *desired.Logs) (lineWriter, lineWriter) {
	prefix := strings.TrimSuffix(strings.TrimSuffix(name, ".service"), ".timer")
	var out lineWriter = prefixWriter{mu: &s.outMu, out: s.opts.Output, pfx: []byte(prefix + ": ")}
	errW := out
	if logs != nil && logs.Stdout != "" {
		if w, err := s.logFiles.get(logs.Stdout, logs); err == nil {
			out, errW = w, w
		} else {
			s.log.Error("log file unusable", zap.String("unit", name), zap.Error(err))
		}
	}
	if logs != nil && logs.Stderr != "" {
		if w, err := s.logFiles.get(logs.Stderr, logs); err == nil {
			errW = w
		} else {
			s.log.Error("log file unusable", zap.String("unit", name), zap.Error(err))
		}
	}
	return out, errW
}
