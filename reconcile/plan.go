package reconcile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/desired/calendar"
	"resil.dev/resil/observed"
)

// Reason constants for drift and failure findings; they end up in events.
const (
	ReasonFileEdited    = "FileEdited"
	ReasonForeignDropIn = "ForeignDropIn"
	ReasonStopped       = "StoppedOutOfBand"
	ReasonFailed        = "Failed"
	ReasonStartLimitHit = "StartLimitHit"
	ReasonWatchdog      = "WatchdogTimeout"
	ReasonDisabled      = "DisabledOutOfBand"
	// ReasonStaleProcess: the unit file matches but the running process was
	// started from an older version of it (a restart was lost).
	ReasonStaleProcess     = "StaleProcess"
	ReasonConflict         = "ForeignUnitConflict"
	ReasonTimerFailed      = "TimerFailed"
	ReasonTimerInactive    = "TimerInactive"
	ReasonUnsupported      = "Unsupported"
	ReasonNoWatchdogDev    = "NoWatchdogDevice"
	ReasonHeldBack         = "BackoffHeldBack"
	ReasonInvalid          = "InvalidManifest"
	ReasonApplied          = "Applied"
	ReasonApplyFailed      = "ApplyFailed"
	ReasonPruned           = "Pruned"
	ReasonLastGoodRetained = "LastGoodRetained"
	ReasonDriftReported    = "DriftReported"
	ReasonTimerMissed      = "TimerMissed"
	// ReasonTimerCatchUp: a persistent timer is about to run a missed run late.
	ReasonTimerCatchUp = "TimerCatchUp"
	// ReasonReexecNeeded: a manager setting (WatchdogDevice) takes effect only
	// after `systemctl daemon-reexec`, which the agent never does by itself.
	ReasonReexecNeeded = "DaemonReexecNeeded"
	// Restart ledger and storm alerts (cmd/reconciler records them).
	ReasonRestarted       = "Restarted"
	ReasonRestartStorm    = "RestartStorm"
	ReasonAlertHookFailed = "AlertHookFailed"
)

// Finding is something the planner noticed: drift, a failure, a conflict.
type Finding struct {
	Object  string `json:"object"`
	Unit    string `json:"unit,omitempty"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	// Warning is false for informational findings.
	Warning bool `json:"warning"`
	// Enforced is true when the plan holds steps correcting it.
	Enforced bool `json:"enforced"`
}

// Input is everything Plan needs; it is plain data.
type Input struct {
	// Objects are the effective desired objects (last good versions included).
	Objects []*desired.Object
	// Files are the rendered files of each object, by object ID.
	Files map[string][]desired.UnitFile
	// UnitDir and ManagerDir are where unit files and the manager drop-in go.
	UnitDir    string
	ManagerDir string
	Observed   *observed.State
	// Prune allows removing owned units no object wants. It is false until
	// one manifest load succeeded, so a broken first read prunes nothing.
	Prune bool
	// Protected are object IDs whose owned units must not be pruned even if
	// absent from Objects (their manifest is broken right now).
	Protected map[string]bool
	// BrokenFiles are manifest files (relative) that failed to load; owned
	// units whose X-Resil-Source names one of them are never pruned, even
	// when the agent restarted and has no memory of their last good version.
	BrokenFiles map[string]bool
}

// Plan is the ordered list of steps plus what was noticed on the way.
type Plan struct {
	Steps    []actuators.Step `json:"steps"`
	Findings []Finding        `json:"findings,omitempty"`
}

// Hash identifies a plan: the steps and the observed bytes they were
// computed from. `apply --expect-plan` compares it.
func (p Plan) Hash() string {
	h := sha256.New()
	for _, s := range p.Steps {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%x\x00%x\x00", s.Op, s.Object, s.Unit, s.Path, sha256.Sum256(s.Data), sha256.Sum256(s.Old))
		keys := make([]string, 0, len(s.Props))
		for k := range s.Props {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(h, "%s=%s\x00", k, s.Props[k])
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Empty reports whether the plan changes nothing.
func (p Plan) Empty() bool { return len(p.Steps) == 0 }

// planner accumulates steps in phases so the order is fixed:
// prune stops/disables, file writes/removes, one daemon-reload, manager
// settings, then per-unit enable/reset/start/restart/stop.
type planner struct {
	in        Input
	stops     []actuators.Step // phase 1: prune stops and disables
	files     []actuators.Step // phase 2
	reload    bool
	reloadWhy []string
	manager   []actuators.Step // phase 4
	runtime   []actuators.Step // phase 5
	findings  []Finding
	// jobs are the services desired timers trigger (unit → timer object
	// ID): the timer starts them, the agent never does.
	jobs map[string]string
}

// Compute returns the steps that move the observed state toward the desired
// one. It does no I/O and is deterministic for the same input.
func Compute(in Input) Plan {
	p := &planner{in: in, jobs: map[string]string{}}
	objs := append([]*desired.Object(nil), in.Objects...)
	sort.Slice(objs, func(i, j int) bool { return objs[i].ID() < objs[j].ID() })
	wanted := map[string]bool{}
	hostWatchdog := false
	for _, o := range objs {
		for _, f := range in.Files[o.ID()] {
			if f.Dir == desired.DirUnit {
				wanted[f.Name] = true
			}
		}
		switch o.Kind {
		case desired.KindTimer:
			p.jobs[o.Timer.TriggeredService(o.Metadata.Name)] = o.ID()
		case desired.KindWatchdog:
			hostWatchdog = true
		}
	}
	p.prune(wanted)
	if !hostWatchdog {
		p.pruneWatchdog()
	}
	for _, o := range objs {
		switch o.Kind {
		case desired.KindService:
			p.service(o)
		case desired.KindTimer:
			p.timer(o)
		case desired.KindWatchdog:
			p.watchdog(o)
		}
	}
	var steps []actuators.Step
	steps = append(steps, p.stops...)
	steps = append(steps, p.files...)
	if p.reload {
		steps = append(steps, actuators.Step{Op: actuators.OpDaemonReload, Reason: strings.Join(dedupe(p.reloadWhy), ", ")})
	}
	steps = append(steps, p.manager...)
	steps = append(steps, p.runtime...)
	return Plan{Steps: steps, Findings: p.findings}
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func (p *planner) find(o, unit, reason, msg string, warning, enforced bool) {
	p.findings = append(p.findings, Finding{Object: o, Unit: unit, Reason: reason, Message: msg, Warning: warning, Enforced: enforced})
}

func (p *planner) unit(name string) *observed.Unit {
	if p.in.Observed == nil {
		return nil
	}
	return p.in.Observed.Units[name]
}

// fileState is what syncFile learned about one unit file.
type fileState struct {
	written bool // a write step was planned
	isNew   bool // there was no file before
	blocked bool // a foreign file sits there: leave the object alone
	// edited: the file was edited out of band and left as is (drift
	// policy report); its newer mtime or hash says nothing about a lost
	// restart, so no stale-process restart is planned from it.
	edited bool
}

// syncFile plans the write of one rendered unit file.
func (p *planner) syncFile(o *desired.Object, f desired.UnitFile) fileState {
	u := p.unit(f.Name)
	path := filepath.Join(p.in.UnitDir, f.Name)
	var cur []byte
	if u != nil {
		cur = u.File
		if u.Path != "" {
			path = u.Path
		}
	}
	id := o.ID()
	if cur != nil {
		if owner, ok := desired.IsOwned(cur); !ok {
			p.find(id, f.Name, ReasonConflict, fmt.Sprintf("%s exists and is not managed by resil; leaving it alone", path), true, false)
			return fileState{blocked: true}
		} else if owner != id {
			p.find(id, f.Name, ReasonConflict, fmt.Sprintf("%s is owned by %s", path, owner), true, false)
			return fileState{blocked: true}
		}
	}
	if u != nil && len(u.VendorPaths) > 0 {
		vendor := strings.Join(u.VendorPaths, ", ")
		switch {
		case u.VendorPaths[0] == path:
			p.find(id, f.Name, ReasonConflict, fmt.Sprintf("%s is a symlink (a mask, an alias or a linked unit), not a file resil may replace; leaving it alone", path), true, false)
			return fileState{blocked: true}
		case u.VendorOverrides:
			p.find(id, f.Name, ReasonConflict, fmt.Sprintf("%s already provides %s and takes precedence over %s; leaving it alone", vendor, f.Name, path), true, false)
			return fileState{blocked: true}
		case !o.TakesOver():
			p.find(id, f.Name, ReasonConflict, fmt.Sprintf("%s already provides %s; leaving it alone (spec.takeOver: true replaces it with resil's unit)", vendor, f.Name), true, false)
			return fileState{blocked: true}
		}
	}
	p.foreignDropIns(o, u)
	if cur != nil && bytes.Equal(cur, f.Data) {
		if u.NeedDaemonReload {
			p.reload = true
			p.reloadWhy = append(p.reloadWhy, f.Name+" changed on disk since last reload")
		}
		return fileState{}
	}
	reason := "new unit"
	if cur != nil {
		if _, intact := desired.HashOf(cur); intact {
			reason = "manifest changed"
		} else {
			msg := fmt.Sprintf("%s was edited out of band (%s)", path, firstDifference(cur, f.Data))
			if o.DriftPolicy() == desired.DriftReport {
				p.find(id, f.Name, ReasonFileEdited, msg+"; drift policy report: left as is", true, false)
				return fileState{edited: true}
			}
			p.find(id, f.Name, ReasonFileEdited, msg+"; restoring", true, true)
			reason = "edited out of band, restoring"
		}
	}
	p.files = append(p.files, actuators.Step{Op: actuators.OpWriteFile, Object: id, Unit: f.Name, Path: path, Data: f.Data, Old: cur, Reason: reason})
	p.reload = true
	p.reloadWhy = append(p.reloadWhy, "unit files written")
	return fileState{written: true, isNew: cur == nil}
}

// foreignDropIns reports drop-ins resil did not write; they are never deleted.
func (p *planner) foreignDropIns(o *desired.Object, u *observed.Unit) {
	if u == nil {
		return
	}
	for _, d := range u.DropInPaths {
		if data, ok := u.DropIns[d]; ok {
			if _, owned := desired.IsOwned(data); owned {
				continue
			}
		}
		p.find(o.ID(), u.Name, ReasonForeignDropIn, fmt.Sprintf("foreign drop-in %s overrides the manifest; reported, not removed", d), true, false)
	}
}

func (p *planner) rt(op actuators.Op, o *desired.Object, unit, reason string) {
	p.runtime = append(p.runtime, actuators.Step{Op: op, Object: o.ID(), Unit: unit, Reason: reason})
}

// failureReason classifies a failed unit.
func failureReason(u *observed.Unit) (string, string) {
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

func (p *planner) service(o *desired.Object) {
	s := o.Service
	files := p.in.Files[o.ID()]
	if len(files) == 0 {
		return
	}
	f := files[0]
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
	p.enable(o, f.Name, s.IsEnabled() && !p.static(f.Data), fs, u)
	switch s.DesiredState() {
	case desired.StateRunning:
		switch {
		case fs.isNew && u.Active():
			// A unit taken over from a vendor file runs the vendor's
			// version; one still running after its file was removed runs
			// a version that is gone.
			why := "running without a unit file"
			if len(u.VendorPaths) > 0 {
				why = "taken over from " + strings.Join(u.VendorPaths, ", ")
			}
			p.rt(actuators.OpRestart, o, f.Name, why)
		case fs.isNew || u == nil:
			p.rt(actuators.OpStart, o, f.Name, "new unit")
		case u.ActiveState == "failed":
			reason, msg := failureReason(u)
			if fs.written {
				p.rt(actuators.OpResetFailed, o, f.Name, "manifest changed after "+msg)
				p.rt(actuators.OpStart, o, f.Name, "manifest changed")
				p.find(o.ID(), f.Name, reason, msg+"; manifest changed, starting again", true, true)
				return
			}
			p.find(o.ID(), f.Name, reason, msg+"; not restarted by the agent until the manifest changes or `reconciler reset`", true, false)
		case fs.written && u.Active():
			p.rt(actuators.OpRestart, o, f.Name, "unit file changed")
		case fs.written:
			p.rt(actuators.OpStart, o, f.Name, u.ActiveState+", want active")
		case u.Active() && u.StaleProcess && !fs.edited:
			p.find(o.ID(), f.Name, ReasonStaleProcess, f.Name+" runs a process started from an older unit file; restarting", true, true)
			p.rt(actuators.OpRestart, o, f.Name, "running process started from an older unit file")
		case u.ActiveState == "inactive" || u.ActiveState == "":
			msg := fmt.Sprintf("%s is %s, want active", f.Name, orDash(u.ActiveState))
			if report {
				p.find(o.ID(), f.Name, ReasonStopped, msg+"; drift policy report: left as is", true, false)
				return
			}
			p.find(o.ID(), f.Name, ReasonStopped, msg+"; starting", true, true)
			p.rt(actuators.OpStart, o, f.Name, "inactive, want active")
		}
	case desired.StateStopped:
		if u != nil && u.Active() {
			p.rt(actuators.OpStop, o, f.Name, "active, want stopped")
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// static reports whether a rendered systemd unit has no [Install] section
// (wantedBy: []): systemd cannot enable it, so wanting it enabled means
// nothing, and an enable step would fail on every pass. (Process-backend
// files have no sections; enabled means started with the agent there.)
func (p *planner) static(data []byte) bool {
	if p.in.Observed == nil || p.in.Observed.Backend != "systemd" {
		return false
	}
	return !bytes.HasPrefix(data, []byte("[Install]\n")) && !bytes.Contains(data, []byte("\n[Install]\n"))
}

// enable plans enable/disable; drift in the enablement is reported too.
func (p *planner) enable(o *desired.Object, unit string, want bool, fs fileState, u *observed.Unit) {
	switch {
	case want && (fs.isNew || u == nil):
		// A unit taken over from an enabled vendor unit is enabled already
		// (the symlink names the unit, not the file).
		if !u.Enabled() {
			p.rt(actuators.OpEnable, o, unit, "new unit")
		}
	case want && !u.Enabled():
		if u.UnitFileState != "" && !fs.written && u.UnitFileState != "enabled" {
			msg := fmt.Sprintf("%s is %s, want enabled", unit, u.UnitFileState)
			if o.DriftPolicy() == desired.DriftReport {
				p.find(o.ID(), unit, ReasonDisabled, msg+"; drift policy report: left as is", true, false)
				return
			}
			p.find(o.ID(), unit, ReasonDisabled, msg+"; enabling", true, true)
		}
		p.rt(actuators.OpEnable, o, unit, "disabled, want enabled")
	case !want && u != nil && u.Enabled():
		p.rt(actuators.OpDisable, o, unit, "enabled, want disabled")
	}
}

func (p *planner) timer(o *desired.Object) {
	t := o.Timer
	var timerFile *desired.UnitFile
	var written bool
	for i, f := range p.in.Files[o.ID()] {
		fs := p.syncFile(o, f)
		if fs.blocked {
			return
		}
		if strings.HasSuffix(f.Name, ".timer") {
			timerFile = &p.in.Files[o.ID()][i]
			written = fs.written
		}
	}
	if timerFile == nil {
		return
	}
	name := timerFile.Name
	u := p.unit(name)
	isNew := u == nil || u.File == nil
	fs := fileState{written: written, isNew: isNew}
	p.enable(o, name, t.IsEnabled() && !p.static(timerFile.Data), fs, u)
	// The job is the timer's business: an inactive job between runs is not
	// drift; a failed last run is a finding.
	job := t.TriggeredService(o.Metadata.Name)
	if ju := p.unit(job); ju != nil && ju.ActiveState == "failed" {
		// One event per failed run: the message names the run by its exit
		// time, so the event log (keyed by object, reason, message) keeps
		// one row per run however many passes see it.
		_, msg := failureReason(ju)
		when := ""
		if ju.ExecMainExitTimestamp != 0 {
			when = " at " + usecText(ju.ExecMainExitTimestamp)
		}
		p.find(o.ID(), job, ReasonTimerFailed, "last run"+when+" "+msg, true, false)
	}
	if !t.IsEnabled() {
		if u != nil && u.Active() {
			p.rt(actuators.OpStop, o, name, "timer disabled")
		}
		return
	}
	switch {
	case isNew && written && u.Active():
		p.catchUp(o, name, u)
		why := "running without a unit file"
		if len(u.VendorPaths) > 0 {
			why = "taken over from " + strings.Join(u.VendorPaths, ", ")
		}
		p.rt(actuators.OpRestart, o, name, why)
	case isNew:
		p.catchUp(o, name, u)
		p.rt(actuators.OpStart, o, name, "new timer")
	case u.ActiveState == "failed":
		p.rt(actuators.OpResetFailed, o, name, "timer failed")
		p.catchUp(o, name, u)
		p.rt(actuators.OpStart, o, name, "timer failed, want active")
		p.find(o.ID(), name, ReasonTimerInactive, "timer failed; starting", true, true)
	case written && u.Active():
		p.catchUp(o, name, u)
		p.rt(actuators.OpRestart, o, name, "timer changed")
	case !u.Active() && u.PendingJob && !written:
		// Its start is queued, waiting for what it is ordered after (at
		// boot, a timer with maxLateness waits for the agent's READY=1).
		// Starting it again would wait on that same job, and so on this
		// pass; refreshing a stale stamp now is what the ordering is for.
		p.catchUp(o, name, u)
	case !u.Active():
		msg := fmt.Sprintf("%s is %s, want active", name, orDash(u.ActiveState))
		if o.DriftPolicy() == desired.DriftReport {
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
	var missed time.Time
	for _, expr := range t.Schedule {
		spec, err := calendar.Parse(expr)
		if err != nil {
			continue // validated before; the renderer would not get here
		}
		if next, ok := spec.Next(last); ok && (missed.IsZero() || next.Before(missed)) {
			missed = next
		}
	}
	if missed.IsZero() || !missed.Before(now) {
		return
	}
	late := now.Sub(missed).Truncate(time.Second)
	if max := t.MaxLateness.D(); t.MaxLateness.IsSet() && late > max {
		msg := fmt.Sprintf("run due %s missed (last run %s) is %s late, over maxLateness %s: skipped; stamp refreshed so systemd does not fire it late",
			usecText(uint64(missed.UnixMicro())), usecText(u.StampUSec), late, max)
		p.find(o.ID(), name, ReasonTimerMissed, msg, true, true)
		p.runtime = append(p.runtime, actuators.Step{Op: actuators.OpRefreshStamp, Object: o.ID(), Unit: name, Path: u.StampPath,
			Props:  map[string]string{"missed": strconv.FormatInt(missed.UnixMicro(), 10)},
			Reason: fmt.Sprintf("skip run due %s, %s late", usecText(uint64(missed.UnixMicro())), late)})
		return
	}
	p.find(o.ID(), name, ReasonTimerCatchUp, fmt.Sprintf("run due %s missed (last run %s); systemd runs it once on start, %s late",
		usecText(uint64(missed.UnixMicro())), usecText(u.StampUSec), late), false, false)
}

// watchdogKill reports a service the watchdog killed and systemd is
// restarting (Result=watchdog while not failed: SubState auto-restart or
// stop-watchdog). The window lasts RestartSec; the agent is woken by the
// state change. The message carries the kill time and the restart count,
// so each kill is one event. A unit the watchdog left failed is reported
// by the failed branch of service().
func (p *planner) watchdogKill(o *desired.Object, unit string, u *observed.Unit) {
	if u == nil || u.Result != "watchdog" || u.ActiveState == "failed" {
		return
	}
	if u.ExecMainExitTimestamp == 0 {
		// SIGABRT sent, the process not yet gone (stop-watchdog): its exit
		// is another state change that wakes the loop; report then, once,
		// with the kill time, so the message (the dedupe key) is stable.
		return
	}
	when := "at " + usecText(u.ExecMainExitTimestamp)
	timeout := ""
	if o.Service != nil && o.Service.Watchdog != nil {
		timeout = fmt.Sprintf(" within %s", o.Service.Watchdog.Timeout)
	}
	msg := fmt.Sprintf("%s killed by the watchdog %s (no WATCHDOG=1%s); systemd restarts it, restart %d", unit, when, timeout, u.NRestarts+1)
	p.find(o.ID(), unit, ReasonWatchdog, msg, true, false)
}

// usecText renders µs since the epoch as RFC 3339 UTC with milliseconds.
func usecText(v uint64) string {
	return time.UnixMicro(int64(v)).UTC().Format("2006-01-02T15:04:05.000Z")
}

func (p *planner) watchdog(o *desired.Object) {
	m := p.in.Observed.Manager
	if m == nil {
		p.find(o.ID(), "", ReasonUnsupported, "host watchdog needs systemd; the "+p.in.Observed.Backend+" backend cannot apply it", true, false)
		return
	}
	if len(m.Devices) == 0 {
		p.find(o.ID(), "", ReasonNoWatchdogDev, "no watchdog device under /sys/class/watchdog; settings written but nothing will be armed", true, false)
	}
	if w := o.Watchdog; w.Device != "" && m.Properties["WatchdogDevice"] != w.Device {
		// WatchdogDevice= is read-only over D-Bus and not re-read by
		// daemon-reload: the drop-in carries it, PID 1 picks it up at the
		// next daemon-reexec or boot. Re-executing PID 1 is the operator's call.
		p.find(o.ID(), "", ReasonReexecNeeded, fmt.Sprintf("WatchdogDevice is %q, want %q: written to the drop-in; takes effect after `systemctl daemon-reexec` or a reboot (the agent does not re-execute PID 1)",
			m.Properties["WatchdogDevice"], w.Device), true, false)
	}
	for _, f := range p.in.Files[o.ID()] {
		path := m.ConfPath
		if path == "" {
			path = filepath.Join(p.in.ManagerDir, f.Name)
		}
		if !bytes.Equal(m.File, f.Data) {
			reason := "new manager drop-in"
			if m.File != nil {
				reason = "manifest changed"
			}
			p.files = append(p.files, actuators.Step{Op: actuators.OpWriteFile, Object: o.ID(), Path: path, Data: f.Data, Old: m.File, Reason: reason})
			// daemon-reload re-reads RuntimeWatchdogSec/RebootWatchdogSec from
			// the drop-in; set-manager after it only fixes what is left.
			p.reload = true
			p.reloadWhy = append(p.reloadWhy, "manager drop-in written")
		}
	}
	want := map[string]string{}
	w := o.Watchdog
	if w.RuntimeTimeout.IsSet() {
		want["RuntimeWatchdogUSec"] = fmt.Sprint(uint64(w.RuntimeTimeout.D().Microseconds()))
	}
	if w.RebootTimeout.IsSet() {
		want["RebootWatchdogUSec"] = fmt.Sprint(uint64(w.RebootTimeout.D().Microseconds()))
	}
	diff := map[string]string{}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var why []string
	for _, k := range keys {
		if m.Properties[k] != want[k] {
			diff[k] = want[k]
			why = append(why, fmt.Sprintf("%s %s, want %s", k, orDash(m.Properties[k]), want[k]))
		}
	}
	if len(diff) > 0 {
		p.manager = append(p.manager, actuators.Step{Op: actuators.OpSetManager, Object: o.ID(), Props: diff, Reason: strings.Join(why, "; ")})
	}
}

// pruneWatchdog removes the owned manager drop-in when no Watchdog object
// is desired any more. daemon-reload then re-reads system.conf and its
// other drop-ins; a runtime override set earlier by set-manager stays until
// set to 0 (see actuators/systemd setManager).
func (p *planner) pruneWatchdog() {
	if p.in.Observed == nil || !p.in.Prune || p.in.Observed.Manager == nil {
		return
	}
	m := p.in.Observed.Manager
	if m.File == nil || m.ConfPath == "" {
		return
	}
	owner, ok := desired.IsOwned(m.File)
	if !ok || p.in.Protected[owner] {
		return
	}
	reason := fmt.Sprintf("pruned: %s no longer desired", owner)
	p.files = append(p.files, actuators.Step{Op: actuators.OpRemoveFile, Object: owner, Path: m.ConfPath, Old: m.File, Reason: reason})
	p.reload = true
	p.reloadWhy = append(p.reloadWhy, "manager drop-in removed")
}

func (p *planner) brokenSource(data []byte) bool {
	for _, f := range desired.SourceOf(data) {
		if p.in.BrokenFiles[f] {
			return true
		}
	}
	return false
}

// prune plans stop, disable and remove of every owned unit no object wants.
func (p *planner) prune(wanted map[string]bool) {
	if p.in.Observed == nil || !p.in.Prune {
		return
	}
	names := make([]string, 0, len(p.in.Observed.Units))
	for n := range p.in.Observed.Units {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		u := p.in.Observed.Units[n]
		if wanted[n] || u.Owner == "" || u.File == nil || p.in.Protected[u.Owner] {
			continue
		}
		if p.brokenSource(u.File) {
			p.find(u.Owner, n, ReasonLastGoodRetained, "its manifest is invalid; not pruned", true, false)
			continue
		}
		reason := fmt.Sprintf("pruned: %s no longer desired", u.Owner)
		if len(u.VendorPaths) > 0 {
			// A unit taken over from a vendor file: remove only resil's
			// file; the vendor unit (and its enablement) is in force again,
			// and a running process is restarted from it.
			if u.Active() && !u.VendorOverrides {
				p.runtime = append(p.runtime, actuators.Step{Op: actuators.OpRestart, Object: u.Owner, Unit: n,
					Reason: reason + "; " + strings.Join(u.VendorPaths, ", ") + " back in force"})
			}
		} else {
			if u.Active() {
				p.stops = append(p.stops, actuators.Step{Op: actuators.OpStop, Object: u.Owner, Unit: n, Reason: reason})
			}
			if u.Enabled() {
				p.stops = append(p.stops, actuators.Step{Op: actuators.OpDisable, Object: u.Owner, Unit: n, Reason: reason})
			}
		}
		path := u.Path
		if path == "" {
			path = filepath.Join(p.in.UnitDir, n)
		}
		p.files = append(p.files, actuators.Step{Op: actuators.OpRemoveFile, Object: u.Owner, Unit: n, Path: path, Old: u.File, Reason: reason})
		p.reload = true
		p.reloadWhy = append(p.reloadWhy, "unit files removed")
	}
}

// firstDifference names the first line where an edited file departs from
// the rendered one, so the drift event says what differed.
func firstDifference(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d is %q, want %q", i+1, gl, wl)
		}
	}
	return "no line differs"
}
