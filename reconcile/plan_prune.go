package reconcile

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"resil.dev/resil/actuators"
	"resil.dev/resil/internal/ownmark"
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
	reason := fmt.Sprintf("pruned: %s no longer desired", owner)
	p.files = append(p.files, actuators.Step{Op: actuators.OpRemoveFile, Object: owner, Path: m.ConfPath, Old: m.File, Reason: reason})
	p.reload = true
	p.reloadWhy = append(p.reloadWhy, "manager drop-in removed")
}

func (p *planner) brokenSource(data []byte) bool {
	for _, f := range ownmark.SourceOf(data) {
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
