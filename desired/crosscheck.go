package desired

// Cross-object checks: what only the whole set can tell (duplicate names
// and units, timer to service references, drop-in folders without an
// object, at most one Watchdog per host).

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// crossCheck merges drop-ins, validates each object and then checks what
// only the whole set can tell: duplicate names and unit collisions,
// timer→service references, drop-in folders without an object.
func (l *loader) crossCheck(all []*Object, dropInDirs map[string]bool, set *Set) []*Object {
	byName := map[string][]*Object{}
	for _, o := range all {
		byName[o.Metadata.Name] = append(byName[o.Metadata.Name], o)
	}
	dropIns := map[string][]*doc{}
	names := make([]string, 0, len(dropInDirs))
	for n := range dropInDirs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sub := n + ".d"
		files, fe := l.dropInFiles(sub)
		if fe != nil {
			l.fail(sub, fe)
			set.BrokenNames[n] = true
			continue
		}
		if len(files) == 0 {
			continue
		}
		if len(byName[n]) == 0 {
			if l.unusable[n] {
				// Its manifest is invalid (reported there): keep what it
				// had, and check the drop-ins once it is fixed.
				set.BrokenNames[n] = true
				continue
			}
			l.fail(files[0], &FieldError{Detail: fmt.Sprintf("drop-in for %q, but no manifest defines an object named %q", n, n)})
			continue
		}
		for _, f := range files {
			before := len(l.errs[f])
			docs := l.readDocs(f)
			if len(l.errs[f]) > before {
				set.BrokenNames[n] = true
			}
			dropIns[n] = append(dropIns[n], docs...)
		}
	}

	// A drop-in that names a kind is for the object of that kind only
	// (NAME.d/ is shared by every kind named NAME: a Service and the Timer
	// that starts it); one naming a kind no object of that name has is an
	// error, not ignored.
	for _, n := range sortedKeys(dropIns) {
		for _, d := range dropIns[n] {
			k := dropInKind(d)
			if k == "" || len(byName[n]) < 2 {
				continue // one object: finish refuses another kind
			}
			if !slices.ContainsFunc(byName[n], func(o *Object) bool { return o.Kind == k }) {
				l.fail(d.file, l.position([]*doc{d}, path{"kind"}, fmt.Sprintf("drop-in for %s %q, but no manifest defines one (%s)", k, n, kindsOf(byName[n]))))
				set.BrokenNames[n] = true
			}
		}
	}

	var valid []*Object
	for _, o := range all {
		// The name from the base file: a broken drop-in must protect the
		// object it was meant for, whatever it says.
		name := o.Metadata.Name
		if l.cached[o] {
			valid = append(valid, o) // finished when it was cached; it has no drop-ins
			continue
		}
		if l.finish(o, dropInsFor(dropIns[name], o.Kind, len(byName[name]) > 1)) {
			valid = append(valid, o)
		} else {
			// Its file's errors protect what came from that file; the
			// name protects its last good version when it came from
			// another (an object moved to a new file with an error in
			// it was pruned, its old file gone).
			set.BrokenNames[name] = true
			if set.Invalid == nil {
				set.Invalid = map[string]string{}
			}
			set.Invalid[o.ID()] = o.Source.File
			if len(l.errs[o.Source.File]) > 0 { // its own file's fault, not a drop-in's
				if set.DeclaredInvalid == nil {
					set.DeclaredInvalid = map[string]string{}
				}
				set.DeclaredInvalid[name] = o.Source.File
			}
		}
	}

	// Duplicates: the same ID, or two objects rendering the same unit.
	units := map[string][]*Object{}
	for _, o := range valid {
		for _, u := range unitsOf(o) {
			units[u] = append(units[u], o)
		}
	}
	dup := map[*Object]bool{}
	unitNames := make([]string, 0, len(units))
	for u := range units {
		unitNames = append(unitNames, u)
	}
	sort.Strings(unitNames)
	for _, u := range unitNames {
		os := units[u]
		if len(os) < 2 {
			continue
		}
		for i, o := range os {
			other := os[(i+1)%len(os)]
			if dup[o] {
				continue // one error per object, even when it collides on several units
			}
			dup[o] = true
			l.failAt(l.docsOf(o), path{"metadata", "name"}, fmt.Sprintf("%s is also defined by %s (%s); neither is applied", u, other.ID(), other.where()))
			set.BrokenNames[o.Metadata.Name] = true
		}
	}
	var out []*Object
	byID := map[string]*Object{}
	for _, o := range valid {
		if !dup[o] {
			out = append(out, o)
			byID[o.ID()] = o
		}
	}
	// References.
	var final []*Object
	for _, o := range out {
		if o.Timer != nil && o.Timer.Service != "" {
			if _, ok := byID["Service/"+o.Timer.Service]; !ok {
				l.failAt(l.docsOf(o), path{"spec", "service"}, fmt.Sprintf("no Service named %q", o.Timer.Service))
				continue
			}
		}
		final = append(final, o)
	}
	return final
}

// checkSelected enforces rules about what this host ends up with.
func (l *loader) checkSelected(set *Set) {
	var wds []*Object
	for _, o := range set.Sorted() {
		if o.Kind == KindWatchdog {
			wds = append(wds, o)
		}
		if o.Timer != nil && o.Timer.Service != "" {
			if _, ok := set.Objects["Service/"+o.Timer.Service]; !ok {
				l.failAt(l.docsOf(o), path{"spec", "service"}, fmt.Sprintf("Service %q does not select this host", o.Timer.Service))
				delete(set.Objects, o.ID())
			}
		}
	}
	if len(wds) > 1 {
		sort.Slice(wds, func(i, j int) bool { return wds[i].ID() < wds[j].ID() })
		for _, o := range wds {
			l.failAt(l.docsOf(o), path{"kind"}, fmt.Sprintf("%d Watchdog objects select this host; at most one may", len(wds)))
			delete(set.Objects, o.ID())
			set.BrokenNames[o.Metadata.Name] = true
		}
	}
}

func (o *Object) where() string {
	if len(o.docs) > 0 {
		n, _, _ := lookup(o.docs[0].node, path{"metadata", "name"})
		if n != nil {
			return fmt.Sprintf("%s:%d", o.docs[0].abs, n.Line)
		}
	}
	return o.Source.File
}

// unitsOf lists the unit names (or files) an object owns.
func unitsOf(o *Object) []string {
	switch o.Kind {
	case KindService:
		return []string{o.Metadata.Name + ".service"}
	case KindTimer:
		if o.Timer != nil && o.Timer.Service == "" {
			return []string{o.Metadata.Name + ".timer", o.Metadata.Name + ".service"}
		}
		return []string{o.Metadata.Name + ".timer"}
	}
	return []string{"Watchdog/" + o.Metadata.Name}
}

// dropInKind is the kind a drop-in document names ("" when none).
func dropInKind(d *doc) Kind {
	var h struct {
		Kind any `json:"kind"`
	}
	if json.Unmarshal(d.raw, &h) != nil {
		return ""
	}
	k, _ := h.Kind.(string)
	return Kind(k)
}

// dropInsFor are the drop-ins of one object of kind: when several kinds
// share its name (shared), those naming no kind and those naming its
// kind; else all (one naming another kind is refused by finish).
func dropInsFor(ds []*doc, kind Kind, shared bool) []*doc {
	if !shared {
		return ds
	}
	var out []*doc
	for _, d := range ds {
		if k := dropInKind(d); k == "" || k == kind {
			out = append(out, d)
		}
	}
	return out
}

func kindsOf(objs []*Object) string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.ID())
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}
