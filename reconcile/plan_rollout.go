package reconcile

import (
	"bytes"
	"fmt"
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
// order, only while fewer than MaxParallelRestarts desired-running
// services are not ready (restarting, starting, or active with a failing
// readiness probe: every not-ready service counts, like a Deployment's
// maxUnavailable). An admitted candidate gets its file written and its
// restart; the others keep their old file and process untouched and are
// reported RolloutPending. So waves form across passes, level-triggered:
// the pass after a wave finds its services not ready and admits nothing;
// a service becoming ready (its probe, READY=1, or active) wakes the loop
// and the next pass admits the next wave. A killed agent resumes where the
// host is: a restarted service has its new file and is no candidate again.
//
// Candidates are admitted services-another-candidate-requires first, then
// in ID order. A desired-running service that is failed, or active but not
// ready for longer than RolloutReadyTimeout (default 5m), halts the
// rollout: no candidate is admitted while one is, and RolloutHalted names
// them. It resumes when they recover (a manifest fix restarts them,
// `reconciler reset`, a probe passing again).

// rolloutState is the planner's admission state for one Compute.
type rolloutState struct {
	admitted map[string]bool // candidate units restarted this pass
	failed   []string        // failed or never-ready services: the rollout halts
	// pending are the held candidates, for the summary finding.
	pending []string
}

// initRollout counts the not-ready and failed services once per Compute.
func (p *planner) initRollout(objs []*desired.Object) {
	if p.in.MaxParallelRestarts <= 0 {
		return
	}
	r := &rolloutState{admitted: map[string]bool{}}
	notReady := 0
	var cands []*desired.Object
	for _, o := range objs {
		if o.Service == nil || o.Service.DesiredState() != desired.StateRunning || p.jobs[o.Metadata.Name+".service"] != "" {
			continue
		}
		unit := o.Metadata.Name + ".service"
		u := p.unit(unit)
		// A paused object (pause lease) is no candidate: its restart is withheld.
		if files := p.in.Files[o.ID()]; len(files) > 0 && p.lease(o.ID()) == nil && p.rolloutCandidate(o, files[0], u) {
			cands = append(cands, o)
		}
		switch {
		case u != nil && u.ActiveState == "failed":
			r.failed = append(r.failed, unit)
		case p.neverReady(o, u):
			r.failed = append(r.failed, unit+" (not ready within "+p.readyTimeout().String()+")")
		}
		ready := Readiness(o, p.in.Observed, p.in.Health)
		if ready == ReadyUnknown && p.in.Health == nil {
			// No probes run (apply, diff): an active service counts as
			// ready, so diff plans the wave run would.
			ready = ReadyYes
		}
		if ready != ReadyYes {
			notReady++
		}
	}
	slots := max(p.in.MaxParallelRestarts-notReady, 0)
	for _, o := range admissible(cands) {
		if slots == 0 {
			break
		}
		r.admitted[o.Metadata.Name+".service"] = true
		slots--
	}
	p.rollout = r
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
	if _, intact := ownmark.HashOf(u.File); !intact || bytes.Equal(ownmark.WithoutProcessSince(u.File), f.Data) {
		return false
	}
	return p.classify(u.File, f.Data).Restart || u.StaleProcess
}

// holdForRollout reports whether the restart of a running service for its
// changed file f must wait for a later wave; if so it reports it pending
// and the caller leaves the object alone this pass (old file, old
// process). An admitted candidate takes a slot.
func (p *planner) holdForRollout(o *desired.Object, f desired.UnitFile, u *observed.Unit) bool {
	r := p.rollout
	if r == nil || !p.rolloutCandidate(o, f, u) {
		return false
	}
	switch {
	case len(r.failed) > 0:
		p.find(o.ID(), f.Name, ReasonRolloutPending, fmt.Sprintf("%s keeps its previous version: the rollout is halted (%s failed)", f.Name, strings.Join(r.failed, ", ")), false, false)
	case r.admitted[f.Name]:
		return false
	default:
		p.find(o.ID(), f.Name, ReasonRolloutPending, fmt.Sprintf("%s keeps its previous version until a wave slot frees (at most %d services restarting or not ready)", f.Name, p.in.MaxParallelRestarts), false, false)
	}
	r.pending = append(r.pending, f.Name)
	return true
}

// finishRollout reports a halted rollout once per pass, naming the failed
// services and what is pending.
func (p *planner) finishRollout() {
	r := p.rollout
	if r == nil || len(r.failed) == 0 || len(r.pending) == 0 {
		return
	}
	sort.Strings(r.pending)
	p.find("", "", ReasonRolloutHalted, fmt.Sprintf("rollout halted: %s failed; %d pending: %s", strings.Join(r.failed, ", "), len(r.pending), strings.Join(r.pending, ", ")), true, false)
}
