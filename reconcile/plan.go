package reconcile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/desired/calendar"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile/health"
)

// Finding is something the planner noticed: drift, a failure, a conflict.
type Finding struct {
	Object  string `json:"object"`
	Unit    string `json:"unit,omitempty"`
	Reason  Reason `json:"reason"`
	Message string `json:"message"`
	// Warning is false for informational findings.
	Warning bool `json:"warning"`
	// Enforced is true when the plan holds steps correcting it.
	Enforced bool `json:"enforced"`
	// Occurrence tells apart occurrences of a finding whose message is
	// the same (a timer job's failed runs, by exit time; a liveness
	// failure, by process): each is a new event onset, and the event log,
	// keyed by object, reason and message, counts them in one row (its
	// count and last seen) instead of a row per occurrence.
	Occurrence string `json:"occurrence,omitempty"`
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
	// StateChanged: objects whose manifest changed state or enabled
	// since their last good version (the agent's memory of it; a first
	// pass has it only where it loads the persisted last good objects,
	// which it does when an object has drift: report). Neither is in the
	// unit file, so without it a unit found not as they now say reads as
	// out-of-band drift: under drift: report it is left as is (the
	// manifest's change was never applied), under enforce the change is
	// applied with a drift finding it does not deserve.
	StateChanged map[string]bool
	// BrokenFiles are manifest files (relative) that failed to load; owned
	// units whose X-Resil-Source names one of them are never pruned, even
	// when the agent restarted and has no memory of their last good version.
	BrokenFiles map[string]bool
	// Classify says whether a rewritten unit file needs a restart of its
	// running process; nil is ClassifyUnitChange (systemd unit files).
	Classify Classifier
	// MaxParallelRestarts paces the agent's restarts of running services
	// whose unit changed into waves (plan_rollout.go); 0: all at once.
	MaxParallelRestarts int
	// RolloutReadyTimeout: a service not ready this long halts a rollout
	// (0: DefaultRolloutReadyTimeout).
	RolloutReadyTimeout time.Duration
	// Rollout: --min-ready, the jitter gate, `reconciler rollout resume`
	// (plan_rollout.go).
	Rollout RolloutInput
	// Health are the agent's probe statuses (reconcile/health.Prober);
	// a failing liveness probe of the running process plans its restart.
	Health []health.Status
	// MarkProcessSince (systemd): a unit rewritten with only reload-only
	// changes for a running, not stale process carries the time since
	// which its process settings are unchanged (ownmark.KeyProcessSince),
	// so the file's newer mtime does not read as a lost restart.
	MarkProcessSince bool
	// RestartPending are the units the restart journal says an earlier
	// pass rewrote and did not restart or start (restart_journal.go), with
	// the time of each record: a running one is restarted like a stale
	// process, a stopped one that has not run since is started.
	RestartPending map[string]time.Time
	// SafetyInput: pause leases, the mass-prune guard, delayed prune.
	SafetyInput
}

// Classifier compares the old and new bytes of one unit file.
type Classifier func(old, cur []byte) UnitChange

// Plan is the ordered list of steps plus what was noticed on the way.
type Plan struct {
	Steps    []actuators.Step `json:"steps"`
	Findings []Finding        `json:"findings,omitempty"`
	SafetyReport
	// Rollout is the restart rollout this plan is part of (nil: none;
	// plan_rollout.go).
	Rollout *RolloutReport `json:"rollout,omitempty"`
	// RestartIntents are the services whose unit file this plan rewrites
	// while a process runs (or is about to: deactivating, activating) that
	// must be restarted for it: the restart journal records them before
	// the first step (restart_journal.go).
	RestartIntents []string `json:"-"`
	// StartsOwed are the journaled units whose start the planner still
	// owes: timers stopped for a schedule change by an interrupted pass
	// (enabled and not active), and stopped services whose unit file an
	// interrupted pass wrote without starting them. Their records stay
	// until a start is made (for a timer, one that succeeds), even when
	// this plan withholds it (a pause lease).
	StartsOwed []string `json:"-"`
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
// prune stops/disables, file writes/removes, (systemd) disables and
// enables (see links), one daemon-reload, manager settings, then per-unit
// enable (process backend)/reset/start/restart/stop.
type planner struct {
	in Input
	// pre: phase 0, a timer's stop that must unload it (unloadFirst),
	// with its own daemon-reload (preReloadWhy) before the stop.
	pre          []actuators.Step
	preReloadWhy []string
	stops        []actuators.Step // phase 1: prune stops and disables
	files        []actuators.Step // phase 2
	reload       bool
	reloadWhy    []string
	manager      []actuators.Step // phase 4
	runtime      []actuators.Step // phase 5
	findings     []Finding
	// intents: see Plan.RestartIntents.
	intents []string
	// startsOwed: see Plan.StartsOwed.
	startsOwed []string
	// jobs are the services desired timers trigger (unit → timer object
	// ID): the timer starts them, the agent never does.
	jobs map[string]string
	// Safety rails (plan_safety.go): paused objects with their withheld
	// steps, prune deadlines after this pass, a blocked prune, what is
	// pruned, the objects a block holds after this pass.
	held      map[string]*PausedObject
	pending   map[string]time.Time
	blocked   *PruneBlock
	pruned    []string
	pruneHeld map[string]time.Time
	// rollout paces restarts (nil: MaxParallelRestarts is 0).
	rollout *rolloutState
	// objects are the desired objects by ID (object builds it).
	objects map[string]*desired.Object
}

// Compute returns the steps that move the observed state toward the desired
// one. It does no I/O and is deterministic for the same input.
func Compute(in Input) Plan {
	p := &planner{in: in, jobs: map[string]string{}, held: map[string]*PausedObject{}, pending: map[string]time.Time{},
		pruneHeld: map[string]time.Time{}}
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
	p.initRollout(objs)
	for _, o := range objs {
		m := p.mark()
		switch o.Kind {
		case desired.KindService:
			p.service(o)
		case desired.KindTimer:
			p.timer(o)
		case desired.KindWatchdog:
			p.watchdog(o)
		}
		if l := p.lease(o.ID()); l != nil {
			p.withhold(m, o.ID(), *l)
		}
	}
	safety := SafetyReport{Paused: p.pausedReport(), PruneBlocked: p.blocked, Pruned: p.pruned}
	if len(p.pending) > 0 {
		safety.PrunePending = p.pending
	}
	if len(p.pruneHeld) > 0 {
		safety.PruneHeld = p.pruneHeld
	}
	rollout := p.finishRollout()
	links := p.links()
	var steps []actuators.Step
	if len(p.pre) > 0 {
		// Disables, the reload, then the stops (see unloadFirst).
		var stops []actuators.Step
		for _, s := range p.pre {
			if s.Op == actuators.OpDisable {
				steps = append(steps, s)
			} else {
				stops = append(stops, s)
			}
		}
		steps = append(steps, actuators.Step{Op: actuators.OpDaemonReload, Reason: strings.Join(dedupe(p.preReloadWhy), ", ")})
		steps = append(steps, stops...)
	}
	steps = append(steps, p.stops...)
	steps = append(steps, p.files...)
	steps = append(steps, links...)
	if p.reload {
		steps = append(steps, actuators.Step{Op: actuators.OpDaemonReload, Reason: strings.Join(dedupe(p.reloadWhy), ", ")})
	}
	steps = append(steps, p.manager...)
	steps = append(steps, p.runtime...)
	return Plan{Steps: steps, Findings: p.findings, SafetyReport: safety, Rollout: rollout, RestartIntents: p.restartIntents(steps), StartsOwed: p.startsOwedAll()}
}

// links takes the enable and disable steps out of the runtime phase of a
// systemd plan, to run after the files and before the daemon-reload:
// disables first, then enables, each in plan order (a re-enable's disable
// still precedes its enable). EnableUnitFiles and DisableUnitFiles only
// change symlinks on disk; the dependency they add (multi-user.target
// wants the unit) exists in the running manager from the next reload.
// Enabled after the reload, a new unit stayed unreferenced until the next
// one, and systemd unloads an inactive unit nothing references, with its
// run history: a run-once service that exited cleanly looked as if it had
// never run and was started again. So a pass that links also reloads,
// what `systemctl enable` does too. The process backend has no such
// dependency; its plan is left as it is.
func (p *planner) links() []actuators.Step {
	if !p.systemd() {
		return nil
	}
	var disables, enables, rest []actuators.Step
	for _, s := range p.runtime {
		switch s.Op {
		case actuators.OpDisable:
			disables = append(disables, s)
		case actuators.OpEnable:
			enables = append(enables, s)
		default:
			rest = append(rest, s)
		}
	}
	if len(disables)+len(enables) == 0 {
		return nil
	}
	p.runtime = rest
	if !p.reload {
		p.reload = true
		p.reloadWhy = append(p.reloadWhy, linksReloadReason)
	}
	return append(disables, enables...)
}

// linksReloadReason is the reason of a daemon-reload a plan has only for
// its enables and disables: execute runs it only if one of them changed
// something (one held back by backoff, or failing, costs no reload).
const linksReloadReason = "enablement changed"

// systemd reports whether the plan is for the systemd backend.
func (p *planner) systemd() bool {
	return p.in.Observed != nil && p.in.Observed.Backend == "systemd"
}

// restartIntents are the services of p.intents whose unit file the plan
// still writes (a paused object's steps were withheld).
func (p *planner) restartIntents(steps []actuators.Step) []string {
	if len(p.intents) == 0 {
		return nil
	}
	written := map[string]bool{}
	for _, s := range steps {
		if s.Op == actuators.OpWriteFile {
			written[s.Unit] = true
		}
	}
	var out []string
	for _, u := range p.intents {
		if written[u] {
			out = append(out, u)
		}
	}
	return out
}

// startsOwedAll is p.startsOwed plus the journaled timers and stopped
// services of objects whose manifest is broken now (Input.Protected):
// their start is owed once the manifest is good again.
func (p *planner) startsOwedAll() []string {
	out := p.startsOwed
	for name := range p.in.RestartPending {
		if u := p.unit(name); u != nil && (strings.HasSuffix(name, ".timer") || u.ActiveState == "failed" || u.ActiveState == "inactive") && u.Owner != "" && p.in.Protected[u.Owner] && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
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

func (p *planner) find(o, unit string, reason Reason, msg string, warning, enforced bool) {
	p.findings = append(p.findings, Finding{Object: o, Unit: unit, Reason: reason, Message: msg, Warning: warning, Enforced: enforced})
}

// findOccurrence is find for one occurrence of a repeating finding (see
// Finding.Occurrence).
func (p *planner) findOccurrence(o, unit string, reason Reason, msg, occurrence string, warning bool) {
	p.findings = append(p.findings, Finding{Object: o, Unit: unit, Reason: reason, Message: msg, Warning: warning, Occurrence: occurrence})
}

func (p *planner) unit(name string) *observed.Unit {
	if p.in.Observed == nil {
		return nil
	}
	return p.in.Observed.Units[name]
}

// journaled reports whether the restart journal names unit.
func (p *planner) journaled(unit string) bool {
	_, ok := p.in.RestartPending[unit]
	return ok
}

// startOwed reports whether a journaled service found stopped (inactive or
// failed) has not run since its record was made: its last run started
// before the record (a record is made before the file it stands for is
// written, and a stopped unit is not being restarted by systemd), or it
// never ran (or systemd unloaded it since). Such a service is owed one
// start (restart_journal.go).
func (p *planner) startOwed(u *observed.Unit) bool {
	t, ok := p.in.RestartPending[u.Name]
	// A reload pending: no run can be of the file on disk (systemd may
	// have restarted the old definition after the record, Restart=).
	return ok && (u.NeedDaemonReload || u.ExecMainStartTimestamp == 0 || int64(u.ExecMainStartTimestamp) < t.UnixMicro())
}

// staleProcess reports whether u, running, runs a process older than its
// unit file: the observer's rule (observed.Unit.StaleProcess) or a
// restart the journal says is owed (restartOwed).
func (p *planner) staleProcess(u *observed.Unit) bool {
	return u.Active() && (u.StaleProcess || (p.journaled(u.Name) && restartOwed(u, p.in.Observed)))
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
	// deleted: the file was deleted out of band while the backend still
	// has the unit loaded from it (observed.Unit.FileDeleted): restored
	// when written, else left as is (drift policy report).
	deleted bool
	// change says how a written file affects the running process (set
	// when the file existed before).
	change UnitChange
	// editRestored: a hand edit the running process never ran is
	// restored (keptProcess): change needs no restart.
	editRestored bool
}

// ownerGone reports whether owner, the object that owns a unit file a
// desired object renders, is gone for good: not desired, not protected
// (its manifest broken or busy), its source files not invalid, not paused.
func (p *planner) ownerGone(owner string, file []byte) bool {
	if p.object(owner) != nil {
		return false
	}
	return !p.in.Protected[owner] && !p.brokenSource(file) && p.lease(owner) == nil
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
	takenFrom := ""
	if cur != nil {
		if owner, ok := ownmark.IsOwned(cur); !ok {
			p.find(id, f.Name, ReasonConflict, fmt.Sprintf("%s exists and is not managed by resil; leaving it alone", path), true, false)
			return fileState{blocked: true}
		} else if owner != id && !p.ownerGone(owner, cur) {
			p.find(id, f.Name, ReasonConflict, fmt.Sprintf("%s is owned by %s", path, owner), true, false)
			return fileState{blocked: true}
		} else if owner != id {
			// Its owner is no longer desired (the object changed kind,
			// Service/job to Timer/job): what a prune would do to the
			// old unit is done, then the file is this object's. Left,
			// the old unit ran on and the new object never converged.
			p.stopDisable(owner, f.Name, u, fmt.Sprintf("pruned: %s no longer desired; %s takes %s", owner, id, f.Name))
			takenFrom = owner
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
		case !o.TakesOver() && cur != nil && ownmark.TookOver(cur):
			// resil's own file, from when the object took the unit over:
			// takeOver was turned off, so the vendor unit is given back
			// (what a prune of a taken-over unit does). Left, resil's
			// stale file would shadow it for good.
			p.removeUnit(f.Name, u, "takeOver turned off")
			return fileState{blocked: true}
		case !o.TakesOver() && cur != nil:
			// resil's file came first: a unit of that name appeared
			// elsewhere since (a package, a runtime mask). resil's file
			// is the one in force and stays so; said once per pass.
			p.find(id, f.Name, ReasonConflict, fmt.Sprintf("%s also provides %s; resil's %s, written before it, stays in force", vendor, f.Name, path), true, false)
		case !o.TakesOver():
			p.find(id, f.Name, ReasonConflict, fmt.Sprintf("%s already provides %s; leaving it alone (spec.takeOver: true replaces it with resil's unit)", vendor, f.Name), true, false)
			return fileState{blocked: true}
		}
	}
	p.foreignDropIns(o, u)
	if cur != nil && bytes.Equal(ownmark.WithoutProcessSince(cur), f.Data) {
		if u.NeedDaemonReload {
			p.reload = true
			p.reloadWhy = append(p.reloadWhy, f.Name+" changed on disk since last reload")
		}
		return fileState{}
	}
	reason := "new unit"
	change := UnitChange{Restart: true}
	// Not a new unit: resil's file was there, and the unit still runs
	// (or, stopped, keeps) what was loaded from it; or, a daemon-reload
	// since, the unit runs from a file that is gone (nothing else
	// provides it), which only a deletion leaves.
	deleted := cur == nil && u != nil && (u.FileDeleted || u.Active() && len(u.VendorPaths) == 0)
	if deleted {
		msg := fmt.Sprintf("%s was deleted out of band (%s is still loaded from it)", path, f.Name)
		if !u.FileDeleted {
			msg = fmt.Sprintf("%s runs with no unit file: %s was deleted out of band (and the units reloaded since)", f.Name, path)
		}
		if o.DriftPolicy() == desired.DriftReport {
			p.find(id, f.Name, ReasonFileDeleted, msg+"; drift policy report: left as is", true, false)
			return fileState{edited: true, deleted: true}
		}
		p.find(id, f.Name, ReasonFileDeleted, msg+"; restoring", true, true)
		reason = "deleted out of band, restoring"
	}
	editRestored := false
	if cur != nil {
		change = p.classify(cur, f.Data)
		if strings.HasSuffix(f.Name, ".timer") {
			change = p.timerChange(o, change, u)
		}
		if recorded, intact := ownmark.HashOf(cur); intact || takenFrom != "" {
			reason = "manifest changed"
			if takenFrom != "" {
				reason = "taken from " + takenFrom + ", no longer desired"
			}
		} else {
			msg := fmt.Sprintf("%s was edited out of band (%s)", path, firstDifference(cur, f.Data))
			want, _ := ownmark.HashOf(f.Data)
			switch {
			case o.DriftPolicy() == desired.DriftReport && recorded != "" && recorded != want:
				// The manifest changed since resil wrote the file (the
				// hash it recorded then is not the new render's): under
				// report too, a change of the manifest is applied, the
				// edit with it.
				p.find(id, f.Name, ReasonFileEdited, msg+"; the manifest changed since: its change is applied over the edit", true, false)
				reason = "manifest changed, over an out-of-band edit"
			case o.DriftPolicy() == desired.DriftReport:
				p.find(id, f.Name, ReasonFileEdited, msg+"; drift policy report: left as is", true, false)
				return fileState{edited: true}
			case change.Restart && (startedFromRender(u, f.Data) || recorded == want && p.keptProcess(u, cur)):
				// Its process never ran the edit: started from exactly
				// this render (the hash the process backend recorded), or
				// before the edit and after resil's version (by time).
				p.find(id, f.Name, ReasonFileEdited, msg+"; restoring (its process started before the edit: no restart)", true, true)
				reason = "edited out of band after the process started; restoring, no restart"
				change, editRestored = UnitChange{Keys: change.Keys}, true
			default:
				p.find(id, f.Name, ReasonFileEdited, msg+"; restoring", true, true)
				reason = "edited out of band, restoring"
			}
		}
		if !change.Restart && !editRestored {
			reason += "; " + change.Reason()
		}
	}
	data := f.Data
	if p.in.MarkProcessSince && cur != nil && !change.Restart && u.Active() && u.MainPID != 0 && !p.staleProcess(u) && u.ExecMainStartTimestamp != 0 {
		since := int64(u.ExecMainStartTimestamp)
		if prev, ok := ownmark.ProcessSince(cur); ok && prev < since {
			since = prev
		}
		data = ownmark.WithProcessSince(f.Data, since)
	}
	p.files = append(p.files, actuators.Step{Op: actuators.OpWriteFile, Object: id, Unit: f.Name, Path: path, Data: data, Old: cur, Reason: reason})
	p.reload = true
	p.reloadWhy = append(p.reloadWhy, "unit files written")
	return fileState{written: true, isNew: cur == nil && !deleted, deleted: deleted, change: change, editRestored: editRestored}
}

// keptProcess reports whether u's running main process runs the version
// of its unit file resil last wrote, though the file on disk, cur, was
// edited by hand since (the caller checked that its X-Resil-Hash marker
// is the current render's: resil last wrote exactly what it would write
// now). It holds when the process started before the file's last
// modification (the edit: it never ran it) and after the version resil
// wrote: no restart owed by the restart journal, and not before the
// file's X-Resil-Process-Since marker (the time since which its process
// settings are unchanged) when it kept one. Restoring the file then
// changes nothing the process runs: a write and a daemon-reload, no
// restart.
//
// What it cannot see: an edit, a restart by hand (the process then ran
// that edit), then a second edit: the file's time is the second edit's,
// and the process, older, reads as one that never ran an edit. A restart
// of resil's version lost with no journal (an agent killed between its
// write and its restart, with no state directory) is not seen either;
// the observer's stale-process rule, which would see it, needs an intact
// file.
func (p *planner) keptProcess(u *observed.Unit, cur []byte) bool {
	if u == nil || !u.Active() || u.MainPID == 0 || u.ExecMainStartTimestamp == 0 || u.FileModTime == 0 || p.staleProcess(u) {
		return false
	}
	start := u.ExecMainStartTimestamp
	if since, ok := ownmark.ProcessSince(cur); ok && start < uint64(since) {
		return false
	}
	return start < u.FileModTime
}

// timerChange turns a timer's restart-class change into a reload-only one
// while the timer waits for its next elapse (or runs its job). On
// daemon-reload systemd re-reads the file and computes a waiting timer's
// next elapse from the new settings (timer_coldplug; a running timer does
// when its job ends), so nothing is lost without a restart, and a restart
// would do harm: a start forgets the last trigger, and a timer without one
// fires a one-time trigger already past (OnBootSec=) at once, at that
// start or at the next daemon-reload: the job runs outside its schedule.
// Checked against a real systemd by TestTimerChangeKeepsLastTrigger.
// It stays a restart (Why says why) when:
//   - the timer is elapsed: it has nothing left to wait for, only a start
//     schedules its new settings (unless they schedule nothing either: no
//     schedule, no onUnitActive, onBoot unchanged);
//   - it is running and Unit= changed: the end of the old job no longer
//     reaches the timer, which would stay running;
//   - OnCalendar= changed and the new schedule has a run due between the
//     timer's base and now (timerSlotMissed): on reload systemd computes
//     the next run from the last trigger (or, without one, from the
//     timer's start) and fires that run at once. The timer is stopped
//     before the reload (StopFirst) and started after it: a start
//     computes from now, or for a persistent timer from its stamp, where
//     catchUp (and maxLateness) decide; the process backend's reload does
//     the same. A non-persistent timer with onBoot is left to the reload
//     (a start would fire a past onBoot instead), reported as
//     TimerCatchUp. Checked against a real systemd by
//     TestTimerScheduleMovedBeforeNow.
func (p *planner) timerChange(o *desired.Object, c UnitChange, u *observed.Unit) UnitChange {
	if !c.Restart || u == nil || u.ActiveState != "active" {
		return c
	}
	switch {
	case u.SubState == "running" && slices.Contains(c.Keys, "Unit"):
		c.Why = "running, and its job's end would not reach the timer with Unit= changed: only a start does"
		return c
	case u.SubState == "elapsed" && o.Timer != nil && schedulesNothing(o.Timer, c.Keys):
		// Nothing left to schedule (onBoot only, fired, unchanged): a
		// start would only fire that onBoot again.
		return UnitChange{Keys: c.Keys}
	case u.SubState != "waiting" && u.SubState != "running":
		c.Why = u.SubState + ", only a start schedules it"
		return c
	}
	if why := p.timerSlotMissed(o, c, u); why != "" {
		c.Why, c.StopFirst = why, true
		return c
	}
	return UnitChange{Keys: c.Keys}
}

// schedulesNothing reports whether an elapsed timer with t's settings,
// keys changed, has nothing a start would schedule that it lacks: no
// trigger that fires again and again (a schedule, onUnitActive, or
// OnCalendar=, OnUnit*Sec=, OnClockChange=, OnTimezoneChange= through the
// systemd: passthrough), and no one-time trigger (onBoot, OnStartupSec=,
// OnActiveSec=, ...) set by this change. A trigger the change removed
// schedules nothing.
func schedulesNothing(t *desired.TimerSpec, keys []string) bool {
	if len(t.Schedule) > 0 || t.OnUnitActive.IsSet() {
		return false
	}
	pass := t.Systemd["Timer"]
	for k := range pass {
		switch k {
		case "OnCalendar", "OnUnitActiveSec", "OnUnitInactiveSec", "OnClockChange", "OnTimezoneChange":
			return false
		}
	}
	for _, k := range keys {
		_, set := pass[k]
		if strings.HasPrefix(k, "On") && (set || k == "OnBootSec" && t.OnBoot.IsSet()) {
			return false
		}
	}
	return true
}

// timerSlotMissed returns why a restart must replace the reload of a
// timer whose schedule changed ("" when none must; see timerChange).
func (p *planner) timerSlotMissed(o *desired.Object, c UnitChange, u *observed.Unit) string {
	t := o.Timer
	now := p.in.Observed.ReadAt
	if t == nil || !slices.Contains(c.Keys, "OnCalendar") || len(t.Schedule) == 0 || now.IsZero() {
		return ""
	}
	persistent := t.Persistent && t.CatchUp != desired.CatchUpSkip
	if u.LastTriggerUSec == 0 {
		// The base is the timer's start, which is not observed: a start
		// (from now, or the stamp) is what a reload would at best do.
		return "OnCalendar changed on a timer that has not triggered since it started: a reload schedules from that start; stopped before the reload, a start schedules from now"
	}
	last := time.UnixMicro(int64(u.LastTriggerUSec)).In(now.Location())
	due := nextRun(t.Schedule, last)
	if due.IsZero() || !due.Before(now) {
		return ""
	}
	at := fmt.Sprintf("the new schedule's run due %s, after the last trigger %s, would fire at once on reload",
		FormatUSec(uint64(due.UnixMicro()), LayoutMilli), FormatUSec(u.LastTriggerUSec, LayoutMilli))
	switch {
	case persistent:
		return at + "; stopped before the reload, a start applies catchUp and maxLateness to it"
	case t.OnBoot.IsSet():
		p.find(o.ID(), u.Name, ReasonTimerCatchUp, at+" (not restarted: a start would fire a past onBoot instead)", false, false)
		return ""
	}
	return at + "; stopped before the reload, a start schedules from now (not persistent: no catch-up)"
}

// nextRun is the earliest run of the schedules after t (zero: none).
func nextRun(schedule []string, t time.Time) time.Time {
	var first time.Time
	for _, expr := range schedule {
		spec, err := calendar.Parse(expr)
		if err != nil {
			continue // validated before
		}
		if next, ok := spec.Next(t); ok && (first.IsZero() || next.Before(first)) {
			first = next
		}
	}
	return first
}

// classify compares the old and new bytes of a unit file with the
// backend's classifier.
func (p *planner) classify(old, cur []byte) UnitChange {
	if p.in.Classify != nil {
		return p.in.Classify(old, cur)
	}
	return ClassifyUnitChange(old, cur)
}

// foreignDropIns reports drop-ins resil did not write; they are never
// deleted. One written since the last daemon-reload (PendingDropIns) is
// reported at once, with the same message as once loaded (one condition):
// the reload the pass plans for it, or anyone's, loads it.
func (p *planner) foreignDropIns(o *desired.Object, u *observed.Unit) {
	if u == nil {
		return
	}
	pending := len(u.DropInPaths)
	for i, d := range slices.Concat(u.DropInPaths, u.PendingDropIns) {
		data, ok := u.DropIns[d]
		if ok {
			if _, owned := ownmark.IsOwned(data); owned {
				continue
			}
		} else if i >= pending {
			continue // gone or unreadable since it was listed: nothing to report
		}
		p.find(o.ID(), u.Name, ReasonForeignDropIn, fmt.Sprintf("foreign drop-in %s overrides the manifest; reported, not removed", d), true, false)
	}
}

func (p *planner) rt(op actuators.Op, o *desired.Object, unit, reason string) {
	p.runtime = append(p.runtime, actuators.Step{Op: op, Object: o.ID(), Unit: unit, Reason: reason})
}

// static reports whether a rendered systemd unit has no [Install] section
// (wantedBy: []): systemd cannot enable it, so wanting it enabled means
// nothing, and an enable step would fail on every pass. (Process-backend
// files have no sections; enabled means started with the agent there.)
func (p *planner) static(data []byte) bool {
	if p.in.Observed == nil || p.in.Observed.Backend != "systemd" {
		return false
	}
	return !hasInstall(data)
}

// enable plans enable/disable; drift in the enablement is reported too.
// data is the rendered unit file: an enabled unit whose links are not
// where its [Install] section puts them (wantedBy changed, or a link
// added or removed by hand) is disabled and enabled again, what
// `systemctl reenable` does (disable removes every link of the unit).
func (p *planner) enable(o *desired.Object, unit string, want bool, fs fileState, u *observed.Unit, data []byte) {
	switch {
	case fs.deleted && !fs.written:
		// Its file deleted out of band and left so (drift policy
		// report): nothing to enable.
	case want && fs.deleted:
		// Its links were left with it (the unit file state reads as
		// none while the file is missing): enable re-checks them.
		if !u.Enabled() {
			p.rt(actuators.OpEnable, o, unit, "deleted out of band, restoring")
		}
	case want && (fs.isNew || u == nil):
		// A unit taken over from an enabled vendor unit is enabled already
		// (the symlink names the unit, not the file).
		if !u.Enabled() {
			p.rt(actuators.OpEnable, o, unit, "new unit")
		}
	case want && !u.Enabled() && strings.HasSuffix(unit, ".timer") && p.journaled(unit):
		// Most likely the agent's own disable (unloadFirst), its pass
		// killed before the enable: not drift, whatever the drift policy.
		// (Also re-enabled: a timer disabled by hand whose schedule
		// change stopped it, the pass killed before its start; rare, and
		// the timer is desired enabled.)
		p.rt(actuators.OpEnable, o, unit, "disabled for a schedule change's stop by an interrupted pass")
	case want && !u.Enabled():
		if u.UnitFileState != "" && !fs.written && u.UnitFileState != "enabled" && !p.in.StateChanged[o.ID()] {
			msg := fmt.Sprintf("%s is %s, want enabled", unit, u.UnitFileState)
			if o.DriftPolicy() == desired.DriftReport {
				p.find(o.ID(), unit, ReasonDisabled, msg+"; drift policy report: left as is", true, false)
				return
			}
			p.find(o.ID(), unit, ReasonDisabled, msg+"; enabling", true, true)
		}
		p.rt(actuators.OpEnable, o, unit, "disabled, want enabled")
	case want && u.InstallLinksKnown && !fs.edited:
		wantLinks, ok := installLinks(data)
		if !ok || slices.Equal(wantLinks, u.InstallLinks) {
			return
		}
		why := fmt.Sprintf("enabled in %s, want %s", strings.Join(u.InstallLinks, " "), strings.Join(wantLinks, " "))
		if !fs.written {
			// The file is as rendered: a link was added or removed by hand.
			if o.DriftPolicy() == desired.DriftReport {
				p.find(o.ID(), unit, ReasonEnablementDrift, unit+" is "+why+"; drift policy report: left as is", true, false)
				return
			}
			p.find(o.ID(), unit, ReasonEnablementDrift, unit+" is "+why+"; enabling again", true, true)
		}
		p.rt(actuators.OpDisable, o, unit, why)
		p.rt(actuators.OpEnable, o, unit, why)
	case !want && u != nil && u.Enabled():
		p.rt(actuators.OpDisable, o, unit, "enabled, want disabled")
	}
}

// installLinks returns the dependency directories enabling a unit file
// links it into (WantedBy=T: T.wants, RequiredBy=: .requires, UpheldBy=:
// .upholds), sorted, deduplicated; ok false when its [Install] section
// does more than that (Alias=, Also=, a specifier, an empty assignment),
// which only systemd's enable logic can tell.
func installLinks(data []byte) (links []string, ok bool) {
	ok = true
	eachUnitSetting(data, "Install", func(k unitKey, v string) bool {
		var suffix string
		switch k.key {
		case "WantedBy":
			suffix = ".wants"
		case "RequiredBy":
			suffix = ".requires"
		case "UpheldBy":
			suffix = ".upholds"
		}
		if suffix == "" || v == "" || strings.Contains(v, "%") {
			ok = false
			return false
		}
		for _, t := range strings.Fields(v) {
			links = append(links, t+suffix)
		}
		return true
	})
	if !ok {
		return nil, false
	}
	slices.Sort(links)
	return slices.Compact(links), true
}

// firstDifference names the first line where an edited file departs from
// the rendered one, so the drift event says what differed. A line of the
// agent's own X-Resil-Process-Since marker in got is no edit (the render
// has none) and is skipped; line numbers are got's, the file on disk.
func firstDifference(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i, j := 0, 0; i < len(g) || j < len(w); i, j = i+1, j+1 {
		if i < len(g) && strings.HasPrefix(g[i], ownmark.KeyProcessSince+"=") {
			j-- // the same line of want against got's next one
			continue
		}
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if j < len(w) {
			wl = w[j]
		}
		if gl != wl {
			return fmt.Sprintf("line %d is %q, want %q", i+1, gl, wl)
		}
	}
	return "no line differs"
}
