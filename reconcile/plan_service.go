package reconcile

import (
	"fmt"
	"strconv"
	"strings"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// failureReason classifies a failed unit.
func failureReason(u *observed.Unit) (Reason, string) {
	switch u.Result {
	case "start-limit-hit":
		return ReasonStartLimitHit, "start limit hit"
	case "watchdog":
		return ReasonWatchdog, "killed by watchdog"
	}
	msg := fmt.Sprintf("failed: result %s", u.Result)
	if u.ExecMainStatus != 0 {
		msg += fmt.Sprintf(", exit status %d", u.ExecMainStatus)
	}
	if u.NRestarts > 0 {
		msg += fmt.Sprintf(", %d restarts", u.NRestarts)
	}
	return ReasonFailed, msg
}

// gaveUpRestarting reports whether a failed service is one systemd's
// restart policy would have restarted and did not: its start limit
// stopped it. systemd 252 keeps the last run's Result (exit-code, signal,
// ...) then, not start-limit-hit: that replaces only a success, so a
// crash loop that hits the limit reads as one more failure. Told by the
// policy in force (the manifest's, or a Restart= of its systemd section,
// which wins: always and on-failure restart every failed result), and by
// systemd having restarted it about as often as the start limit allows
// (NRestarts at least the burst less one: a service stopped by hand that
// failed on its way down after a restart or two is not it); not when the
// manifest keeps some exit statuses from restarting
// (RestartPreventExitStatus=) or turns the limit off
// (StartLimitIntervalSec=0), which leave it failed too.
func gaveUpRestarting(s *desired.ServiceSpec, u *observed.Unit) bool {
	if s == nil || u.NRestarts == 0 {
		return false
	}
	policy := string(s.RestartPolicy())
	if r, ok := s.Systemd["Service"]["Restart"]; ok {
		policy = r
	}
	if policy != string(desired.RestartAlways) && policy != string(desired.RestartOnFailure) {
		return false
	}
	if _, ok := s.Systemd["Service"]["RestartPreventExitStatus"]; ok {
		return false
	}
	burst, interval := 5, "" // systemd's DefaultStartLimitBurst
	if l := s.Restart; l != nil && l.Limit != nil {
		burst, interval = l.Limit.Burst, desired.Span(l.Limit.Interval.D())
	}
	if b, ok := s.Systemd["Unit"]["StartLimitBurst"]; ok {
		if n, err := strconv.Atoi(strings.TrimSpace(b)); err == nil {
			burst = n
		}
	}
	if iv, ok := s.Systemd["Unit"]["StartLimitIntervalSec"]; ok {
		interval = strings.TrimSpace(iv)
	}
	if interval == "0" || burst <= 0 || int(u.NRestarts) < burst-1 {
		return false
	}
	// Restart=always and on-failure both restart every result but
	// success (systemd's service_shall_restart).
	return u.Result != "" && u.Result != "success"
}

func (p *planner) service(o *desired.Object) {
	s := o.Service
	files := p.in.Files[o.ID()]
	if len(files) == 0 {
		return
	}
	f := files[0]
	if s.DesiredState() == desired.StateRunning && p.jobs[f.Name] == "" && p.holdForRollout(o, f, p.unit(f.Name)) {
		return
	}
	fs := p.syncFile(o, f)
	if fs.blocked {
		return
	}
	u := p.unit(f.Name)
	if timer := p.jobs[f.Name]; timer != "" {
		// A timer starts this service: an inactive service between runs is
		// not drift, and the agent neither enables nor starts it (that would
		// run the job outside its schedule). Failed runs are reported by the
		// timer as TimerFailed.
		return
	}
	p.watchdogKill(o, f.Name, u)
	report := o.DriftPolicy() == desired.DriftReport
	p.enable(o, f.Name, s.IsEnabled() && !p.static(f.Data), fs, u, f.Data)
	if running := u != nil && (u.Active() || u.ActiveState == "deactivating"); s.DesiredState() == desired.StateRunning && fs.written &&
		(!running || fs.isNew || fs.change.Restart || p.staleProcess(u)) {
		// The restart journal keeps owed what this pass does after the
		// write. A process runs, or systemd may start one (Restart=) from
		// the old definition before the daemon-reload: the restart, until
		// one runs after the reload. Stopped: the start below, until one
		// is made (a unit found stopped with a file that already matches
		// is otherwise left failed, done by an exit of the old version,
		// or, unloaded or never run, as is under drift: report).
		p.intents = append(p.intents, f.Name)
	}
	switch s.DesiredState() {
	case desired.StateRunning:
		if !fs.written && p.liveness(o, f.Name, u) {
			return
		}
		switch {
		case fs.deleted && fs.written && u.Active():
			// The file that was deleted cannot be compared with the one
			// written: whether the process runs the manifest's version is
			// not known.
			p.rt(actuators.OpRestart, o, f.Name, "its unit file was deleted out of band: the version it runs cannot be told")
		case fs.isNew && u.Active():
			// A unit taken over from a vendor file runs the vendor's
			// version (one running with no file at all is fs.deleted).
			p.rt(actuators.OpRestart, o, f.Name, "taken over from "+strings.Join(u.VendorPaths, ", "))
		case fs.isNew || u == nil:
			p.rt(actuators.OpStart, o, f.Name, "new unit")
		case u.ActiveState == "failed":
			reason, msg := failureReason(u)
			if p.systemd() && reason == ReasonFailed && gaveUpRestarting(s, u) {
				reason, msg = ReasonStartLimitHit, fmt.Sprintf("start limit hit: systemd stopped restarting it after %d restarts; result %s", u.NRestarts, u.Result)
				switch {
				case u.Result == "signal" || u.Result == "core-dump":
					msg += fmt.Sprintf(", signal %d", u.ExecMainStatus)
				case u.ExecMainStatus != 0:
					msg += fmt.Sprintf(", exit status %d", u.ExecMainStatus)
				}
			}
			if u.ExecMainExitTimestamp != 0 {
				// Names the run: each failure is one event (the same
				// failure seen by later passes is not a new one).
				msg += " (last run exited at " + FormatUSec(u.ExecMainExitTimestamp, LayoutMilli) + ")"
			}
			if fs.written {
				p.rt(actuators.OpResetFailed, o, f.Name, "manifest changed after "+msg)
				p.rt(actuators.OpStart, o, f.Name, "manifest changed")
				p.find(o.ID(), f.Name, reason, msg+"; manifest changed, starting again", true, true)
				return
			}
			if !fs.edited && p.startOwed(u) {
				// The restart journal: an earlier pass rewrote its file
				// (to start it, or to restart it while it ran) and did not
				// live to start it (restart_journal.go): the failed run is
				// older than the record. One start is owed, whatever its
				// result.
				p.startsOwed = append(p.startsOwed, f.Name)
				p.rt(actuators.OpResetFailed, o, f.Name, "start owed by an interrupted pass")
				p.rt(actuators.OpStart, o, f.Name, "start owed by an interrupted pass")
				p.find(o.ID(), f.Name, reason, msg+"; its unit file was rewritten by an interrupted pass that did not start it; starting", true, true)
				return
			}
			p.find(o.ID(), f.Name, reason, msg+"; not restarted by the agent until the manifest changes or `reconciler reset`", true, false)
		case fs.written && u.Active() && (fs.change.Restart || p.staleProcess(u)):
			why := fs.change.Reason()
			if !fs.change.Restart {
				// Only reload-only settings changed, but the process is
				// older than the file it replaces (a lost restart).
				p.find(o.ID(), f.Name, ReasonStaleProcess, f.Name+" runs a process started from an older unit file; restarting", true, true)
				why = "running process started from an older unit file"
			}
			p.rt(actuators.OpRestart, o, f.Name, why)
		case fs.written && u.Active():
			// Reload only: systemd (or the supervisor) applies the change
			// on daemon-reload; the running process is unaffected.
		case fs.written:
			p.rt(actuators.OpStart, o, f.Name, u.ActiveState+", want active")
		case u.Active() && u.StaleProcess && !fs.edited:
			p.find(o.ID(), f.Name, ReasonStaleProcess, f.Name+" runs a process started from an older unit file; restarting", true, true)
			p.rt(actuators.OpRestart, o, f.Name, "running process started from an older unit file")
		case u.Active() && p.staleProcess(u) && !fs.edited:
			// The restart journal: an agent wrote this file and did not
			// live to restart the service (restart_journal.go).
			p.find(o.ID(), f.Name, ReasonStaleProcess, f.Name+" was rewritten by an interrupted pass that did not restart it; restarting", true, true)
			p.rt(actuators.OpRestart, o, f.Name, "restart owed by an interrupted pass")
		case u.ActiveState == "inactive" || u.ActiveState == "":
			msg := fmt.Sprintf("%s is %s, want active", f.Name, OrDash(u.ActiveState))
			if p.in.StateChanged[o.ID()] {
				p.rt(actuators.OpStart, o, f.Name, "manifest changed: state running")
				return
			}
			if u.StaleRun {
				// Its files were rewritten after its last run started, and
				// the start that pass owed was lost (an agent killed between
				// the write and the start): the run the files describe
				// never happened. Owed whatever the drift policy, as the
				// pass that wrote them would have started it.
				p.find(o.ID(), f.Name, ReasonStaleProcess, fmt.Sprintf("%s last ran (started at %s) from an older unit file than the one on disk, whose start was lost (an interrupted pass); starting",
					f.Name, FormatUSec(u.ExecMainStartTimestamp, LayoutMilli)), true, true)
				p.rt(actuators.OpStart, o, f.Name, "unit file newer than its last run")
				return
			}
			if !fs.edited && p.startOwed(u) {
				// The restart journal, as for a failed service above (an
				// agent killed after its reset-failed leaves it inactive).
				p.startsOwed = append(p.startsOwed, f.Name)
				p.find(o.ID(), f.Name, ReasonStopped, msg+"; its unit file was rewritten by an interrupted pass that did not start it; starting", true, true)
				p.rt(actuators.OpStart, o, f.Name, "start owed by an interrupted pass")
				return
			}
			if pol := s.RestartPolicy(); done(u, s) {
				// Done, as its restart policy has it: not drift. Started
				// again by a manifest change (or by hand).
				if u.HistoryRemembered {
					p.find(o.ID(), f.Name, ReasonExited, fmt.Sprintf("%s ran (started at %s) and systemd has since unloaded it, as it does an inactive unit nothing references; restart policy %s does not restart it: left inactive until its unit changes (or a start by hand)",
						f.Name, FormatUSec(u.ExecMainStartTimestamp, LayoutMilli), pol), false, false)
					return
				}
				p.find(o.ID(), f.Name, ReasonExited, fmt.Sprintf("%s exited by itself at %s with status 0; restart policy %s does not restart it: left inactive until its unit changes (or a start by hand)",
					f.Name, FormatUSec(u.ExecMainExitTimestamp, LayoutMilli), pol), false, false)
				return
			}
			if report {
				p.find(o.ID(), f.Name, ReasonStopped, msg+"; drift policy report: left as is", true, false)
				return
			}
			p.find(o.ID(), f.Name, ReasonStopped, msg+"; starting", true, true)
			p.rt(actuators.OpStart, o, f.Name, "inactive, want active")
		}
	case desired.StateStopped:
		if u == nil || !u.Active() {
			return
		}
		// As StoppedOutOfBand for a service wanted running: found active
		// with its file as rendered and its state unchanged, it was
		// started by hand (or by a unit that wants it).
		if !fs.written && !fs.isNew && !p.in.StateChanged[o.ID()] {
			msg := fmt.Sprintf("%s is %s, want stopped", f.Name, u.ActiveState)
			if report {
				p.find(o.ID(), f.Name, ReasonStarted, msg+"; drift policy report: left as is", true, false)
				return
			}
			p.find(o.ID(), f.Name, ReasonStarted, msg+"; stopping", true, true)
		}
		p.rt(actuators.OpStop, o, f.Name, "active, want stopped")
	}
}

// watchdogKill reports a service the watchdog killed and systemd is
// restarting (Result=watchdog while not failed: SubState auto-restart or
// stop-watchdog). The window lasts RestartSec; the agent is woken by the
// state change. Each kill is one occurrence (Finding.Occurrence: the
// kill time) of one finding whose message stays the same, so repeated
// kills fold into one event row with a count instead of a row each. A
// unit the watchdog left failed is reported by the failed branch of
// service().
func (p *planner) watchdogKill(o *desired.Object, unit string, u *observed.Unit) {
	if u == nil || u.Result != "watchdog" || u.ActiveState == "failed" {
		return
	}
	if u.ExecMainExitTimestamp == 0 {
		// SIGABRT sent, the process not yet gone (stop-watchdog): its exit
		// is another state change that wakes the loop; report then, once,
		// with the kill time, so the occurrence (the dedupe key) is stable.
		return
	}
	timeout := ""
	if o.Service != nil && o.Service.Watchdog != nil {
		timeout = fmt.Sprintf(" within %s", o.Service.Watchdog.Timeout)
	}
	who := "systemd"
	if !p.systemd() {
		who = "the supervisor" // the process backend restarts it itself
	}
	msg := fmt.Sprintf("%s killed by the watchdog (no WATCHDOG=1%s); %s restarts it", unit, timeout, who)
	p.findOccurrence(o.ID(), unit, ReasonWatchdog, msg, FormatUSec(u.ExecMainExitTimestamp, LayoutMilli), true)
}

// done reports whether a service's process exited by itself with status 0
// under a restart policy that does not restart a clean exit (on-failure,
// never), started from the files on disk (not observed.Unit.StaleRun): it
// ran as its manifest has it, and is not started again. A run that ended
// before the unit became active counts only where activating is the exec
// window alone (desired.ServiceSpec.ActiveOnExec).
func done(u *observed.Unit, s *desired.ServiceSpec) bool {
	return exitedOnItsOwn(u, s.ActiveOnExec()) && !u.StaleRun && s.RestartPolicy() != desired.RestartAlways
}

// exitedOnItsOwn is observed.Unit.ExitedOnItsOwn, or ExitedBeforeActive
// for a unit active on exec.
func exitedOnItsOwn(u *observed.Unit, activeOnExec bool) bool {
	return u.ExitedOnItsOwn() || activeOnExec && u.ExitedBeforeActive()
}
