package systemd

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/internal/sdbus"
)

// Watcher is what Subscribe needs beyond Client: systemd's unit
// property-change signals. *sdbus.Conn implements it.
type Watcher interface {
	// WatchUnitSignals delivers unit PropertiesChanged signals to ch until
	// stop is called; see sdbus.Conn.WatchUnitSignals.
	WatchUnitSignals(ctx context.Context, ch chan<- *godbus.Signal) (stop func(), err error)
}

var _ Watcher = (*sdbus.Conn)(nil)

// Errors of Subscribe.
var (
	// ErrNoSignals: the Client given to New does not implement Watcher.
	ErrNoSignals = errors.New("systemd: connection cannot watch unit signals")
	// ErrDisconnected: the connection closed under Subscribe; re-dial.
	ErrDisconnected = errors.New("systemd: connection closed")
	// ErrSubscribed: another Subscribe of the same Observer is running.
	ErrSubscribed = errors.New("systemd: already subscribed")
)

const (
	unitIface    = "org.freedesktop.systemd1.Unit"
	serviceIface = "org.freedesktop.systemd1.Service"
	managerIface = "org.freedesktop.systemd1.Manager"
)

// Subscribe calls wake whenever a managed unit (one the last Observe
// returned) changes ActiveState, SubState or MainPID, and whenever the
// unit files change out of band (unitwatch.go: an entry of the unit
// directory, its dependency or drop-in directories, or the manager's
// UnitFilesChanged or Reloading(false) signal), until ctx is done. It
// runs in the caller's goroutine and starts none of its own (godbus
// delivers the signals; the inotify watcher's reader goroutine ends
// before Subscribe returns), so when it returns nothing of it is left
// running.
//
// Signals are hints: systemd sends every change twice (job queue and
// removal) and may send unchanged values, so Subscribe compares with the
// last value it or Observe saw and wakes only on a difference. A unit first
// seen in a signal, before any Observe, is not managed and never wakes.
// The loop re-reads state with Observe; nothing here is state.
//
// The agent's own jobs (JobQueued) do not wake: their signals are recorded
// until the unit settles where the agent left it. Nor do its own writes,
// enables, disables and reloads (OwnFiles); an operator's change made
// meanwhile still wakes, once they are done (ownfiles.go).
//
// wake is called from Subscribe's goroutine and must not block: send on a
// channel buffered to 1 with select/default.
//
// D-Bus cost: on a bus, AddMatch and Manager.Subscribe at start and their
// undoing at the end (counted by sdbus.Conn.Wire, not Observer.Calls); nothing
// while idle. Disk: one inotify watch per dependency and drop-in
// directory; a read of the unit directory's entries (no file contents)
// per burst of its events.
//
// Outcomes:
//   - nil: ctx is done.
//   - ErrNoSignals, ErrSubscribed, a D-Bus error, or an inotify error
//     (the unit directory exists but cannot be watched): the watch did not
//     start.
//   - ErrDisconnected: the connection (or the inotify watch) closed;
//     re-dial, then Subscribe again.
func (o *Observer) Subscribe(ctx context.Context, wake func()) error {
	w, ok := o.c.(Watcher)
	if !ok {
		return ErrNoSignals
	}
	if !o.subscribing.CompareAndSwap(false, true) {
		return ErrSubscribed
	}
	defer o.subscribing.Store(false)

	ch := make(chan *godbus.Signal, 256)
	stop, err := w.WatchUnitSignals(ctx, ch)
	if err != nil {
		return err
	}
	defer stop()
	queued := func() int { return len(ch) }
	o.queued.Store(&queued)
	defer o.queued.Store(nil)
	o.cacheStart()
	defer o.cacheStop()
	disk, err := o.startDiskWatch()
	if err != nil {
		return err
	}
	defer disk.close()
	// The deadlines of the agent's own jobs (see JobQueued).
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	rearm := func() {
		expired, next := o.expireOwnJobs(o.cfg.now())
		if expired {
			wake()
		}
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(max(next.Sub(o.cfg.now()), time.Millisecond))
		}
	}
	rearm()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-o.ownJobsKick:
			rearm()
			o.mu.Lock()
			held := o.own.takeWake()
			o.mu.Unlock()
			if held {
				disk.signalled() // an operator's signal during the agent's operation
			}
			if o.diskCheck(disk) {
				wake()
			}
		case <-timer.C:
			rearm()
		case s, ok := <-ch:
			if !ok {
				return ErrDisconnected
			}
			if o.changed(s) {
				if isManagerSignal(s) {
					// Woken with the disk check the same command's
					// files cause: one wake, diskGather later.
					disk.signalled()
				} else {
					wake()
				}
			}
		case ev, ok := <-disk.events():
			if !ok {
				return ErrDisconnected
			}
			o.changes.Add(1)
			disk.event(ev)
		case err, ok := <-disk.errors():
			if !ok {
				return ErrDisconnected
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				disk.pending = true // events lost: check everything
				disk.timer.Reset(diskGather)
			}
		case <-disk.timer.C:
			if o.diskCheck(disk) {
				wake()
			}
		}
	}
}

// changed records what a signal says about a managed unit and reports
// whether that differs from what was last seen.
func (o *Observer) changed(s *godbus.Signal) bool {
	o.changes.Add(1)
	if s != nil {
		o.mu.Lock()
		o.runSignal(s)
		o.cacheSignal(s)
		o.mu.Unlock()
	}
	if s != nil && strings.HasPrefix(s.Name, managerIface+".") {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.managerSignal(s)
	}
	if s == nil || s.Name != sdbus.PropertiesChanged || len(s.Body) < 2 {
		return false
	}
	name, ok := sdbus.UnitNameFromPath(s.Path)
	if !ok {
		return false
	}
	iface, _ := s.Body[0].(string)
	props, _ := s.Body[1].(map[string]godbus.Variant)
	if iface != unitIface && iface != serviceIface {
		return false
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	h, managed := o.hints[name]
	if !managed {
		return false
	}
	n := h
	if iface == unitIface {
		if v, ok := props["ActiveState"].Value().(string); ok {
			n.active = v
		}
		if v, ok := props["SubState"].Value().(string); ok {
			n.sub = v
		}
	} else if v, ok := props["MainPID"].Value().(uint32); ok {
		n.mainPID = v
	}
	o.hints[name] = n
	if j := o.ownJobs[name]; j != nil {
		o.ownJobSignal(name, j, iface, props)
		return false
	}
	return n != h
}
