package process

import (
	"context"
	"encoding/json"
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
	"syscall"
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
}

// Supervisor runs the units in <stateDir>/units as child processes, the way
// systemd would: restart policies, start limits, pre-start checks, sd_notify
// watchdogs, log capture, timers and locks. It keeps a process table in
// <stateDir>/processes.json so a new agent adopts what an old one started.
type Supervisor struct {
	dir, unitDir, runDir, resetDir string
	id                             string          // the secret supervisor ID (idFile), in every child's RESIL_SUPERVISOR; "" until Run
	migrating                      bool            // Run created the ID: legacyStateID marks are still ours
	quit                           <-chan struct{} // Run's ctx.Done: stops waiting for stale processes
	procRoot                       string
	log                            *zap.Logger
	opts                           Options
	now                            func() time.Time
	started                        time.Time
	reaper                         *reaper
	logFiles                       logFiles
	outMu                          sync.Mutex

	mu    sync.Mutex
	units map[string]*unit
	order []string              // units by last process start, oldest first
	table map[string]procRecord // the process table, by unit
	// tableMu serializes saveTable: a snapshot of the table and its write
	// happen as one, so a slower writer never replaces a newer table.
	tableMu sync.Mutex

	dirty   chan struct{} // status changed: rewrite status.json
	ctl     chan chan reloadReply
	ready   chan struct{} // closed once Run has loaded and adopted
	done    chan struct{} // closed when Run returns
	running bool

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
		units: map[string]*unit{}, table: map[string]procRecord{},
		dirty: make(chan struct{}, 1), ctl: make(chan chan reloadReply), ready: make(chan struct{}), done: make(chan struct{}),
	}
	return s, nil
}

// makeDirs creates the state dir layout and the supervisor ID. New does
// not: a read-only observer (diff) must not create a state dir that does
// not exist. The state dir and run/ are 0711: nobody else may list them
// (nor read the process table, 0600), but a unit's user must reach its
// notify socket in run/.
func (s *Supervisor) makeDirs() error {
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
	s.mu.Unlock()
	return nil
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
	s.loadTable()
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

// reload reads every unit file. New units get a goroutine (adopting a
// recorded process on the first load, when marks are this supervisor's
// processes found in /proc); changed files replace the loaded spec, which a
// running process only picks up when it is next started (manually or by
// its restart policy). It returns once every new unit's goroutine has set
// the unit's first status (an adopted process is active): Ready follows
// the first load, and an Observe after it must see what runs, or the
// planner would start an adopted unit again, or prune one without stopping
// its process; nor may a later reload unload a unit before it adopted.
func (s *Supervisor) reload(ctx context.Context, wg *sync.WaitGroup, first bool, marks []marked) (bool, error) {
	ents, err := os.ReadDir(s.unitDir)
	if err != nil {
		return false, fmt.Errorf("read unit dir: %w", err)
	}
	seen := map[string]bool{}
	adopted := map[string]bool{}
	changed := false
	var errs []error
	var inits []chan struct{}
	defer func() {
		for _, c := range inits {
			<-c
		}
	}()
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !(strings.HasSuffix(name, ".service") || strings.HasSuffix(name, ".timer")) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.unitDir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		seen[name] = true
		spec, perr := ParseUnitFile(data)
		if perr == nil && spec.Unit != name {
			perr = fmt.Errorf("unit file %s describes %s", name, spec.Unit)
		}
		if perr == nil && spec.Timer != nil {
			_, perr = parseSchedules(spec.Timer.Schedule)
		}
		if perr != nil {
			errs = append(errs, fmt.Errorf("load %s: %w", name, perr))
			spec = nil
		}
		s.mu.Lock()
		u := s.units[name]
		s.mu.Unlock()
		if u != nil {
			u.mu.Lock()
			diff := string(u.file) != string(data) || (u.spec == nil) != (spec == nil)
			if diff {
				u.spec, u.file, u.hash = spec, data, fileHash(data)
				changed = true
			}
			u.mu.Unlock()
			if diff && strings.HasSuffix(name, ".timer") {
				select {
				case u.cmds <- command{op: opReload}:
				default:
				}
			}
			continue
		}
		changed = true
		u = &unit{s: s, name: name, cmds: make(chan command, 16), spec: spec, file: data, hash: fileHash(data)}
		s.mu.Lock()
		s.units[name] = u
		s.mu.Unlock()
		var adopt *procRecord
		if first {
			adopt = s.adoptable(name, spec)
			adopted[name] = adopt != nil
		}
		initialized := make(chan struct{})
		inits = append(inits, initialized)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if strings.HasSuffix(name, ".timer") {
				u.runTimer(ctx, initialized)
			} else {
				u.runService(ctx, spec, adopt, initialized)
			}
		}()
	}
	s.mu.Lock()
	for name, u := range s.units {
		if !seen[name] {
			u.mu.Lock()
			if u.spec != nil || u.file != nil {
				u.spec, u.file, u.hash = nil, nil, ""
				changed = true
			}
			u.mu.Unlock()
		}
	}
	s.mu.Unlock()
	if first {
		s.cleanupStale(adopted, marks)
	}
	return changed, errors.Join(errs...)
}

// adoptable returns the table record of name when its process still runs:
// same PID and same start time, not a zombie.
func (s *Supervisor) adoptable(name string, spec *Spec) *procRecord {
	s.mu.Lock()
	rec, ok := s.table[name]
	s.mu.Unlock()
	if !ok || spec == nil || spec.Kind != "service" {
		return nil
	}
	if rec.PID <= 0 {
		return nil // an intent whose launch does not run
	}
	st, err := readProcStat(s.procRoot, rec.PID)
	if err != nil || st.StartTime != rec.StartTime || st.State == 'Z' {
		return nil
	}
	s.mu.Lock()
	s.order = append(s.order, name)
	s.mu.Unlock()
	return &rec
}

// cleanupStale stops what is left of recorded processes that could not be
// adopted (dead main process, PID reused, unit gone) and every marked
// process (see scanMarked) that is not of an adopted launch, so no unit runs
// twice; then it removes leftover temporary files and FIFOs.
func (s *Supervisor) cleanupStale(adopted map[string]bool, marks []marked) {
	s.mu.Lock()
	var stale []procRecord
	keep, keepGroups, keepFiles := map[string]bool{}, map[int]bool{}, map[string]bool{}
	for name, rec := range s.table {
		if !adopted[name] {
			stale = append(stale, rec)
			delete(s.table, name)
			continue
		}
		keep[rec.Nonce], keepGroups[rec.PGID] = true, true
		keepFiles[rec.Stdout], keepFiles[rec.Stderr] = true, true
	}
	s.mu.Unlock()
	defer func() {
		s.stopStrays(s.quit, marks, keep, keepGroups)
		s.removeLeftovers(keepFiles)
	}()
	for _, rec := range stale {
		if rec.PID <= 0 {
			continue // an intent whose launch never ran; strays cover the rest
		}
		reapIfChildNow(rec.PID)
		for _, f := range []string{rec.Stdout, rec.Stderr} {
			if f != "" && filepath.Dir(f) == s.runDir {
				os.Remove(f)
			}
		}
		if st, err := readProcStat(s.procRoot, rec.PID); err == nil && st.State != 'Z' && st.StartTime != rec.StartTime {
			// The PID was reused, so its old group is empty: Linux does not
			// reuse a PID while a process group of that ID exists.
			continue
		}
		pids := groupMembers(s.procRoot, rec.PGID, rec.StartTime)
		var members []marked
		for _, p := range pids {
			if st, err := readProcStat(s.procRoot, p); err == nil {
				members = append(members, marked{pid: p, pgid: rec.PGID, start: st.StartTime})
			}
		}
		if len(members) == 0 {
			continue
		}
		s.log.Warn("stopping stale process group", zap.String("unit", rec.Unit), zap.Int("pgid", rec.PGID), zap.Ints("pids", pids))
		if groupHolds(s.procRoot, rec.PGID, members) {
			signalGroup(rec.PGID, syscall.SIGTERM)
		}
		if !waitGone(s.quit, 5*time.Second, func() bool { return groupHolds(s.procRoot, rec.PGID, members) }) {
			break // the agent is stopping; the next one finishes
		}
		// SIGKILL only while one of the members found is still in it: a
		// group ID reused once they are gone is someone else's.
		if groupHolds(s.procRoot, rec.PGID, members) {
			signalGroup(rec.PGID, syscall.SIGKILL)
		}
		for _, p := range pids {
			reapIfChildNow(p)
		}
	}
	s.saveTable()
}

// reapIfChildNow collects a zombie child of ours, if it is one.
func reapIfChildNow(pid int) {
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
}

// tableCopy returns the process table as loaded, before adoption and
// cleanup change it.
func (s *Supervisor) tableCopy() map[string]procRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]procRecord, len(s.table))
	for n, r := range s.table {
		out[n] = r
	}
	return out
}

// heldStops returns the units whose row, in the table as loaded, says the
// last agent was stopping them, by why (stopStop, stopRestart). Taken
// before cleanupStale drops the rows of processes that exited meanwhile:
// the stop stands (or the restart is completed) whether or not the
// process is still there to adopt.
func (s *Supervisor) heldStops() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	held := map[string]string{}
	for n, rec := range s.table {
		if rec.Stopping {
			held[n] = rec.stopReason()
		}
	}
	return held
}

// startEnabled starts every enabled unit that is not running yet, except
// one the last agent was stopping (held): that stop is finished, not
// undone; an interrupted restart is completed, enabled or not. A unit
// adopted while stopping finishes that itself (runner.adopt).
//
// It returns once every unit it started has begun starting (bounded by
// startTakenWait), so the first Observe after Ready sees those units as
// activating or active, never as inactive: a pass that prunes one of them
// plans its stop, and no start races a prune (seen as an orphan process
// after a kill -9 right after a prune's stop step).
//
// A unit whose recorded process died while no agent ran (a row that was
// neither stopping nor adopted) is started as an automatic restart, its
// count carried on from the row, as systemd would have restarted it.
func (s *Supervisor) startEnabled(held map[string]string, prev map[string]procRecord) {
	var taken []chan struct{}
	defer func() {
		deadline := time.NewTimer(startTakenWait)
		defer deadline.Stop()
		for _, c := range taken {
			select {
			case <-c:
			case <-deadline.C:
				s.log.Warn("enabled units still not starting at ready", zap.Duration("waited", startTakenWait))
				return
			}
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.units))
	for n := range s.units {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		u := s.units[n]
		if u.loaded() == nil || s.table[n].Stopping {
			continue
		}
		if why, ok := held[n]; ok && why != stopRestart {
			continue
		} else if !ok && !s.isEnabled(n) {
			continue
		}
		c := command{op: actuators.OpStart, taken: make(chan struct{})}
		if rec, ok := prev[n]; ok && rec.PID > 0 && !rec.Stopping {
			c.auto, c.nRestarts = true, rec.NRestarts
		}
		select {
		case u.cmds <- c:
			taken = append(taken, c.taken)
		default:
		}
	}
}

// startTakenWait bounds how long startEnabled waits for its starts to begin.
const startTakenWait = 10 * time.Second

func (s *Supervisor) enabledPath(name string) string {
	return filepath.Join(s.unitDir, name+".enabled")
}

func (s *Supervisor) isEnabled(name string) bool {
	_, err := os.Stat(s.enabledPath(name))
	return err == nil
}

// stopAll stops timers first (no new jobs), then services in reverse start order.
func (s *Supervisor) stopAll() {
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

// processTable is the JSON form of <stateDir>/processes.json.
type processTable struct {
	Processes []procRecord `json:"processes"`
}

func (s *Supervisor) tablePath() string { return filepath.Join(s.dir, "processes.json") }

func (s *Supervisor) loadTable() {
	b, err := os.ReadFile(s.tablePath())
	if err != nil {
		return
	}
	var t processTable
	if err := json.Unmarshal(b, &t); err != nil {
		s.log.Error("process table unreadable", zap.Error(err))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range t.Processes {
		s.table[r.Unit] = r
	}
}

// recordProc sets (rec != nil) or clears a unit's row and writes the table.
func (s *Supervisor) recordProc(name string, rec *procRecord) {
	s.mu.Lock()
	if rec != nil {
		s.table[name] = *rec
		for i, n := range s.order {
			if n == name {
				s.order = append(s.order[:i], s.order[i+1:]...)
				break
			}
		}
		s.order = append(s.order, name)
	} else {
		delete(s.table, name)
	}
	s.mu.Unlock()
	s.saveTable()
}

func (s *Supervisor) saveTable() {
	s.tableMu.Lock()
	defer s.tableMu.Unlock()
	s.mu.Lock()
	t := processTable{Processes: make([]procRecord, 0, len(s.table))}
	for _, r := range s.table {
		t.Processes = append(t.Processes, r)
	}
	s.mu.Unlock()
	sort.Slice(t.Processes, func(i, j int) bool { return t.Processes[i].Unit < t.Processes[j].Unit })
	b, _ := json.MarshalIndent(t, "", "  ")
	if err := writeFileAtomic(s.tablePath(), append(b, '\n'), 0o600); err != nil {
		s.log.Error("write process table failed", zap.Error(err))
	}
}

// recordStopping marks a unit's row (the process pid) as being stopped on
// request, and why (stopStop, stopRestart).
func (s *Supervisor) recordStopping(name string, pid int, why string) {
	s.mu.Lock()
	rec, ok := s.table[name]
	if ok && rec.PID == pid {
		rec.Stopping, rec.StopReason = true, why
		s.table[name] = rec
	}
	s.mu.Unlock()
	if ok {
		s.saveTable()
	}
}

// recordIntent writes a unit's row before its fork (rec.PID 0); recordProc
// replaces it with the started process, or clears it when the fork failed.
func (s *Supervisor) recordIntent(name string, rec procRecord) {
	s.mu.Lock()
	s.table[name] = rec
	s.mu.Unlock()
	s.saveTable()
}

// RequestReset asks the supervisor running on stateDir to clear a unit's
// failed and start-limit state, like OpResetFailed (for a CLI
// "reconciler reset NAME"). It only drops a request file; the supervisor
// picks it up within a moment (inotify). unit is a unit name ("worker.service")
// or a bare service name ("worker").
func RequestReset(stateDir, unit string) error {
	if unit == "" || strings.ContainsAny(unit, "/\x00") || strings.HasPrefix(unit, ".") {
		return fmt.Errorf("reset: bad unit name %q", unit)
	}
	if !strings.HasSuffix(unit, ".service") && !strings.HasSuffix(unit, ".timer") {
		unit += ".service"
	}
	dir := filepath.Join(stateDir, "reset")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("reset %s: %w", unit, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, unit), nil, 0o644); err != nil {
		return fmt.Errorf("reset %s: %w", unit, err)
	}
	return nil
}

// applyResets handles every pending reset request.
func (s *Supervisor) applyResets() {
	ents, err := os.ReadDir(s.resetDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		os.Remove(filepath.Join(s.resetDir, name))
		s.mu.Lock()
		u := s.units[name]
		s.mu.Unlock()
		if u == nil {
			s.log.Warn("reset requested for unknown unit", zap.String("unit", name))
			continue
		}
		s.log.Info("reset requested", zap.String("unit", name))
		select {
		case u.cmds <- command{op: actuators.OpResetFailed}:
		default:
		}
	}
}

// watchResets signals resets whenever a file lands in the reset dir
// (inotify; a 1 s poll if inotify is unavailable). The returned func stops it.
func (s *Supervisor) watchResets(wg *sync.WaitGroup, out chan<- struct{}) (stop func()) {
	kick := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err == nil {
		if _, err = unix.InotifyAddWatch(fd, s.resetDir, unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		s.log.Warn("inotify unavailable, polling reset requests", zap.Error(err))
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
					kick()
				}
			}
		}()
		return func() { close(quit) }
	}
	f := os.NewFile(uintptr(fd), "inotify")
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			kick()
		}
	}()
	return func() { f.Close() }
}
