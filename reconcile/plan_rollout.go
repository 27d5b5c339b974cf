package reconcile

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

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
// A desired-running service that is failed halts the rollout: no
// candidate is admitted while one is, and RolloutHalted names the failed
// services. It resumes when they recover (a manifest fix restarts them,
// `reconciler reset`).

// rolloutState is the planner's admission state for one Compute.
type rolloutState struct {
	slots  int      // candidates that may still be admitted this pass
	failed []string // failed desired-running services: the rollout halts
	// pending are the held candidates, for the summary finding.
	pending []string
}

// initRollout counts the not-ready and failed services once per Compute.
func (p *planner) initRollout(objs []*desired.Object) {
	if p.in.MaxParallelRestarts <= 0 {
		return
	}
	r := &rolloutState{}
	notReady := 0
	for _, o := range objs {
		if o.Service == nil || o.Service.DesiredState() != desired.StateRunning || p.jobs[o.Metadata.Name+".service"] != "" {
			continue
		}
		unit := o.Metadata.Name + ".service"
		u := p.unit(unit)
		if u != nil && u.ActiveState == "failed" {
			r.failed = append(r.failed, unit)
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
	r.slots = max(p.in.MaxParallelRestarts-notReady, 0)
	p.rollout = r
}

// holdForRollout reports whether the restart of a running service for its
// changed file f must wait for a later wave; if so it reports it pending
// and the caller leaves the object alone this pass (old file, old
// process). An admitted candidate takes a slot.
func (p *planner) holdForRollout(o *desired.Object, f desired.UnitFile, u *observed.Unit) bool {
	r := p.rollout
	if r == nil || u == nil || u.ActiveState != "active" || u.MainPID == 0 || u.File == nil {
		return false
	}
	if owner, ok := ownmark.IsOwned(u.File); !ok || owner != o.ID() {
		return false
	}
	if _, intact := ownmark.HashOf(u.File); !intact || bytes.Equal(ownmark.WithoutProcessSince(u.File), f.Data) {
		return false // edited out of band (restored at once), or unchanged
	}
	if !p.classify(u.File, f.Data).Restart && !u.StaleProcess {
		return false // reload only: no restart to pace
	}
	switch {
	case len(r.failed) > 0:
		p.find(o.ID(), f.Name, ReasonRolloutPending, fmt.Sprintf("%s keeps its previous version: the rollout is halted (%s failed)", f.Name, strings.Join(r.failed, ", ")), false, false)
	case r.slots > 0:
		r.slots--
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
