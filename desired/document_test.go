package desired

import (
	"reflect"
	"strings"
	"testing"
)

// TestDecodeObjectRoundTrip: every object of the repository's examples,
// plus one assembled from a drop-in, is rebuilt exactly from Document and
// Source: same object, same rendered files.
func TestDecodeObjectRoundTrip(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, exampleDir, dir)
	writeFiles(t, dir, map[string]string{
		"worker.d/10-env.yaml": "spec:\n  environment:\n    MODE: fast\n",
	})
	set, err := loadInsecure(t, dir)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if len(set.Objects) == 0 {
		t.Fatal("no objects loaded")
	}
	sawDropIn := false
	for _, o := range set.Sorted() {
		t.Run(o.ID(), func(t *testing.T) {
			if len(o.Document()) == 0 {
				t.Fatal("loaded object has no document")
			}
			got, err := DecodeObject(o.Document(), o.Source)
			if err != nil {
				t.Fatalf("DecodeObject: %v", err)
			}
			if len(o.Source.DropIns) > 0 {
				sawDropIn = true
			}
			for _, c := range []struct {
				name      string
				got, want any
			}{
				{"id", got.ID(), o.ID()},
				{"source", got.Source, o.Source},
				{"metadata", got.Metadata, o.Metadata},
				{"service", got.Service, o.Service},
				{"timer", got.Timer, o.Timer},
				{"watchdog", got.Watchdog, o.Watchdog},
			} {
				if !reflect.DeepEqual(c.got, c.want) {
					t.Errorf("%s: got %+v, want %+v", c.name, c.got, c.want)
				}
			}
			wantFiles, werr := Render(o)
			gotFiles, gerr := Render(got)
			if (werr == nil) != (gerr == nil) || !reflect.DeepEqual(gotFiles, wantFiles) {
				t.Errorf("rendered files differ: got %v (%v), want %v (%v)", gotFiles, gerr, wantFiles, werr)
			}
		})
	}
	if !sawDropIn {
		t.Error("no object carried a drop-in; the test lost its drop-in case")
	}
}

// TestDecodeObjectRefuses: a document that Load would refuse is refused,
// with every problem reported.
func TestDecodeObjectRefuses(t *testing.T) {
	src := Source{File: "web.yaml"}
	for _, c := range []struct {
		name, raw string
		want      []string
		not       []string // (validate lists a mistyped field's own problem once)
	}{
		{"not a document", `{"apiVersion":`, []string{"invalid YAML"}, nil},
		{"two documents", "{\"a\": 1}\n---\n{\"b\": 2}\n", []string{"exactly one mapping document"}, nil},
		{"a list", `[1, 2]`, []string{"exactly one mapping document"}, nil},
		{"unknown field", `{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"web"},"spec":{"comand":["/bin/true"]}}`, []string{"unknown field"}, nil},
		{"bad kind", `{"apiVersion":"resil.dev/v1","kind":"Pod","metadata":{"name":"web"},"spec":{}}`, []string{"unknown kind"}, nil},
		{"empty name", `{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":""},"spec":{"command":["/bin/true"]}}`, []string{"metadata.name"}, nil},
		{"type error", `{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"web"},"spec":{"command":"/bin/true"}}`, []string{"expected a list"}, []string{"required"}},
		{"type error and more", `{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"web"},"spec":{"enabled":"yes","command":["bin/true"],"restart":{"policy":"sometimes","delay":"5 seconds"}}}`,
			[]string{"spec.enabled", "spec.command[0]", "spec.restart.policy", "spec.restart.delay"}, nil},
		{"spec not a mapping", `{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"web"},"spec":"x"}`, []string{"expected a mapping"}, []string{"required"}},
		{"no spec", `{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"web"}}`, []string{"spec", "required"}, nil},
		{"invalid spec", `{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"web"},"spec":{"command":["bin/true"]}}`, []string{"spec.command"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := DecodeObject([]byte(c.raw), src)
			if err == nil {
				t.Fatalf("accepted: %+v", o)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			for _, w := range c.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error %q mentions %q", err, w)
				}
			}
		})
	}
}
