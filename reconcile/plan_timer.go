package reconcile

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

func (p *planner) timer(o *desired.Object) {
	t := o.Timer
	for _, f := range p.in.Files[o.ID()] {
		if !p.journaled(f.Name) { // the common case: no record
			continue
		}
		if u := p.unit(f.Name); strings.HasSuffix(f.Name, ".timer") && t.IsEnabled() && (u == nil || !u.Active()) {
			p.startsOwed = append(p.startsOwed, f.Name)
		}
	}
	var timerFile *desired.UnitFile
	var written, deleted bool
	var change UnitChange
	for i, f := range p.in.Files[o.ID()] {
		fs := p.syncFile(o, f)
		if fs.blocked {
			return
		}
		if strings.HasSuffix(f.Name, ".timer") {
			timerFile = &p.in.Files[o.ID()][i]
			written, change, deleted = fs.written, fs.change, fs.deleted
		}
	}
	if timerFile == nil {
		return
	}
	name := timerFile.Name
	u := p.unit(name)
	isNew := (u == nil || u.File == nil) && !deleted
	fs := fileState{written: written, isNew: isNew, deleted: deleted}
	p.enable(o, name, t.IsEnabled() && !p.static(timerFile.Data), fs, u, timerFile.Data)
	// The job is the timer's business: an inactive job between runs is not
	// drift; a failed last run is a finding.
	job := t.TriggeredService(o.Metadata.Name)
	if ju := p.unit(job); ju != nil && ju.ActiveState == "failed" {
		// One event onset per failed run: the run is named by its exit
		// time (the occurrence), so every pass that sees the same failed
		// run keeps it one occurrence, and the event log counts the runs
		// in one row (count, last seen) instead of a row per run.
		_, msg := failureReason(ju)
		run := ""
		if ju.ExecMainExitTimestamp != 0 {
			run = FormatUSec(ju.ExecMainExitTimestamp, LayoutMilli)
		}
		p.findOccurrence(o.ID(), job, ReasonTimerFailed, "last run "+msg, run, true)
	}
	if deleted && !written {
		return // its file deleted out of band, left so (drift policy report)
	}
	if !t.IsEnabled() {
		if u != nil && u.Active() {
			p.rt(actuators.OpStop, o, name, "timer disabled")
		}
		return
	}
	switch {
	case deleted && u.Active():
		p.catchUp(o, name, u)
		p.rt(actuators.OpRestart, o, name, "its unit file was deleted out of band: the version it runs cannot be told")
	case isNew && written && u.Active():
		// Taken over from a vendor file (one running with no file at all
		// is deleted).
		p.catchUp(o, name, u)
		p.rt(actuators.OpRestart, o, name, "taken over from "+strings.Join(u.VendorPaths, ", "))
	case isNew:
		p.catchUp(o, name, u)
		p.rt(actuators.OpStart, o, name, "new timer")
	case u.ActiveState == "failed":
		p.rt(actuators.OpResetFailed, o, name, "timer failed")
		p.catchUp(o, name, u)
		p.rt(actuators.OpStart, o, name, "timer failed, want active")
		p.find(o.ID(), name, ReasonTimerInactive, "timer failed; starting", true, true)
	case written && u.Active() && change.Restart:
		// Elapsed, or a reload would misfire (timerChange).
		if change.StopFirst {
			// The restart journal keeps the start owed: an agent killed
			// between this stop and the start would otherwise leave the
			// timer stopped (for good under drift: report).
			p.intents = append(p.intents, name)
			stop := actuators.Step{Op: actuators.OpStop, Object: o.ID(), Unit: name, Reason: change.Reason() + "; " + change.Why}
			if p.systemd() && (u.UnitFileState == "enabled" || p.journaled(name)) {
				p.unloadFirst(o, name, stop, u.UnitFileState == "enabled")
			} else {
				p.stops = append(p.stops, stop)
			}
			p.catchUp(o, name, u)
			p.rt(actuators.OpStart, o, name, "stopped for the schedule change, want active")
			break
		}
		p.catchUp(o, name, u)
		p.rt(actuators.OpRestart, o, name, change.Reason()+"; "+change.Why)
	case written && u.Active():
		// Reload only: daemon-reload reschedules a waiting timer from its
		// new file; comments (a renamed manifest's X-Resil-Source),
		// Description and [Install] need no restart either.
	case !u.Active() && u.PendingJob && !written:
		// Its start is queued, waiting for what it is ordered after (at
		// boot, a timer with maxLateness waits for the agent's READY=1).
		// Starting it again would wait on that same job, and so on this
		// pass; refreshing a stale stamp now is what the ordering is for.
		p.catchUp(o, name, u)
	case !u.Active() && p.journaled(name):
		// The restart journal: an earlier pass stopped it for a schedule
		// change and did not live to start it (restart_journal.go).
		p.find(o.ID(), name, ReasonTimerInactive, fmt.Sprintf("%s was stopped for a schedule change by an interrupted pass; starting", name), true, true)
		p.catchUp(o, name, u)
		p.rt(actuators.OpStart, o, name, "start owed by an interrupted pass")
	case !u.Active():
		msg := fmt.Sprintf("%s is %s, want active", name, OrDash(u.ActiveState))
		if o.DriftPolicy() == desired.DriftReport && !p.in.StateChanged[o.ID()] {
			p.find(o.ID(), name, ReasonTimerInactive, msg+"; drift policy report: left as is", true, false)
			return
		}
		if !written {
			p.find(o.ID(), name, ReasonTimerInactive, msg+"; starting", true, true)
		}
		p.catchUp(o, name, u)
		p.rt(actuators.OpStart, o, name, "inactive, want active")
	}
}

// unloadFirst plans the stop of an enabled timer for a schedule change so
// that systemd unloads it: disable, a daemon-reload, the stop, all before
// the pass writes its files; the timer is enabled again before the pass's
// own reload (links) and started after it. systemd 252 computes a started
// timer's first calendar run from its last activation
// (InactiveExitTimestamp) when it has no last trigger, and a stop keeps
// that timestamp while the unit stays loaded, which an enabled timer does
// (timers.target wants it): the start would fire the moved run at once,
// as the reload would have. A stopped timer nothing references is
// unloaded at once, and the next load has no history; the disable and its
// reload drop timers.target's reference. (Later systemd counts from now
// for a timer that was inactive.) TestTimerScheduleMovedBeforeNow checks
// it against a real systemd.
//
// A timer the restart journal names may have been disabled by a pass
// killed before its reload: disabled on disk, still referenced by the
// running manager. It gets the reload and the stop without the disable.
// Only a timer enabled in /etc is disabled (enabled-runtime links in /run
// stay: DisableUnitFiles does not remove them, and the disable would fail
// every pass); one enabled otherwise is stopped as before, and a start
// may fire the moved run.
func (p *planner) unloadFirst(o *desired.Object, name string, stop actuators.Step, enabled bool) {
	if enabled {
		why := "so that its stop unloads it: systemd counts a loaded timer's start from its last one"
		p.pre = append(p.pre, actuators.Step{Op: actuators.OpDisable, Object: o.ID(), Unit: name, Reason: why})
	}
	p.pre = append(p.pre, stop)
	p.preReloadWhy = append(p.preReloadWhy, name+" disabled for its stop")
	// Links moved by the change (enable: disable + enable) need no second
	// disable: the first removed every link.
	p.runtime = slices.DeleteFunc(p.runtime, func(s actuators.Step) bool { return enabled && s.Op == actuators.OpDisable && s.Unit == name })
	if !slices.ContainsFunc(p.runtime, func(s actuators.Step) bool { return s.Op == actuators.OpEnable && s.Unit == name }) {
		p.rt(actuators.OpEnable, o, name, "disabled for the schedule change's stop")
	}
}

// catchUp decides, just before the agent starts (or restarts) a persistent
// timer, what systemd will do about the runs it missed: systemd reads the
// stamp file's mtime as the last trigger and, if the next calendar run
// after it is already past, fires at once. Within spec.maxLateness (or
// without one) that single late run is the catch-up (catchUp: once) and is
// reported as TimerCatchUp. Later than maxLateness, the run is skipped: a
// refresh-stamp step sets the stamp to now before the start, so systemd
// computes the next run from now, and TimerMissed records the skipped run.
// catchUp: skip renders no Persistent= at all, so nothing is caught up and
// there is no stamp. Without an observed stamp (first start, process
// backend) there is nothing to decide.
func (p *planner) catchUp(o *desired.Object, name string, u *observed.Unit) {
	t := o.Timer
	if u == nil || u.StampPath == "" || u.StampUSec == 0 || !t.Persistent || t.CatchUp == desired.CatchUpSkip || len(t.Schedule) == 0 {
		return
	}
	now := p.in.Observed.ReadAt
	if now.IsZero() {
		return
	}
	last := time.UnixMicro(int64(u.StampUSec)).In(now.Location())
	missed := nextRun(t.Schedule, last)
	if missed.IsZero() || !missed.Before(now) {
		return
	}
	late := now.Sub(missed).Truncate(time.Second)
	if max := t.MaxLateness.D(); t.MaxLateness.IsSet() && late > max {
		msg := fmt.Sprintf("run due %s missed (last run %s) is %s late, over maxLateness %s: skipped; stamp refreshed so systemd does not fire it late",
			FormatUSec(uint64(missed.UnixMicro()), LayoutMilli), FormatUSec(u.StampUSec, LayoutMilli), late, max)
		p.find(o.ID(), name, ReasonTimerMissed, msg, true, true)
		p.runtime = append(p.runtime, actuators.Step{Op: actuators.OpRefreshStamp, Object: o.ID(), Unit: name, Path: u.StampPath,
			Props:  map[string]string{"missed": strconv.FormatInt(missed.UnixMicro(), 10)},
			Reason: fmt.Sprintf("skip run due %s, %s late", FormatUSec(uint64(missed.UnixMicro()), LayoutMilli), late)})
		return
	}
	p.find(o.ID(), name, ReasonTimerCatchUp, fmt.Sprintf("run due %s missed (last run %s); systemd runs it once on start, %s late",
		FormatUSec(uint64(missed.UnixMicro()), LayoutMilli), FormatUSec(u.StampUSec, LayoutMilli), late), false, false)
}
