package systemd

import (
	"context"

	"resil.dev/resil/observed"
)

// enablement returns the enablement of each name that has a unit file on
// disk, as systemd would compute it from the files and symlinks now.
//
// systemd's UnitFileState property is a cache: a daemon-reload or an
// enable or disable through systemd (EnableUnitFiles, `systemctl enable`)
// refreshes it, a symlink made or removed by hand does not. Asking systemd
// to compute it afresh (ListUnitFilesByPatterns) costs PID 1 about 0.5 ms
// per unit at 1000 enabled units (it scans every .wants directory for
// each one): 0.7 s per pass, most of a converged pass. So the property,
// read with the other properties, is taken only where the disk agrees
// with it: "enabled" with an entry of the unit's name in a .wants,
// .requires or .upholds directory of the unit directory and none
// elsewhere, "disabled" with no such entry anywhere, and in both cases no
// other file for the name in the search path (vendorFiles). Every other
// name that has a unit file (another state, a disagreement, a unit
// systemd has not loaded, a masked one) is listed with
// ListUnitFilesByPatterns, as before. A name without any unit file on
// disk has no enablement.
func (o *Observer) enablement(ctx context.Context, names []string, units map[string]*observed.Unit, files map[string]unitFile, vendor map[string]vendor, fileStates map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	var ask []string
	for _, n := range names {
		v := vendor[n]
		_, hasFile := files[n]
		if !hasFile && len(v.paths) == 0 {
			continue
		}
		state, read := fileStates[n]
		if u := units[n]; read && u != nil && needsProperties(u) && agrees(state, v) {
			out[n] = state
			continue
		}
		ask = append(ask, n)
	}
	if len(ask) == 0 {
		return out, nil
	}
	listed, err := o.listUnitFiles(ctx, ask)
	if err != nil {
		return nil, err
	}
	for n, s := range listed {
		out[n] = s
	}
	return out, nil
}

// agrees reports whether the disk confirms the UnitFileState property.
func agrees(state string, v vendor) bool {
	if len(v.paths) > 0 {
		return false
	}
	switch state {
	case "enabled":
		return v.links.own > 0 && v.links.other == 0
	case "disabled":
		return v.links.own == 0 && v.links.other == 0
	}
	return false
}

// isDepDir reports whether a directory name holds dependency symlinks
// that make a unit enabled.
func isDepDir(name string) bool {
	for _, s := range []string{".wants", ".requires", ".upholds"} {
		if len(name) > len(s) && name[len(name)-len(s):] == s {
			return true
		}
	}
	return false
}
