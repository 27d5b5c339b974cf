package main

import (
	"context"
	"fmt"
	"strings"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile/store"
)

// unitOwner resolves a unit name (web.service, job.timer) given where an
// object is expected (pause, resume, status, reset, events --object) to
// the ID of the object that owns it: from the manifests when they were
// read (set), else from the objects of the agent's last pass (rows). It
// returns "" when nothing owns unit.
func unitOwner(unit string, set *desired.Set, rows []store.ObjectStatus) string {
	if id := set.UnitOwner(unit); id != "" {
		return id
	}
	for _, r := range rows {
		if r.Unit == unit {
			return r.Object
		}
	}
	// A timer's inline job is not in the rows: NAME.service of Timer/NAME
	// when no service has that name.
	stem, ok := strings.CutSuffix(unit, ".service")
	if !ok {
		return ""
	}
	timer := ""
	for _, r := range rows {
		switch {
		case r.Name != stem:
		case r.Kind == string(desired.KindService):
			return ""
		case r.Kind == string(desired.KindTimer):
			timer = r.Object
		}
	}
	return timer
}

// resolveUnitArgs replaces each unit name in args by the ID of the object
// that owns it; other arguments are kept as given. A unit nothing owns is
// refused: it can never be an object's name, so acting on it would
// silently do nothing.
func resolveUnitArgs(args []string, set *desired.Set, rows []store.ObjectStatus) ([]string, error) {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if !desired.IsUnitName(a) {
			continue
		}
		if out[i] = unitOwner(a, set, rows); out[i] == "" {
			return nil, fmt.Errorf("%s is a unit no object declares: give an object name (web), ID (Service/web) or the unit of a declared object", a)
		}
	}
	return out, nil
}

// lastPassRows are the objects of the agent's last pass (nil when its
// store cannot be read).
func lastPassRows(ctx context.Context, g *globals) []store.ObjectStatus {
	s, err := store.OpenReader(storePath(g))
	if err != nil {
		return nil
	}
	defer s.Close()
	rows, _, err := s.Status(ctx)
	if err != nil {
		return nil
	}
	return rows
}
