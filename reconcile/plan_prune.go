package reconcile

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

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
	owner, ok := ownmark.IsOwned(m.File)
	if !ok || p.in.Protected[owner] {
		return
	}
	// As for units: not while the manifest it came from is invalid (a
	// drop-in written before it named its source: not while any is).
	if p.brokenSource(m.File) || (len(p.in.BrokenFiles) > 0 && ownmark.SourceOf(m.File) == nil) {
		p.find(owner, "", ReasonLastGoodRetained, "its manifest is invalid; the manager drop-in "+m.ConfPath+" is not pruned", true, false)
		return
	}
	if d, wait := p.graceFor(owner); wait {
		p.find(owner, "", ReasonPrunePending, fmt.Sprintf("its manifest is gone; the manager drop-in %s is kept until %s (--prune-grace %s), then pruned",
			m.ConfPath, d.UTC().Format(LayoutMilli), p.in.PruneGrace), false, false)
		return
	}
	delete(p.pending, owner)
	mk := p.mark()
	reason := fmt.Sprintf("pruned: %s no longer desired", owner)
	p.files = append(p.files, actuators.Step{Op: actuators.OpRemoveFile, Object: owner, Path: m.ConfPath, Old: m.File, Reason: reason})
	p.reload = true
	p.reloadWhy = append(p.reloadWhy, "manager drop-in removed")
	if l := p.lease(owner); l != nil {
		p.withhold(mk, owner, *l)
	}
}

// graceFor records owner's prune deadline under --prune-grace (kept from
// the pass that first found its manifest gone) and reports whether the
// prune must wait for it.
func (p *planner) graceFor(owner string) (time.Time, bool) {
	if p.in.PruneGrace <= 0 {
		return time.Time{}, false
	}
	d, ok := p.in.PrunePending[owner]
	if !ok {
		d = p.in.Now.Add(p.in.PruneGrace)
	}
	p.pending[owner] = d
	return d, p.in.Now.Before(d)
}

func (p *planner) brokenSource(data []byte) bool {
	for _, f := range ownmark.SourceOf(data) {
		if p.in.BrokenFiles[f] {
			return true
		}
	}
	return false
}

// prune plans stop, disable and remove of every owned unit no object wants,
// object by object (an object's units go together). A unit whose marker
// names a desired object is pruned only under a name that object may
// render (desired.Object.UnitNames): any other is a copy of one of its
// units, the operator's, reported (OwnerConflict) and left alone.
// Through the safety rails: a paused object's prune is withheld; with
// PruneGrace an object whose manifest is gone is kept until its deadline
// (PrunePending); and the mass-prune guard blocks the pass's prunes when
// they are too many, or when an earlier block still holds one of them
// (PruneBlocked, PruneHeld).
func (p *planner) prune(wanted map[string]bool) {
	if p.in.Observed == nil || !p.in.Prune {
		// Nothing is pruned: the deadlines set so far stay as they are,
		// and so do the objects a block holds.
		for id, d := range p.in.PrunePending {
			p.pending[id] = d
		}
		for id, t := range p.in.PruneHeld {
			p.pruneHeld[id] = t
		}
		return
	}
	names := make([]string, 0, len(p.in.Observed.Units))
	for n := range p.in.Observed.Units {
		names = append(names, n)
	}
	sort.Strings(names)
	owned := map[string]bool{}
	units := map[string][]string{}  // owner → its units to prune
	retained := map[string]string{} // owner → the unit its finding names
	var owners []string
	for _, n := range names {
		u := p.in.Observed.Units[n]
		if u.Owner != "" && u.File != nil {
			owned[u.Owner] = true
		}
		if wanted[n] || u.Owner == "" || u.File == nil {
			continue
		}
		if o := p.object(u.Owner); o != nil && !slices.Contains(o.UnitNames(), n) {
			// Its marker names a desired object that never renders a
			// unit of this name: a copy of one of its units (cp, then
			// perhaps edited into another service), the operator's.
			p.find(u.Owner, n, ReasonOwnerConflict, fmt.Sprintf("%s carries %s's ownership marker but is not one of its units (a copy?); left alone (remove its %s= line to make it yours)",
				n, u.Owner, ownmark.KeyObject), true, false)
			continue
		}
		// Still owned and not desired: a block holding it holds on
		// (also while its manifest is broken, paused or in its grace).
		if t, ok := p.in.PruneHeld[u.Owner]; ok {
			p.pruneHeld[u.Owner] = t
		}
		if p.in.Protected[u.Owner] {
			continue
		}
		if p.brokenSource(u.File) {
			// Once per object, not per unit (a Timer's two), naming its
			// own unit (NAME.timer, not the inline job that sorts first).
			if _, seen := retained[u.Owner]; !seen || n == OwnUnit(u.Owner) {
				retained[u.Owner] = n
			}
			continue
		}
		if _, ok := units[u.Owner]; !ok {
			owners = append(owners, u.Owner)
		}
		units[u.Owner] = append(units[u.Owner], n)
	}
	held := make([]string, 0, len(retained))
	for owner := range retained {
		held = append(held, owner)
	}
	sort.Strings(held)
	for _, owner := range held {
		p.find(owner, retained[owner], ReasonLastGoodRetained, "its manifest is invalid; not pruned", true, false)
	}
	sort.Strings(owners)
	var due, later []string // later: waiting in their grace or a lease
	for _, owner := range owners {
		if l := p.lease(owner); l != nil {
			later = append(later, owner)
			m := p.mark()
			for _, n := range units[owner] {
				p.pruneUnit(n, p.in.Observed.Units[n])
			}
			p.withhold(m, owner, *l)
			if d, ok := p.in.PrunePending[owner]; ok {
				p.pending[owner] = d
			}
			continue
		}
		if p.object(owner) != nil {
			// Desired: a unit it no longer renders (a Timer's inline job
			// once it names a Service); its manifest is not gone, so no
			// grace.
			due = append(due, owner)
			continue
		}
		if d, wait := p.graceFor(owner); wait {
			later = append(later, owner)
			p.find(owner, "", ReasonPrunePending, fmt.Sprintf("its manifest is gone; kept running until %s (--prune-grace %s), then pruned: %s",
				d.UTC().Format(LayoutMilli), p.in.PruneGrace, strings.Join(units[owner], ", ")), false, false)
			continue
		}
		due = append(due, owner)
	}
	p.holdLater(due, later, len(owned))
	if b := p.guardPrune(due, len(owned)); b != nil {
		// Planned, then taken out: the block says what it holds back.
		m := p.mark()
		for _, owner := range due {
			for _, n := range units[owner] {
				p.pruneUnit(n, p.in.Observed.Units[n])
			}
		}
		b.Steps = append(append(append([]actuators.Step(nil), p.stops[m.stops:]...), p.files[m.files:]...), p.runtime[m.runtime:]...)
		p.stops, p.files, p.runtime = p.stops[:m.stops], p.files[:m.files], p.runtime[:m.runtime]
		p.reload, p.reloadWhy = m.reload, p.reloadWhy[:m.why]
		p.blocked = b
		// Held from now on: the objects of a block by share. A block only
		// by held objects holds on to those (kept above); a due object it
		// did not hold waits with them, and is judged by the share again
		// once they are released.
		if b.OverShare {
			for _, owner := range due {
				if _, ok := p.pruneHeld[owner]; !ok {
					p.pruneHeld[owner] = p.in.Now
				}
			}
		}
		p.find("", "", ReasonPruneBlocked, b.Why+": "+strings.Join(b.Objects, ", "), true, false)
		return
	}
	for _, owner := range due {
		delete(p.pending, owner)
		delete(p.pruneHeld, owner)
		p.pruned = append(p.pruned, owner)
		for _, n := range units[owner] {
			p.pruneUnit(n, p.in.Observed.Units[n])
		}
	}
}

// pruneUnit plans the stop, disable and remove of one owned unit: of an
// object no longer desired, or one its desired object no longer renders
// (a name it may render: prune leaves a copy alone).
func (p *planner) pruneUnit(n string, u *observed.Unit) {
	why := fmt.Sprintf("pruned: %s no longer desired", u.Owner)
	if p.object(u.Owner) != nil {
		why = fmt.Sprintf("pruned: %s no longer renders %s", u.Owner, n)
	}
	p.removeUnit(n, u, why)
}

// object returns the desired object of ID id (nil: not desired).
func (p *planner) object(id string) *desired.Object {
	if p.objects == nil {
		p.objects = make(map[string]*desired.Object, len(p.in.Objects))
		for _, o := range p.in.Objects {
			p.objects[o.ID()] = o
		}
	}
	return p.objects[id]
}

// removeUnit plans the removal of resil's file of unit n, for reason: the
// unit stopped, disabled and its failed state reset first, or, taken over
// from a vendor file, the vendor unit (and its enablement) in force again
// and a running process restarted from it.
func (p *planner) removeUnit(n string, u *observed.Unit, reason string) {
	if len(u.VendorPaths) > 0 {
		if u.Active() && !u.VendorOverrides {
			p.runtime = append(p.runtime, actuators.Step{Op: actuators.OpRestart, Object: u.Owner, Unit: n,
				Reason: reason + "; " + strings.Join(u.VendorPaths, ", ") + " back in force"})
		}
	} else {
		p.stopDisable(u.Owner, n, u, reason)
		if u.ActiveState == "failed" || u.SubState == "auto-restart" {
			// Its failed state outlives the file: systemd keeps the
			// unit loaded, not-found failed, in systemctl --failed
			// (the host degraded). Reset, the unit goes with the file.
			// A unit waiting in auto-restart may be left failed by
			// the stop (systemd versions differ); the step resets only
			// a unit found failed (reset-failed is idempotent).
			p.stops = append(p.stops, actuators.Step{Op: actuators.OpResetFailed, Object: u.Owner, Unit: n, Reason: reason})
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

// stopDisable plans the stop of unit n when active and its disable when
// enabled, in the prune phase, as owner's.
func (p *planner) stopDisable(owner, n string, u *observed.Unit, reason string) {
	if u.Active() {
		p.stops = append(p.stops, actuators.Step{Op: actuators.OpStop, Object: owner, Unit: n, Reason: reason})
	}
	if u.Enabled() {
		p.stops = append(p.stops, actuators.Step{Op: actuators.OpDisable, Object: owner, Unit: n, Reason: reason})
	}
}

// holdLater judges the share of a prune when its objects stop being
// wanted, not only when they fall due: objects waiting in their grace
// (--prune-grace) or a pause lease count with the due ones, and when
// together they are more than --max-prune of the owned objects, the
// waiting ones are held (PruneHeld) from now on. Judged only at their
// deadline, the objects created meanwhile would count as owned, and a
// swap of the whole set (4 old out, 4 new in: 4 of 8) would get through.
// The due ones are guardPrune's.
func (p *planner) holdLater(due, later []string, owned int) {
	n := len(due) + len(later)
	if p.in.MaxPrune <= 0 || len(later) == 0 || !p.overShare(n, owned) || p.in.AllowPrune >= n {
		return
	}
	var added []string
	for _, id := range later {
		if _, ok := p.pruneHeld[id]; !ok {
			p.pruneHeld[id] = p.in.Now
			added = append(added, id)
		}
	}
	if len(added) > 0 {
		p.find("", "", ReasonPruneBlocked, fmt.Sprintf("%d of %d owned objects are no longer desired, more than --max-prune %s: held; when their grace or lease ends they are pruned only once confirmed (`reconciler prune --confirm`): %s",
			n, owned, FormatShare(p.in.MaxPrune), strings.Join(added, ", ")), true, false)
	}
}

// OwnUnit is the unit an object ID names as its own: Timer/x → x.timer,
// Service/x → x.service.
func OwnUnit(id string) string {
	kind, name, _ := strings.Cut(id, "/")
	return name + "." + strings.ToLower(kind)
}
