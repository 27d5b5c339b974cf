package process

// Reset requests: files in <stateDir>/reset/ that clear a unit's failed
// and start-limit state (RequestReset, the `reset` command).

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"resil.dev/resil/actuators"
)

// RequestReset asks the supervisor running on stateDir to clear a unit's
// failed and start-limit state, like OpResetFailed (for a CLI
// "reconciler reset NAME"), and with start to start it in the same
// command (systemctl reset-failed + start): it goes from failed straight
// to activating, so no pass sees it stopped in between (which drift:
// report would leave stopped). It only drops a request file; the
// supervisor picks it up within a moment (inotify), or, with none
// running, the next one at its start. unit is a unit name
// ("worker.service") or a bare service name ("worker").
func RequestReset(stateDir, unit string, start bool) error {
	if unit == "" || strings.ContainsAny(unit, "/\x00") || strings.HasPrefix(unit, ".") {
		return fmt.Errorf("reset: bad unit name %q", unit)
	}
	if !strings.HasSuffix(unit, ".service") && !strings.HasSuffix(unit, ".timer") {
		unit += ".service"
	}
	// A unit the supervisor does not know would leave a request that
	// nothing takes (and `reset` would say it reset it).
	if _, err := os.Stat(filepath.Join(stateDir, "units", unit)); err != nil {
		if os.IsNotExist(err) {
			return fmt.Errorf("no unit %s in %s", unit, filepath.Join(stateDir, "units"))
		}
		return fmt.Errorf("reset %s: %w", unit, err)
	}
	dir := filepath.Join(stateDir, "reset")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("reset %s: %w", unit, err)
	}
	var body []byte
	if start {
		body = []byte(resetStart + "\n")
	}
	if err := writeFileAtomic(filepath.Join(dir, unit), body, 0o644); err != nil {
		return fmt.Errorf("reset %s: %w", unit, err)
	}
	return nil
}

// resetStart is the body of a request that also starts the unit.
const resetStart = "start"

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
		p := filepath.Join(s.resetDir, name)
		// Written by rename: what is there is whole.
		body, _ := os.ReadFile(p)
		start := strings.TrimSpace(string(body)) == resetStart
		os.Remove(p)
		s.mu.Lock()
		u := s.units[name]
		s.mu.Unlock()
		if u == nil {
			s.log.Warn("reset requested for unknown unit", zap.String("unit", name))
			continue
		}
		s.log.Info("reset requested", zap.String("unit", name), zap.Bool("start", start))
		// Taken before the next request (and, at Run, before Ready): the
		// first pass sees the unit reset, or activating, not still failed
		// or stopped.
		taken := make(chan struct{})
		select {
		case u.cmds <- command{op: actuators.OpResetFailed, thenStart: start, taken: taken}:
			select {
			case <-taken:
			case <-s.quit:
			}
		case <-s.quit:
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
		return everySecond(wg, func() bool { kick(); return false })
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
