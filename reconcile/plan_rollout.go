package reconcile

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

// Rollouts of the agent's own restarts (Input.MaxParallelRestarts > 0).
// Input.Health nil (apply, diff: no probes run) counts an active service
// with a readiness probe as ready.
//
// A running service whose unit file changed so that its process must be
// restarted is a rollout candidate. The planner admits candidates, in plan
// order, only while fewer than MaxParallelRestarts of the rollout's
// members (Rollout.Members: the services it restarted so far, from the
// Reconciler's record, rollout_state.go) are not ready (restarting,
// starting, failing their readiness probe, younger than Rollout.MinReady).
// An admitted candidate gets its file written and its restart; the others
// keep their old file and process untouched and are reported
// RolloutPending. So waves form across passes: the pass after a wave finds
// its services not ready and admits nothing; a service becoming ready
// wakes the loop and the next pass admits the next wave (after
// Rollout.HoldUntil, the jitter gate). A killed agent resumes where the
// host is: a restarted service has its new file and is no candidate again.
//
// Candidates are admitted services-another-candidate-requires first, then
// in ID order. A member that is failed, or active but not ready for longer
// than RolloutReadyTimeout (default 5m), halts the rollout: no candidate
// is admitted while one is, and RolloutHalted names them. It resumes when
// they recover (a manifest fix restarts them, `reconciler reset`, a probe
// passing again) or when `reconciler rollout resume` acknowledges their
// failed version (Rollout.Acks). Plan.Rollout reports it all, with the
// later waves projected for diff.

// RolloutInput is the rollout state the planner gets from outside it.
type RolloutInput struct {
	// MinReady: a service counts as ready only once its process has run
	// this long (--min-ready), on top of its readiness probe or READY=1.
	MinReady time.Duration
	// HoldUntil: no wave is admitted before this time (the jitter between
	// waves; the Reconciler draws it, rollout_state.go).
	HoldUntil time.Time
	// Members are the services this rollout restarted so far (from the
	// rollout record): only they hold wave slots while not ready, and only
	// their failure halts the rollout. A service that failed on its own,
	// outside the rollout, does not stop other services' updates.
	Members map[string]bool
	// Acks are failures an operator let the rollout pass (`reconciler
	// rollout resume`): unit → the ownership-marker hash of the unit file
	// version that failed. While the unit still has that version, its
	// failure neither halts the rollout nor holds a wave slot.
	Acks map[string]string
	// Distrusted, when set, says why the rollout record on disk was
	// refused (not root's, writable by others, unreadable): who restarted
	// what is unknown, so any failed service halts the rollout, as a
	// member's failure does, rather than none (which would drop a halt an
	// earlier agent recorded); readiness of a non-member holds no slot.
	Distrusted string
}

// RolloutReport is the rollout a plan is part of: the services whose
// changed unit needs a restart of their running process, in waves.
type RolloutReport struct {
	// MaxParallel is --max-parallel-restarts.
	MaxParallel int `json:"maxParallel"`
	// Admitted are restarted by this plan (the current wave).
	Admitted []string `json:"admitted,omitempty"`
	// Waves are the later waves the pending services would form, in
	// order, if every wave becomes ready (what diff shows).
	Waves [][]string `json:"waves,omitempty"`
	// NotReady are desired-running services not ready (restarting,
	// starting, failing their readiness probe, younger than MinReady):
	// each holds a wave slot.
	NotReady []string `json:"notReady,omitempty"`
	// Failed are the services that halt the rollout.
	Failed []RolloutFailure `json:"failed,omitempty"`
	// Acknowledged are failures `reconciler rollout resume` let pass.
	Acknowledged []string `json:"acknowledged,omitempty"`
	// Halted: a failure holds every pending service on its previous version.
	Halted bool `json:"halted"`
	// HoldUntil is the jitter gate before the next wave (nil: none).
	HoldUntil *time.Time `json:"holdUntil,omitempty"`
	// ReadyAt is the earliest time a service younger than MinReady counts
	// as ready: the loop wakes then (zero: none).
	ReadyAt time.Time `json:"-"`
}

// Pending are the services not restarted yet (every later wave).
func (r *RolloutReport) Pending() []string {
	var out []string
	for _, w := range r.Waves {
		out = append(out, w...)
	}
	return out
}

// RolloutFailure is one service that halts a rollout.
type RolloutFailure struct {
	Unit   string `json:"unit"`
	Object string `json:"object"`
	// Why: "failed", WhyCrashed, or "not ready within 5m0s".
	Why string `json:"why"`
	// Hash identifies the unit file version that failed (its ownership
	// marker), which `rollout resume` acknowledges.
	Hash string `json:"hash,omitempty"`
}

// WhyCrashed is the RolloutFailure.Why of a service the rollout restarted
// that its restart policy restarted since (it crashed, and may recover
// between crashes).
const WhyCrashed = "crashed since its restart"

func (f RolloutFailure) String() string {
	if f.Why == "failed" {
		return f.Unit
	}
	return f.Unit + " (" + f.Why + ")"
}

// rolloutState is the planner's admission state for one Compute.
type rolloutState struct {
	admitted map[string]bool // candidate units restarted this pass
	failed   []RolloutFailure
	held     bool // HoldUntil is in the future: no wave now
	report   RolloutReport
	cands    []*desired.Object
	// pending are the held candidates, for the summary finding.
	pending []string
}

// planNow is the time readiness is judged at: when the observation
// finished, else the pass's time.
func (p *planner) planNow() time.Time {
	if p.in.Observed != nil && !p.in.Observed.ReadAt.IsZero() {
		return p.in.Observed.ReadAt
	}
	return p.in.Now
}

// initRollout counts the not-ready and failed services once per Compute.
func (p *planner) initRollout(objs []*desired.Object) {
	if p.in.MaxParallelRestarts <= 0 {
		return
	}
	r := &rolloutState{admitted: map[string]bool{}, report: RolloutReport{MaxParallel: p.in.MaxParallelRestarts}}
	notReady := 0
	now := p.planNow()
	// holding are the members not ready or failed: a new version of one
	// of them (a fix) is admitted at once, whatever the slots and the
	// halt, since its restart replaces a process that already holds a
	// slot or halts the rollout; holding it back would keep the broken
	// version, and the halt, for good.
	holding := map[string]bool{}
	for _, o := range objs {
		if o.Service == nil || o.Service.DesiredState() != desired.StateRunning || p.jobs[o.Metadata.Name+".service"] != "" {
			continue
		}
		unit := o.Metadata.Name + ".service"
		u := p.unit(unit)
		// A paused object (pause lease) is no candidate: its restart is withheld.
		if files := p.in.Files[o.ID()]; len(files) > 0 && p.lease(o.ID()) == nil && p.rolloutCandidate(o, files[0], u) {
			r.cands = append(r.cands, o)
		}
		// Membership unknown (the record refused): a failed service
		// halts the rollout, as if the rollout had restarted it; its
		// readiness holds no slot (a oneshot, or a service left stopped
		// under drift: report, is never ready and would hold one for good).
		unknown := !p.in.Rollout.Members[unit] && p.in.Rollout.Distrusted != ""
		if !p.in.Rollout.Members[unit] && !unknown {
			continue
		}
		if done(u, o.Service) {
			// Done (Exited): settled, neither ready nor holding a slot.
			continue
		}
		var fail *RolloutFailure
		switch {
		case u != nil && u.ActiveState == "failed":
			fail = &RolloutFailure{Unit: unit, Object: o.ID(), Why: "failed"}
		case unknown:
		case p.neverReady(o, u):
			fail = &RolloutFailure{Unit: unit, Object: o.ID(), Why: "not ready within " + p.readyTimeout().String()}
		case u != nil && u.NRestarts > 0:
			// Restarted by its policy since the rollout's restart (a
			// start by a job zeroes NRestarts, on systemd and the process
			// backend alike): the new version crashed. Its start limit
			// may be far off (a long restart delay never reaches it), and
			// between crashes it reads active, or ready, and would free
			// its slot for the next wave.
			fail = &RolloutFailure{Unit: unit, Object: o.ID(), Why: WhyCrashed}
		}
		if fail != nil && p.fixing(o, u) {
			// A new version of a failed service: this pass starts it at
			// once (not paced: the failure already holds a slot). It holds
			// its slot until ready and halts nothing: the pass that wrote
			// the fix recorded RolloutHalted and held the others.
			fail = nil
		}
		if fail != nil && u.File != nil {
			fail.Hash, _ = ownmark.HashOf(u.File)
		}
		if fail != nil && fail.Hash != "" && p.in.Rollout.Acks[unit] == fail.Hash {
			// Let pass by `rollout resume`: neither halts nor holds a slot.
			r.report.Acknowledged = append(r.report.Acknowledged, unit)
			continue
		}
		if fail != nil {
			r.failed = append(r.failed, *fail)
			holding[unit] = true
		}
		if unknown {
			continue
		}
		ready := Readiness(o, p.in.Observed, p.in.Health)
		if ready == ReadyUnknown && p.in.Health == nil {
			// No probes run (apply, diff): an active service counts as
			// ready, so diff plans the wave run would.
			ready = ReadyYes
		}
		if ready == ReadyYes && p.in.Rollout.MinReady > 0 && u != nil && u.ExecMainStartTimestamp != 0 && !now.IsZero() {
			if at := time.UnixMicro(int64(u.ExecMainStartTimestamp)).Add(p.in.Rollout.MinReady); now.Before(at) {
				ready = ReadyNo
				if r.report.ReadyAt.IsZero() || at.Before(r.report.ReadyAt) {
					r.report.ReadyAt = at
				}
			}
		}
		if ready != ReadyYes {
			notReady++
			r.report.NotReady = append(r.report.NotReady, unit)
			holding[unit] = true
		}
	}
	for _, o := range r.cands {
		if unit := o.Metadata.Name + ".service"; holding[unit] {
			r.admitted[unit] = true
			r.failed = slices.DeleteFunc(r.failed, func(f RolloutFailure) bool { return f.Unit == unit })
		}
	}
	slots := max(p.in.MaxParallelRestarts-notReady, 0)
	if hu := p.in.Rollout.HoldUntil; !hu.IsZero() && p.in.Now.Before(hu) {
		r.held, r.report.HoldUntil = true, &hu
		slots = 0
	}
	if len(r.failed) > 0 {
		slots = 0
	}
	if d := p.in.Rollout.Distrusted; d != "" && (len(r.cands) > 0 || len(r.failed) > 0) {
		p.find("", "", ReasonRolloutPending, "rollout record refused ("+d+"): which services the rollout restarted is unknown, so any failed service halts it, until the file is fixed or removed", true, false)
	}
	for _, o := range admissible(r.cands) {
		if slots == 0 {
			break
		}
		if unit := o.Metadata.Name + ".service"; !r.admitted[unit] {
			r.admitted[unit] = true
			slots--
		}
	}
	p.rollout = r
}

// waves projects the candidates not admitted now into the later waves
// they would form if every wave becomes ready: MaxParallelRestarts at a
// time, services another one requires first.
func (r *rolloutState) waves(size int) [][]string {
	var rest []*desired.Object
	for _, o := range r.cands {
		if !r.admitted[o.Metadata.Name+".service"] {
			rest = append(rest, o)
		}
	}
	var out [][]string
	for len(rest) > 0 {
		adm := admissible(rest)
		if len(adm) == 0 { // cannot happen (a cycle is admissible); never loop
			adm = rest
		}
		if len(adm) > size {
			adm = adm[:size]
		}
		taken := map[string]bool{}
		var wave []string
		for _, o := range adm {
			taken[o.ID()] = true
			wave = append(wave, o.Metadata.Name+".service")
		}
		out = append(out, wave)
		var next []*desired.Object
		for _, o := range rest {
			if !taken[o.ID()] {
				next = append(next, o)
			}
		}
		rest = next
	}
	return out
}

// admissible are the candidates that require no other candidate, in ID
// order: a service another one requires is restarted in an earlier wave
// than it (under systemd, restarting it restarts its dependents too). Once
// restarted it is no candidate, and its dependents become admissible. In a
// requires cycle every member is admissible.
func admissible(cands []*desired.Object) []*desired.Object {
	byUnit := map[string]bool{}
	for _, o := range cands {
		byUnit[o.Metadata.Name+".service"] = true
	}
	var out []*desired.Object
	for _, o := range cands {
		free := true
		for _, req := range o.Service.Requires {
			if byUnit[req] && !requiresBack(cands, req, o.Metadata.Name+".service") {
				free = false
			}
		}
		if free {
			out = append(out, o)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// requiresBack reports whether candidate unit from requires target,
// directly or through other candidates (a cycle).
func requiresBack(cands []*desired.Object, from, target string) bool {
	byUnit := map[string]*desired.Object{}
	for _, o := range cands {
		byUnit[o.Metadata.Name+".service"] = o
	}
	seen := map[string]bool{}
	var walk func(u string) bool
	walk = func(u string) bool {
		if u == target {
			return true
		}
		if seen[u] || byUnit[u] == nil {
			return false
		}
		seen[u] = true
		for _, r := range byUnit[u].Service.Requires {
			if walk(r) {
				return true
			}
		}
		return false
	}
	return walk(from)
}

// DefaultRolloutReadyTimeout is how long a running service may stay not
// ready before it halts a rollout (Input.RolloutReadyTimeout 0).
const DefaultRolloutReadyTimeout = 5 * time.Minute

func (p *planner) readyTimeout() time.Duration {
	if p.in.RolloutReadyTimeout > 0 {
		return p.in.RolloutReadyTimeout
	}
	return DefaultRolloutReadyTimeout
}

// neverReady reports a service whose process has run longer than the
// ready timeout without becoming ready (its readiness probe fails): like
// a failed one, it halts the rollout.
func (p *planner) neverReady(o *desired.Object, u *observed.Unit) bool {
	if u == nil || u.ActiveState != "active" || u.ExecMainStartTimestamp == 0 || p.in.Observed.ReadAt.IsZero() || p.in.Health == nil {
		return false
	}
	if Readiness(o, p.in.Observed, p.in.Health) != ReadyNo {
		return false
	}
	started := time.UnixMicro(int64(u.ExecMainStartTimestamp))
	return p.in.Observed.ReadAt.Sub(started) > p.readyTimeout()
}

// rolloutCandidate reports whether f changed so that the running process
// of o must restart (a file edited out of band is restored at once, a
// reload-only change restarts nothing: neither is paced).
func (p *planner) rolloutCandidate(o *desired.Object, f desired.UnitFile, u *observed.Unit) bool {
	if u == nil || u.ActiveState != "active" || u.MainPID == 0 || u.File == nil {
		return false
	}
	if owner, ok := ownmark.IsOwned(u.File); !ok || owner != o.ID() {
		return false
	}
	// The file as rendered is the common case (a converged service):
	// compared first, the hash of the file on disk (a sha256 per service,
	// twice a pass: initRollout and service) is computed only for a file
	// that differs.
	if bytes.Equal(ownmark.WithoutProcessSince(u.File), f.Data) {
		return false
	}
	if _, intact := ownmark.HashOf(u.File); !intact {
		return false
	}
	return p.classify(u.File, f.Data).Restart || u.StaleProcess
}

// fixing reports whether this pass writes a new version of o's unit file
// that its process must run: a failed service of the rollout gets it
// started at once (a manifest change is the fix).
func (p *planner) fixing(o *desired.Object, u *observed.Unit) bool {
	files := p.in.Files[o.ID()]
	if u == nil || u.File == nil || len(files) == 0 || p.lease(o.ID()) != nil {
		return false
	}
	if owner, ok := ownmark.IsOwned(u.File); !ok || owner != o.ID() {
		return false
	}
	if bytes.Equal(ownmark.WithoutProcessSince(u.File), files[0].Data) {
		return false
	}
	return p.classify(u.File, files[0].Data).Restart
}

// holdForRollout reports whether the restart of a running service for its
// changed file f must wait for a later wave; if so it reports it pending
// and the caller leaves the object alone this pass (old file, old
// process). An admitted candidate takes a slot.
//
// A paused object is no candidate (initRollout): its steps are planned
// and then withheld by the lease, which reports them (Paused).
func (p *planner) holdForRollout(o *desired.Object, f desired.UnitFile, u *observed.Unit) bool {
	r := p.rollout
	if r == nil || p.lease(o.ID()) != nil || !p.rolloutCandidate(o, f, u) {
		return false
	}
	switch {
	case r.admitted[f.Name]:
		return false
	case len(r.failed) > 0:
		p.find(o.ID(), f.Name, ReasonRolloutPending, fmt.Sprintf("%s keeps its previous version: the rollout is halted (%s failed)", f.Name, failedList(r.failed)), false, false)
	case r.held:
		p.find(o.ID(), f.Name, ReasonRolloutPending, fmt.Sprintf("%s keeps its previous version until the next wave at %s (jitter between waves)", f.Name, r.report.HoldUntil.UTC().Format(time.RFC3339)), false, false)
	default:
		p.find(o.ID(), f.Name, ReasonRolloutPending, fmt.Sprintf("%s keeps its previous version until a wave slot frees (at most %d services restarting or not ready)", f.Name, p.in.MaxParallelRestarts), false, false)
	}
	r.pending = append(r.pending, f.Name)
	return true
}

func failedList(fs []RolloutFailure) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.String()
	}
	return strings.Join(parts, ", ")
}

// finishRollout reports a halted rollout once per pass, naming the failed
// services and what is pending, and returns the plan's rollout report
// (nil when every desired-running service is ready and none waits for or
// gets a paced restart).
func (p *planner) finishRollout() *RolloutReport {
	r := p.rollout
	if r == nil || len(r.cands) == 0 && len(r.report.NotReady) == 0 && len(r.failed) == 0 && len(r.report.Acknowledged) == 0 {
		return nil
	}
	rep := r.report
	for _, o := range r.cands {
		if u := o.Metadata.Name + ".service"; r.admitted[u] {
			rep.Admitted = append(rep.Admitted, u)
		}
	}
	rep.Waves = r.waves(p.in.MaxParallelRestarts)
	rep.Failed = r.failed
	// A failure halts the rollout even in its last wave (nothing pending):
	// it is never complete, and "in progress" would hide it for good.
	rep.Halted = len(r.failed) > 0
	if rep.Halted {
		sort.Strings(r.pending)
		pending := "nothing pending (the last wave)"
		if len(r.pending) > 0 {
			pending = fmt.Sprintf("%d pending: %s", len(r.pending), strings.Join(r.pending, ", "))
		}
		p.find("", "", ReasonRolloutHalted, fmt.Sprintf("rollout halted: %s failed; %s", failedList(r.failed), pending), true, false)
	}
	return &rep
}
