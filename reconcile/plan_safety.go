package reconcile

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"resil.dev/resil/actuators"
)

// SafetyInput is what the planner needs for the operator's safety rails
// (issue 14): pause leases, the mass-prune guard and delayed prune. It is
// plain data, read before the pass; the zero value turns them all off.
type SafetyInput struct {
	// Now is the time the pass plans at (lease expiry, prune deadlines).
	Now time.Time `json:"-"`
	// Leases are the pause leases; those not active at Now are ignored.
	Leases []Lease `json:"-"`
	// MaxPrune is the share of owned objects (0..1) a pass may prune when
	// it prunes more than one; 0 turns the guard off.
	MaxPrune float64 `json:"-"`
	// AllowPrune lets a blocked prune of at most this many objects
	// through (apply --allow-prune N).
	AllowPrune int `json:"-"`
	// ConfirmedPrune are object IDs an operator confirmed for pruning
	// (reconciler prune --confirm): a blocked prune of only these goes
	// through.
	ConfirmedPrune map[string]bool `json:"-"`
	// PruneGrace keeps an object whose manifest disappeared for this long
	// before it is pruned; PrunePending are the deadlines set so far (by
	// object ID).
	PruneGrace   time.Duration        `json:"-"`
	PrunePending map[string]time.Time `json:"-"`
	// PruneHeld are the objects an earlier pass's mass-prune guard blocked
	// and nothing released since, by ID, with when the guard first held
	// them (SafetyReport.PruneHeld of the last applying pass, persisted in
	// prune-held.json). While one of them is due for pruning the guard
	// blocks the pass's prunes whatever their share of the owned objects:
	// the objects the blocked pass created count as owned in the passes
	// after it, so the share alone would let the same prune through.
	PruneHeld map[string]time.Time `json:"-"`
}

// SafetyReport is what the safety rails did to a plan.
type SafetyReport struct {
	// Paused are the objects under a lease, with the steps withheld from
	// the plan (what it would do without the lease).
	Paused []PausedObject `json:"paused,omitempty"`
	// PruneBlocked is set when the mass-prune guard held back this pass's
	// prunes.
	PruneBlocked *PruneBlock `json:"pruneBlocked,omitempty"`
	// PrunePending are the prune deadlines in force after this pass (by
	// object ID): objects whose manifest is gone, kept until then. The
	// caller persists them.
	PrunePending map[string]time.Time `json:"prunePending,omitempty"`
	// Pruned are the object IDs this plan prunes.
	Pruned []string `json:"pruned,omitempty"`
	// PruneHeld are the objects the mass-prune guard holds after this pass
	// (see SafetyInput.PruneHeld): those of this pass's block, and those
	// held before that are still owned and still not desired, less what
	// this pass prunes. The caller persists them.
	PruneHeld map[string]time.Time `json:"pruneHeld,omitempty"`
}

// PausedObject is one paused object and the steps withheld from the plan.
type PausedObject struct {
	Object   string           `json:"object"`
	Lease    Lease            `json:"lease"`
	Withheld []actuators.Step `json:"withheld,omitempty"`
}

// PruneBlock says why the mass-prune guard held back a pass's prunes.
type PruneBlock struct {
	// Objects would have been pruned (IDs, sorted); Owned is how many
	// objects the agent owns on the host.
	Objects []string `json:"objects"`
	Owned   int      `json:"owned"`
	// Max is the share the guard allows.
	Max float64 `json:"max"`
	// OverShare: Objects are more than Max of Owned (and more than one);
	// the share alone blocks them.
	OverShare bool `json:"overShare"`
	// Held are the objects of Objects an earlier pass's block held
	// (SafetyInput.PruneHeld), since HeldSince.
	Held      []string  `json:"held,omitempty"`
	HeldSince time.Time `json:"heldSince,omitempty"`
	Why       string    `json:"why"`
	// Steps are the prune steps held back.
	Steps []actuators.Step `json:"steps"`
}

// NextWake is when a pass is due for the safety rails: the earliest
// future lease expiry or prune deadline after now; zero when none.
func (in SafetyInput) NextWake(after SafetyReport) time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if t.After(in.Now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, l := range in.Leases {
		consider(l.Until)
	}
	for _, d := range after.PrunePending {
		consider(d)
	}
	return next
}

// lease returns the lease pausing the object with this ID at Now, if any.
func (p *planner) lease(id string) *Lease {
	for i, l := range p.in.Leases {
		if l.Active(p.in.Now) && l.Covers(id) {
			return &p.in.Leases[i]
		}
	}
	return nil
}

// mark is where the planner's step lists stood before one object was
// planned, so its steps can be taken out again (withhold).
type mark struct {
	pre, preWhy, stops, files, manager, runtime, findings, why int
	reload                                                     bool
}

func (p *planner) mark() mark {
	return mark{pre: len(p.pre), preWhy: len(p.preReloadWhy), stops: len(p.stops), files: len(p.files), manager: len(p.manager), runtime: len(p.runtime),
		findings: len(p.findings), why: len(p.reloadWhy), reload: p.reload}
}

// corrections are the endings an enforced finding's message gives its
// correction with ("...; starting").
var corrections = []string{"; restoring", "; starting", "; restarting", "; enabling", "; stopping", "; re-enabling"}

// withoutCorrection is an enforced finding's message without the
// correction it announces: a paused object's drift is not corrected, and
// "starting; not corrected" said both.
func withoutCorrection(msg string) string {
	for _, c := range corrections {
		if strings.HasSuffix(msg, c) {
			return strings.TrimSuffix(msg, c)
		}
	}
	return msg
}

// withhold takes the steps planned since m out of the plan, because the
// object id is paused by l: they are reported (SafetyReport.Paused), and
// the drift they would have corrected is recorded as DriftReported naming
// the lease. A daemon-reload only they asked for goes too.
func (p *planner) withhold(m mark, id string, l Lease) {
	var held []actuators.Step
	held = append(held, p.pre[m.pre:]...)
	p.pre, p.preReloadWhy = p.pre[:m.pre], p.preReloadWhy[:m.preWhy]
	held = append(held, p.stops[m.stops:]...)
	held = append(held, p.files[m.files:]...)
	held = append(held, p.manager[m.manager:]...)
	held = append(held, p.runtime[m.runtime:]...)
	p.stops, p.files, p.manager, p.runtime = p.stops[:m.stops], p.files[:m.files], p.manager[:m.manager], p.runtime[:m.runtime]
	p.reload, p.reloadWhy = m.reload, p.reloadWhy[:m.why]
	desc := l.Describe(p.in.Now)
	for i := m.findings; i < len(p.findings); i++ {
		f := &p.findings[i]
		if f.Object == id && f.Warning && f.Enforced {
			f.Message = fmt.Sprintf("%s: %s; not corrected: %s", f.Reason, withoutCorrection(f.Message), desc)
			f.Reason, f.Enforced = ReasonDriftReported, false
		}
	}
	po := p.held[id]
	if po == nil {
		po = &PausedObject{Object: id, Lease: l}
		p.held[id] = po
	}
	po.Withheld = append(po.Withheld, held...)
}

// pausedReport adds one Paused finding per paused object (its lease and
// what it would do) and returns the report, sorted by object.
func (p *planner) pausedReport() []PausedObject {
	ids := make([]string, 0, len(p.held))
	for id := range p.held {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]PausedObject, 0, len(ids))
	for _, id := range ids {
		po := p.held[id]
		msg := po.Lease.Describe(p.in.Now)
		if len(po.Withheld) == 0 {
			msg += "; nothing to do"
		} else {
			steps := make([]string, len(po.Withheld))
			for i, s := range po.Withheld {
				steps[i] = s.String()
			}
			msg += "; would: " + strings.Join(steps, "; ")
		}
		p.find(id, "", ReasonPaused, msg, false, false)
		out = append(out, *po)
	}
	return out
}

// guardPrune decides whether the objects due for pruning may be pruned.
// The guard blocks the pass's prunes when they are more than one object
// and more than MaxPrune of the owned ones, or when one of them is held by
// an earlier block (PruneHeld): a block holds until it is confirmed or its
// objects are desired again, not only until the share drops (the objects
// the blocked pass created raise the owned count). AllowPrune, or a
// ConfirmedPrune naming every due object, lets it through; MaxPrune 0
// turns the guard off.
//
//	          share > MaxPrune (and more than one object)
//	ordinary ──────────────────────────────────────────▶ blocked (its objects held) ──┐
//	  ▲  ▲                                                 │      │       ▲            │ next pass, a held object
//	  │  │ confirmed (prune --confirm, apply --allow-prune) │      │       └────────────┘ still due: blocked again,
//	  │  └─────────────────────────────────────────────────┘      │                      whatever the share (a due
//	  └──────────── every held object desired again, or gone ─────┘                      object it did not hold waits
//	                                                                                     with it, is not held after)
func (p *planner) guardPrune(due []string, owned int) *PruneBlock {
	n := len(due)
	if p.in.MaxPrune <= 0 || n == 0 {
		return nil
	}
	var held []string
	var since time.Time
	for _, id := range due {
		if t, ok := p.in.PruneHeld[id]; ok {
			held = append(held, id)
			if since.IsZero() || t.Before(since) {
				since = t
			}
		}
	}
	over := p.overShare(n, owned)
	if !over && len(held) == 0 {
		return nil
	}
	if p.in.AllowPrune >= n {
		return nil
	}
	if len(p.in.ConfirmedPrune) > 0 {
		all := true
		for _, id := range due {
			all = all && p.in.ConfirmedPrune[id]
		}
		if all {
			return nil
		}
	}
	let := fmt.Sprintf("(`reconciler prune --confirm` lets it through once; with no agent running, `apply --allow-prune %d` too)", n)
	b := &PruneBlock{Objects: due, Owned: owned, Max: p.in.MaxPrune, OverShare: over, Held: held, HeldSince: since}
	if over {
		b.Why = fmt.Sprintf("would prune %d of %d owned objects, more than --max-prune %s; nothing pruned %s",
			n, owned, FormatShare(p.in.MaxPrune), let)
		return b
	}
	b.Why = fmt.Sprintf("would prune %d of %d owned objects; the guard has held %s since %s and nothing confirmed it; nothing pruned until it is confirmed or they are desired again %s",
		n, owned, strings.Join(held, ", "), since.UTC().Format(LayoutMilli), let)
	return b
}

// overShare reports whether pruning n of owned objects is more than
// --max-prune allows (more than one object, and over the share).
func (p *planner) overShare(n, owned int) bool {
	return n > 1 && float64(n) > p.in.MaxPrune*float64(owned)
}

// FormatShare renders a share as a percentage: 0.5 → "50%".
func FormatShare(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", f*100), "0"), ".") + "%"
}
