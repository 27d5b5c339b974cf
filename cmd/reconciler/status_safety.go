package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/store"
)

// StatePrunePending is the status of an object whose manifest is gone and
// that --prune-grace keeps until its deadline (not an ObjectState of a
// desired object: it is no longer desired).
const StatePrunePending = "PrunePending"

// StatePruneBlocked is the status of an object whose manifest is gone and
// that the mass-prune guard kept (PruneBlocked): not converged, it needs
// an operator (prune --confirm, or its manifest back).
const StatePruneBlocked = "PruneBlocked"

// pendingStatuses are the snapshot rows of the objects a pass keeps
// although their manifest is gone: until their prune deadline, because
// the mass-prune guard blocked their prune, or because a pause lease
// withholds it. It does no I/O.
func pendingStatuses(res reconcile.Result, now time.Time) []store.ObjectStatus {
	var out []store.ObjectStatus
	desiredIDs := map[string]bool{}
	for _, o := range res.Desired {
		desiredIDs[o.ID()] = true
	}
	for _, f := range res.Plan.Findings {
		switch {
		case f.Reason == reconcile.ReasonPrunePending:
			out = append(out, goneRow(res, f.Object, StatePrunePending, string(f.Reason)+": "+f.Message, now))
		case f.Reason == reconcile.ReasonPaused && f.Object != "" && !desiredIDs[f.Object]:
			// Its manifest is gone while paused: the prune waits for the
			// lease to end; the row shows it until then.
			out = append(out, goneRow(res, f.Object, string(reconcile.StatePaused), string(f.Reason)+": "+f.Message+" (its prune waits)", now))
		}
	}
	if b := res.Plan.PruneBlocked; b != nil {
		for _, id := range b.Objects {
			out = append(out, goneRow(res, id, StatePruneBlocked, string(reconcile.ReasonPruneBlocked)+": "+b.Why, now))
		}
	}
	return out
}

// goneRow is the row of an object no manifest declares that still runs.
func goneRow(res reconcile.Result, id, state, msg string, now time.Time) store.ObjectStatus {
	kind, name, _ := strings.Cut(id, "/")
	row := store.ObjectStatus{Object: id, Kind: kind, Name: name, Updated: now, Desired: "absent", Observed: "unknown",
		State: state, Message: msg}
	if res.Observed != nil {
		row.Observed = "absent" // nothing of it runs (an invalid new object's row)
		var units []string
		for n, u := range res.Observed.Units {
			if u.Owner == id {
				units = append(units, n)
			}
		}
		sort.Strings(units)
		if len(units) > 0 {
			// The object's own unit (a Timer's NAME.timer, not its inline
			// job's NAME.service), else the first.
			pick := units[0]
			if own := reconcile.OwnUnit(id); slices.Contains(units, own) {
				pick = own
			}
			row.Unit, row.Observed = pick, unitWord(res.Observed.Units[pick])
		}
	}
	return row
}

// addSafety marks the rows of objects paused right now (from the lease
// files, so a pause shows before the agent's next pass) and the prune
// deadlines of pending rows (from the state dir; "" reads nothing).
func addSafety(rep *statusReport, stateDir string, now time.Time) {
	if stateDir == "" {
		return
	}
	leases, _ := reconcile.NewLeaseDir(stateDir).List()
	var pending map[string]time.Time
	if b, err := desired.ReadTrusted(filepath.Join(stateDir, reconcile.PrunePendingFileName)); err == nil { // as the agent reads it
		_ = json.Unmarshal(b, &pending)
	}
	for i := range rep.Objects {
		row := &rep.Objects[i]
		for _, l := range leases {
			// The agent ends a lease at its --max-lease after it was
			// taken, whatever the file says (reconcile.Safety.MaxLease).
			if m := rep.Agent.MaxLease; m > 0 && l.Until.After(l.Since.Add(m)) {
				l.Until = l.Since.Add(m)
			}
			if l.Active(now) && l.Covers(row.Object) {
				row.Paused = &l
				break
			}
		}
		if d, ok := pending[row.Object]; ok && row.State == StatePrunePending {
			row.PruneAt = &d
		}
	}
}

// safetyWord is what the OBSERVED column adds for a paused or pending row
// ("" for others).
func safetyWord(o statusRow, now time.Time) string {
	switch {
	case o.Paused != nil:
		return fmt.Sprintf(" [PAUSED %s left]", shortAge(o.Paused.Until.Sub(now)))
	case o.PruneAt != nil:
		return fmt.Sprintf(" [PRUNE in %s]", shortAge(o.PruneAt.Sub(now)))
	case o.State == StatePruneBlocked:
		return " [PRUNE BLOCKED]"
	}
	return ""
}
