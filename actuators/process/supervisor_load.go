package process

// Loading unit files and adopting what a previous agent left running:
// reload, stale processes, held stops, enabled units started at Run.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"resil.dev/resil/actuators"
)

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
			if diff {
				// A timer reschedules; a service applies what needs no
				// restart (runner.reloadSpec).
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
	var gone []string
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
	for name := range s.idle {
		if !seen[name] {
			gone = append(gone, name) // its file is gone: a later one starts afresh
		}
	}
	s.mu.Unlock()
	for _, name := range gone {
		s.forgetIdle(name)
	}
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
// adopted while stopping finishes that itself (runner.adopt). A service
// the last agent of this boot left stopped on request or failed
// (Supervisor.idle), from the unit file loaded now, is not started either;
// one caught between a stop and its start, or in its lock or checks, is.
// Timers hold no record: an enabled one is always started.
//
// It returns once every unit it started has begun starting (bounded by
// startTakenWait), so the first Observe after Ready sees those units as
// activating or active, never as inactive: a pass that prunes one of them
// plans its stop, and no start races a prune (seen as an orphan process
// after a kill -9 right after a prune's stop step).
//
// A unit whose recorded process died while no agent ran (a row that was
// neither stopping nor adopted) is started as an automatic restart, its
// count carried on from the row, as systemd would have restarted it:
// after its restart delay.
//
// With Options.HoldUntilRelease these starts (a timer's runs too) wait
// for Release, after the first pass (runner.queue): they run the unit
// files that pass left, or nothing if it stopped or pruned the unit. The
// row of an owed restart (an automatic one, or one an interrupted restart
// owes) is put back into the table meanwhile, so an agent killed before
// Release leaves the next one the same restart to decide.
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
	// died are the services set failed below, once s.mu is released
	// (update notes them in the process table, under s.mu).
	var died []*unit
	restored := false
	defer func() {
		if restored {
			s.saveTable()
		}
		for _, u := range died {
			u.update(func(st *status) {
				st.ActiveState, st.SubState, st.Result, st.MainPID = "failed", "failed", ResultUnknown, 0
			})
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
		if u.loaded().Stopped {
			continue // state: stopped
		}
		if rec, ok := prev[n]; ok && diedUnsupervised(rec, u.loaded()) && u.status().MainPID == 0 && !procAlive(s.procRoot, rec) {
			// Its process died while no agent ran, how is unknown: its
			// policy never restarts it. Failed, as the supervisor leaves a
			// never-restarted unit whose process ended in failure.
			s.log.Info("process died while no agent ran; restart policy never", zap.String("unit", n), zap.Int("pid", rec.PID))
			died = append(died, u)
			continue
		}
		if s.opts.OneShot && u.loaded().Timer == nil {
			continue // apply: services are left to the pass's steps
		}
		if _, had := prev[n]; !had && u.loaded().Timer == nil {
			_, hash := u.current()
			if e, ok := s.idle[n]; ok && e.Hash == hash { // s.mu is held
				// Stopped on request or failed when the last agent of
				// this boot died, from this unit file: an agent restart
				// is not a boot.
				continue
			}
		}
		c := command{op: actuators.OpStart, taken: make(chan struct{}), atRun: true}
		if rec, ok := prev[n]; ok && rec.PID > 0 && !rec.Stopping {
			c.auto, c.nRestarts = true, rec.NRestarts
		}
		c.owed = held[n] == stopRestart
		select {
		case u.cmds <- c:
			taken = append(taken, c.taken)
			if rec, ok := prev[n]; ok && (c.auto || c.owed) && !s.isReleased() {
				if _, has := s.table[n]; !has {
					s.table[n] = rec
					restored = true
				}
			}
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
