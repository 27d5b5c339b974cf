package systemd

import (
	"strings"
	"time"
)

// The agent's own changes to unit files and to systemd's view of them,
// told apart from an operator's (one pass per edit, issue 12).
//
// Subscribe wakes the loop on two more kinds of hints than unit state
// changes (unitwatch.go): the manager's UnitFilesChanged and
// Reloading(false) signals, and inotify events of the unit directory.
// The agent causes both itself on every edit (it writes unit files,
// enables, disables and reloads), so the Applier brackets each such
// operation (OwnFiles) and ownFiles decides, with no I/O and an injected
// clock, which hints were its own:
//
//	         begin (n++)             done (n--)
//	idle ──────────────────▶ open ──────────────────▶ idle (n = 0)
//
//	signal, idle:   a credit left by a done takes it; else wake
//	signal, open:   held; a done that sent that signal accounts for one
//	                (none held: it leaves a credit, ownSignalWait)
//	last done:      a signal still held wakes
//	disk check:     deferred while open; own entries as done left them
//	                do not wake, any other difference does
//
// Signals are counted: an operation tells whether systemd sent its signal
// (a reload that succeeded, an enable or disable with a symlink made or
// removed). A signal that arrives while an operation is open is held
// until it closes; the operation's own signal then accounts for one held
// signal, or, not yet arrived, leaves a credit for the next one (systemd
// sends it before its reply, but Subscribe may read it later), kept for
// ownSignalWait. A held signal no operation accounts for wakes once none
// is open: an operator's `systemctl daemon-reload` or `disable` during
// the agent's pass costs one more pass, never a missed change. A credit
// can absorb a foreign signal only when the agent's own signal is lost
// (then a change under the unit directory is still caught by the disk
// check; elsewhere, by the resync).
//
// Disk checks are level-triggered: the check compares the unit
// directory's entries (diskSnapshot: stamps of files, targets of links)
// with those of the last check and wakes on a difference the agent's own
// operations since then do not explain. An operation's change explains a
// path only while the path is as the operation left it (done records its
// stamps), so an operator's edit of the same file after the agent's write
// still wakes. A check that overlaps an operation is dropped and made
// again once none is open.
type ownFiles struct {
	// open: operations begun and not done, with the earliest begin;
	// gen moves at every begin (a check that saw it move is dropped).
	open  int
	since time.Time
	gen   uint64
	// held: signals (by kind) that arrived while an operation was open
	// and that no operation accounted for yet; credits: signals an
	// operation sent that have not arrived, with their deadlines.
	held    map[string]int
	credits map[string][]time.Time
	// paths: the entries (relative to the unit directory) the agent
	// changed since the last check, with their value (diskSnapshot's)
	// as it left them ("" absent); prefixes: directories it changed as a
	// whole (a unit's drop-in directory when it removed the unit), every
	// entry below absent unless paths says otherwise.
	paths    map[string]string
	prefixes []string
	// wake: a held signal was left over when the last operation closed.
	wake bool
}

// Signal kinds the agent's operations send (the manager's signals).
const (
	sigUnitFilesChanged = "UnitFilesChanged"
	sigReloaded         = "Reloading" // Reloading(false): a reload finished
)

// ownSignalWait is how long an operation's signal may take to reach
// Subscribe after the operation returned (a variable for tests); past it
// the credit is dropped.
var ownSignalWait = 5 * time.Second

// begin records an operation begun at now.
func (f *ownFiles) begin(now time.Time) {
	if f.open == 0 {
		f.since = now
	}
	f.open++
	f.gen++
}

// done records an operation's end: its signal and the values of the
// entries it changed (values: diskSnapshot's keys and values, "" for an
// entry it left absent; prefixes as in ownFiles.prefixes).
func (f *ownFiles) done(now time.Time, signal string, values map[string]string, prefixes []string) {
	if f.open > 0 {
		f.open--
	}
	f.expire(now)
	if signal != "" {
		if f.held[signal] > 0 {
			f.held[signal]--
		} else {
			if f.credits == nil {
				f.credits = map[string][]time.Time{}
			}
			f.credits[signal] = append(f.credits[signal], now.Add(ownSignalWait))
		}
	}
	if len(values) > 0 && f.paths == nil {
		f.paths = map[string]string{}
	}
	for k, v := range values {
		f.paths[k] = v
	}
	f.prefixes = append(f.prefixes, prefixes...)
	if f.open == 0 {
		for k, n := range f.held {
			if n > 0 {
				f.wake = true
			}
			delete(f.held, k)
		}
	}
}

// signal decides about a manager signal of kind arriving at now: true
// wakes now (no operation of the agent's accounts for it); false is the
// agent's own or held until the open operations are done.
func (f *ownFiles) signal(kind string, now time.Time) bool {
	f.expire(now)
	if c := f.credits[kind]; len(c) > 0 {
		f.credits[kind] = c[1:]
		return false
	}
	if f.open > 0 {
		if f.held == nil {
			f.held = map[string]int{}
		}
		f.held[kind]++
		return false
	}
	return true
}

// expire drops the credits past their deadline.
func (f *ownFiles) expire(now time.Time) {
	for k, c := range f.credits {
		for len(c) > 0 && !now.Before(c[0]) {
			c = c[1:]
		}
		f.credits[k] = c
	}
}

// takeWake reports (once) whether a held signal was left over.
func (f *ownFiles) takeWake() bool {
	w := f.wake
	f.wake = false
	return w
}

// busy reports whether a disk check must wait: an operation is open, for
// less than maxOpen (an operation that never closes does not hold checks
// back for ever).
func (f *ownFiles) busy(now time.Time, maxOpen time.Duration) bool {
	return f.open > 0 && now.Sub(f.since) < maxOpen
}

// explain compares a disk check's snapshot cur with the last one and
// returns the keys that changed and that no operation of the agent's
// since the last check explains. It forgets those operations' records:
// the caller keeps cur as the next check's baseline.
func (f *ownFiles) explain(last, cur map[string]string) []string {
	var out []string
	check := func(k string) {
		v := cur[k]
		if last[k] == v {
			return
		}
		if own, ok := f.paths[k]; ok {
			if own == v {
				return
			}
		} else if v == "" && f.underPrefix(k) {
			return
		}
		out = append(out, k)
	}
	for k := range cur {
		check(k)
	}
	for k := range last {
		if _, ok := cur[k]; !ok {
			check(k)
		}
	}
	f.paths, f.prefixes = nil, nil
	return out
}

func (f *ownFiles) underPrefix(k string) bool {
	for _, p := range f.prefixes {
		if strings.HasPrefix(k, p+"/") {
			return true
		}
	}
	return false
}
