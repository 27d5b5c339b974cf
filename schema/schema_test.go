package schema

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	sj "github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

func compile(t *testing.T) *sj.Schema {
	t.Helper()
	doc, err := sj.UnmarshalJSON(bytes.NewReader(JSON()))
	if err != nil {
		t.Fatal(err)
	}
	c := sj.NewCompiler()
	c.DefaultDraft(sj.Draft2020)
	if err := c.AddResource(ID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(ID)
	if err != nil {
		t.Fatalf("the committed schema does not compile: %v", err)
	}
	return s
}

// documents returns the YAML documents of a manifest file as JSON values
// (comment-only documents dropped).
func documents(t *testing.T, path string) []any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		j, err := yaml.YAMLToJSON([]byte(d))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if string(bytes.TrimSpace(j)) == "null" {
			continue
		}
		v, err := sj.UnmarshalJSON(bytes.NewReader(j))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestExamplesValidate(t *testing.T) {
	s := compile(t)
	var files []string
	err := filepath.WalkDir("../manifests", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".yaml") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("found %d example manifests; the walk is broken", len(files))
	}
	// The valid corpus: every render test input (full manifests; the
	// drop-ins beside them are partial documents and not covered).
	corpus, err := filepath.Glob("../desired/testdata/render/*.yaml")
	if err != nil || len(corpus) < 10 {
		t.Fatalf("valid corpus: %d files, %v", len(corpus), err)
	}
	files = append(files, corpus...)
	for _, f := range files {
		for i, doc := range documents(t, f) {
			if err := s.Validate(doc); err != nil {
				t.Errorf("%s document %d: %v", f, i, err)
			}
		}
	}
}

// The structural cases of the invalid corpus (unknown field, wrong type,
// bad enum, wrong apiVersion or kind) are rejected by the schema too.
func TestInvalidCorpusRejected(t *testing.T) {
	s := compile(t)
	structural := []string{
		"unknown-field", "unknown-field-case", "enums-bad", "kind-unknown", "apiversion-wrong", "apiversion-missing",
		"wrong-type-burst", "wrong-type-command", "wrong-type-enabled", "wrong-type-env", "wrong-type-many", "wrong-type-spec",
		"name-wrong-type", "kind-missing-name-missing",
	}
	for _, name := range structural {
		t.Run(name, func(t *testing.T) {
			docs := documents(t, filepath.Join("../desired/testdata/invalid", name+".yaml"))
			rejected := false
			for _, d := range docs {
				if s.Validate(d) != nil {
					rejected = true
				}
			}
			if !rejected {
				t.Fatalf("the schema accepts %s.yaml, which validate rejects", name)
			}
		})
	}
}

// A minimal valid object of each kind passes; a spec of the wrong kind
// does not.
func TestSchemaByKind(t *testing.T) {
	s := compile(t)
	tests := []struct {
		doc   string
		valid bool
	}{
		{`{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"a"},"spec":{"command":["/bin/true"]}}`, true},
		{`{"apiVersion":"resil.dev/v1","kind":"Timer","metadata":{"name":"a"},"spec":{"schedule":["daily"],"command":["/bin/true"]}}`, true},
		{`{"apiVersion":"resil.dev/v1","kind":"Watchdog","metadata":{"name":"a"},"spec":{"runtimeTimeout":"30s"}}`, true},
		{`{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"a"},"spec":{"schedule":["daily"],"command":["/bin/true"]}}`, false},
		{`{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"a"}}`, false},
		{`{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"../a"},"spec":{"command":["/bin/true"]}}`, false},
		{`{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"a"},"spec":{"command":["/bin/true"],"stopTimeout":"soon"}}`, false},
	}
	for _, tt := range tests {
		var v any
		if err := json.Unmarshal([]byte(tt.doc), &v); err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(v); (err == nil) != tt.valid {
			t.Errorf("%s: valid=%v, want %v (%v)", tt.doc, err == nil, tt.valid, err)
		}
	}
}
