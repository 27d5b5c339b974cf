package desired

// Strict decoding: a document's header (apiVersion, kind, name), type errors
// in the words of a manifest, and fields the schema does not have.

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"

	yaml "go.yaml.in/yaml/v3"
)

// header is what every document must say about itself.
type header struct {
	APIVersion string          `json:"apiVersion"`
	Kind       Kind            `json:"kind"`
	Metadata   ObjectMeta      `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// schema types for the unknown-field walk, by kind.
var specTypes = map[Kind]reflect.Type{
	KindService:  reflect.TypeOf(ServiceSpec{}),
	KindTimer:    reflect.TypeOf(TimerSpec{}),
	KindWatchdog: reflect.TypeOf(WatchdogSpec{}),
}

// positioned is a field problem before it has a file position.
type positioned struct {
	p      path
	detail string
}

// decode turns one document (plus its drop-ins, merged later in crossCheck)
// into an Object, or records why not.
func (l *loader) decode(d *doc) *Object {
	// A type error in apiVersion, kind or metadata makes the document
	// unusable. Report every type error of it then, not only the first that
	// encoding/json stops at: the spec's too, when the kind is known. (Spec
	// type errors alone are reported after the drop-ins are merged.)
	if len(checkTypes(d.raw, nil)) > 0 {
		l.failSorted([]*doc{d}, checkTypes(d.raw, specTypes[headerKind(d.raw)]))
		l.markUnusable(d)
		return nil
	}
	var h header
	if err := json.Unmarshal(d.raw, &h); err != nil {
		l.fail(d.file, l.position([]*doc{d}, typeErrorPath(err, nil), typeErrorDetail(err)))
		return nil
	}
	o := &Object{APIVersion: h.APIVersion, Kind: h.Kind, Metadata: h.Metadata,
		Source: Source{File: d.file, Doc: d.idx}}
	if bad := l.checkHeader(d, &h); bad {
		l.markUnusable(d)
		return nil
	}
	o.Source = Source{File: d.file, Doc: d.idx}
	o.docs = []*doc{d}
	return o
}

// markUnusable records the name of a document that cannot become an
// object, when it has one.
func (l *loader) markUnusable(d *doc) {
	var h struct {
		Metadata struct {
			Name any `json:"name"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(d.raw, &h)
	if n, ok := h.Metadata.Name.(string); ok && n != "" {
		if l.unusable == nil {
			l.unusable = map[string]bool{}
		}
		l.unusable[n] = true
	}
}

// checkHeader validates apiVersion, kind and name; true when the document is unusable.
func (l *loader) checkHeader(d *doc, h *header) bool {
	var probs []positioned
	if h.APIVersion != APIVersion {
		if h.APIVersion == "" {
			probs = append(probs, positioned{path{"apiVersion"}, fmt.Sprintf("required; want %q", APIVersion)})
		} else {
			probs = append(probs, positioned{path{"apiVersion"}, fmt.Sprintf("unsupported version %q; want %q", h.APIVersion, APIVersion)})
		}
	}
	if _, ok := specTypes[h.Kind]; !ok {
		if h.Kind == "" {
			probs = append(probs, positioned{path{"kind"}, "required; one of Service, Timer, Watchdog"})
		} else {
			probs = append(probs, positioned{path{"kind"}, fmt.Sprintf("unknown kind %q; one of Service, Timer, Watchdog", h.Kind)})
		}
	}
	if detail := checkName(h.Metadata.Name); detail != "" {
		probs = append(probs, positioned{path{"metadata", "name"}, detail})
	}
	if len(probs) > 0 && d.node != nil {
		// The document stops here, before the check of unknown fields
		// (mergeDocs): a misspelt top-level key (metdata:) is most often
		// why the header is incomplete, so it is named too.
		unknownFields(d.node, topType, nil, &probs)
	}
	for _, p := range probs {
		l.fail(d.file, l.position([]*doc{d}, p.p, p.detail))
	}
	return len(probs) > 0
}

// IsUnitName reports whether n names a unit of the kinds resil manages
// (web.service, job.timer): never an object's name, which refuses those
// suffixes.
func IsUnitName(n string) bool {
	return strings.HasSuffix(n, ".service") || strings.HasSuffix(n, ".timer")
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// checkName enforces unit-name rules and refuses anything that could escape a path.
func checkName(n string) string {
	switch {
	case n == "":
		return "required"
	case len(n) > 200:
		return fmt.Sprintf("name is %d characters, longer than 200", len(n))
	case strings.ContainsAny(n, "/\\"):
		return fmt.Sprintf("invalid name %q: must not contain a path separator", n)
	case strings.Contains(n, ".."):
		return fmt.Sprintf("invalid name %q: must not contain \"..\"", n)
	case strings.HasSuffix(n, "."):
		// NAME.service would hold ".." (a.service from "a." reads as "a..service").
		return fmt.Sprintf("invalid name %q: must not end with '.'", n)
	case !nameRE.MatchString(n):
		return fmt.Sprintf("invalid name %q: use letters, digits, '-', '_' and '.', starting with a letter or digit", n)
	case IsUnitName(n) || strings.HasSuffix(n, ".d"):
		return fmt.Sprintf("invalid name %q: give the name without a unit suffix", n)
	}
	return ""
}

// typeErrorPath turns an encoding/json error into a field path under prefix.
func typeErrorPath(err error, prefix path) path {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return append(append(path{}, prefix...), parsePath(te.Field)...)
	}
	return prefix
}

func typeErrorDetail(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := te.Type.String()
		switch te.Type.Kind() {
		case reflect.Slice:
			want = "a list"
		case reflect.Map, reflect.Struct:
			want = "a mapping"
		case reflect.Int, reflect.Int64:
			want = "an integer"
		case reflect.Bool:
			want = "true or false"
		case reflect.String:
			want = "a string"
		case reflect.Ptr:
			want = "a mapping"
			if te.Type.Elem().Kind() == reflect.Bool {
				want = "true or false"
			}
		}
		return fmt.Sprintf("expected %s, got %s", want, te.Value)
	}
	return err.Error()
}

// unknownFields walks a node tree against a Go type and reports keys that
// the type does not have (case-sensitive, unlike encoding/json).
func unknownFields(n *yaml.Node, t reflect.Type, p path, out *[]positioned) {
	for t.Kind() == reflect.Ptr {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // type errors are reported by the decoder
		}
		fields := tagFields(t)
		for j := 0; j+1 < len(n.Content); j += 2 {
			k := n.Content[j].Value
			ft, ok := fields[k]
			if !ok {
				*out = append(*out, positioned{p.key(k), "unknown field" + suggest(k, fields)})
				continue
			}
			unknownFields(n.Content[j+1], ft, p.key(k), out)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for j := 0; j+1 < len(n.Content); j += 2 {
			unknownFields(n.Content[j+1], t.Elem(), p.key(n.Content[j].Value), out)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode || t.Elem().Kind() == reflect.Uint8 {
			return
		}
		for i, c := range n.Content {
			unknownFields(c, t.Elem(), p.index(i), out)
		}
	}
}

// tagFields maps the json tag names of struct type t to their field types
// (fields without a tag left out), computed once per type.
func tagFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := tagFieldsCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("json"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = f.Type
	}
	tagFieldsCache.Store(t, fields)
	return fields
}

var tagFieldsCache sync.Map // reflect.Type → map[string]reflect.Type; read-only once stored

// suggest names a known field that differs only in case, the usual typo.
func suggest(k string, fields map[string]reflect.Type) string {
	for f := range fields {
		if strings.EqualFold(f, k) {
			return fmt.Sprintf(" (did you mean %q?)", f)
		}
	}
	// A misspelling (letters left out, added or changed): the one field
	// within two edits (editDistance, as for unit directives), when only
	// one is and the key is long enough for that to mean something.
	if len(k) < 4 {
		return ""
	}
	best, n := "", 0
	for f := range fields {
		if editDistance(strings.ToLower(k), strings.ToLower(f)) <= 2 {
			best, n = f, n+1
		}
	}
	if n == 1 {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

var topType = reflect.TypeOf(struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   ObjectMeta      `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}{})
