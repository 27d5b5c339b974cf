package desired

// Drop-in merge: NAME.d/*.yaml merged onto an object (JSON merge patch, in
// lexical order), then its spec decoded strictly and validated.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// finish merges drop-ins onto o, decodes the spec strictly and validates it.
// It returns false when the object is invalid.
func (l *loader) finish(o *Object, dropIns []*doc) bool {
	docs := append(o.docs[:1:1], dropIns...)
	merged := o.docs[0].raw
	ok := true
	name := o.Metadata.Name
	for _, d := range dropIns {
		// A drop-in that says anything else about the object's identity is
		// refused whole: merged, it would rename the object (an empty name
		// made an object "Service/"), change its kind or delete its name.
		if probs := dropInIdentity(d.raw, o); len(probs) > 0 {
			for _, p := range probs {
				l.fail(d.file, l.position([]*doc{d}, p.p, p.detail))
			}
			ok = false
			continue
		}
		m, err := jsonpatch.MergePatch(merged, d.raw)
		if err != nil {
			l.fail(d.file, &FieldError{File: d.abs, Detail: fmt.Sprintf("cannot merge drop-in: %v", err)})
			ok = false
			continue
		}
		merged = m
		if n := len(o.Source.DropIns); n == 0 || o.Source.DropIns[n-1] != d.file { // a file's documents come together
			o.Source.DropIns = append(o.Source.DropIns, d.file)
		}
	}
	// Unknown fields, reported in the file that wrote them, then removed so
	// encoding/json's case-insensitive matching cannot apply "Command" to
	// "command" behind the operator's back.
	var unknown []path
	for _, d := range docs {
		var probs []positioned
		unknownFields(d.node, topType, nil, &probs)
		if specNode, _, found := lookup(d.node, path{"spec"}); found && specNode != nil {
			if v := valueOf(d.node, "spec"); v != nil {
				unknownFields(v, specTypes[o.Kind], path{"spec"}, &probs)
			}
		}
		for _, p := range probs {
			l.fail(d.file, l.position([]*doc{d}, p.p, p.detail))
			unknown = append(unknown, p.p)
			ok = false
		}
	}
	if len(unknown) > 0 {
		merged = dropPaths(merged, unknown)
	}
	// Go on decoding after unknown fields, so one run reports every problem,
	// and report every type error (encoding/json stops at the first).
	// A field of the wrong type is dropped too (after its error), so the
	// rest of the object is still validated; what validation then says of
	// a dropped field itself ("required") is left out: its type error is
	// the problem.
	var mistyped []path
	if probs := checkTypes(merged, specTypes[o.Kind]); len(probs) > 0 {
		l.failSorted(docs, probs)
		ok = false
		for _, p := range probs {
			mistyped = append(mistyped, p.p)
		}
		merged = dropPaths(merged, mistyped)
	}
	var h header
	if err := json.Unmarshal(merged, &h); err != nil {
		if len(mistyped) == 0 {
			l.failAt(docs, typeErrorPath(err, nil), typeErrorDetail(err))
		}
		return false
	}
	if h.Metadata.Name != name || h.Kind != o.Kind {
		// dropInIdentity keeps this from happening; never rename an object.
		l.failAt(docs, path{"metadata", "name"}, fmt.Sprintf("drop-ins changed the object's identity to %s/%s", h.Kind, h.Metadata.Name))
		return false
	}
	o.Metadata = h.Metadata
	if len(h.Spec) == 0 || string(h.Spec) == "null" {
		if !under(path{"spec"}, mistyped) {
			l.failAt(docs, path{"spec"}, "required")
		}
		return false
	}
	var target any
	switch o.Kind {
	case KindService:
		o.Service = &ServiceSpec{}
		target = o.Service
	case KindTimer:
		o.Timer = &TimerSpec{}
		target = o.Timer
	case KindWatchdog:
		o.Watchdog = &WatchdogSpec{}
		target = o.Watchdog
	}
	if err := json.Unmarshal(h.Spec, target); err != nil {
		if len(mistyped) == 0 {
			l.failAt(docs, typeErrorPath(err, path{"spec"}), typeErrorDetail(err))
		}
		return false
	}
	o.docs = docs
	o.document = merged
	probs := validateObject(o)
	reported := 0
	for _, p := range probs {
		if under(p.p, mistyped) {
			continue
		}
		l.failAt(docs, p.p, p.detail)
		reported++
	}
	return ok && reported == 0 && len(probs) == 0
}

// under reports whether p is one of roots or inside one.
func under(p path, roots []path) bool {
	for _, r := range roots {
		if len(p) >= len(r) && slices.Equal(p[:len(r)], r) {
			return true
		}
	}
	return false
}

// dropInIdentity checks what a drop-in of o says about o's identity. A
// drop-in may omit apiVersion, kind, metadata and metadata.name; what it
// gives must be exactly o's (README: "if it gives them they must match"):
// an empty or other name, another kind, or null (which a merge patch
// deletes) would rename, retype or unname the object.
func dropInIdentity(raw []byte, o *Object) []positioned {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	var probs []positioned
	removed := func(p path) { probs = append(probs, positioned{p, "a drop-in must not remove " + p.String()}) }
	if v, set := m["kind"]; set {
		switch k, isString := v.(string); {
		case v == nil:
			removed(path{"kind"})
		case !isString || Kind(k) != o.Kind:
			probs = append(probs, positioned{path{"kind"}, fmt.Sprintf("drop-in for %s says kind %s; omit kind or give %q", o.ID(), jsonText(v), o.Kind)})
		}
	}
	if v, set := m["metadata"]; set {
		md, isMap := v.(map[string]any)
		switch {
		case v == nil:
			removed(path{"metadata"})
		case !isMap:
			probs = append(probs, positioned{path{"metadata"}, fmt.Sprintf("expected a mapping, got %s", jsonText(v))})
		default:
			if n, set := md["name"]; set {
				switch s, isString := n.(string); {
				case n == nil:
					removed(path{"metadata", "name"})
				case !isString || s != o.Metadata.Name:
					probs = append(probs, positioned{path{"metadata", "name"}, fmt.Sprintf("drop-in in %s.d names %s; omit metadata.name or give %q", o.Metadata.Name, jsonText(n), o.Metadata.Name)})
				}
			}
		}
	}
	if v, set := m["apiVersion"]; set {
		switch a, isString := v.(string); {
		case v == nil:
			removed(path{"apiVersion"})
		case !isString || a != APIVersion:
			probs = append(probs, positioned{path{"apiVersion"}, fmt.Sprintf("unsupported version %s; want %q", jsonText(v), APIVersion)})
		}
	}
	return probs
}

// jsonText shows a decoded JSON value as the manifest wrote it: strings
// quoted, other scalars as they are, lists and mappings by kind.
func jsonText(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	case nil:
		return "null"
	}
	return fmt.Sprint(v)
}

// dropPaths removes the given key paths from a JSON object.
func dropPaths(raw []byte, paths []path) []byte {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return raw
	}
	for _, p := range paths {
		cur := v
		for i, seg := range p {
			switch c := cur.(type) {
			case map[string]any:
				if i == len(p)-1 {
					delete(c, seg)
					break
				}
				cur = c[seg]
			case []any:
				idx, err := strconv.Atoi(strings.Trim(seg, "[]"))
				if err != nil || idx < 0 || idx >= len(c) {
					cur = nil
					break
				}
				cur = c[idx]
			default:
				cur = nil
			}
		}
	}
	out, err := json.Marshal(v)
	if err != nil {
		return raw
	}
	return out
}
