package desired

import (
	"os"
	"path/filepath"
	"testing"
)

// Locate names where a loaded object sets a field: the last drop-in that
// sets it, else the manifest, else the nearest parent there is.
func TestLocate(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"web.yaml":        "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  command: [/bin/true]\n  requires: [db.service]\n  resources:\n    memoryMax: 1G\n",
		"two.yaml":        "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: one}\nspec:\n  command: [/bin/true]\n---\napiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: two}\nspec:\n  command: [/bin/true]\n  stateDirectory: two\n",
		"web.d/10-a.yaml": "spec:\n  requires: [other.service]\n",
	}
	for name, body := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	set, err := Load(dir, Options{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ id, field, want string }{
		{"Service/web", "spec.resources.memoryMax", "web.yaml:8:5: spec.resources.memoryMax: refused"},
		{"Service/web", "spec.requires", "web.d/10-a.yaml:2:3: spec.requires: refused"}, // the drop-in sets it last
		{"Service/web", "spec.resources.cpuQuota", "web.yaml:8:5: spec.resources.cpuQuota: refused"},
		{"Service/two", "spec.stateDirectory", "two.yaml:12:3: spec.stateDirectory: refused"}, // second document
	} {
		o := set.Objects[tc.id]
		if o == nil {
			t.Fatalf("%s not loaded", tc.id)
		}
		if got := Locate(dir, o, tc.field, "refused").Error(); got != filepath.Join(dir, tc.want) {
			t.Errorf("%s %s: got %s, want %s", tc.id, tc.field, got, tc.want)
		}
	}
	gone := &Object{Kind: KindService, Source: Source{File: "gone.yaml"}}
	if got := Locate(dir, gone, "spec.requires", "refused").Error(); got != filepath.Join(dir, "gone.yaml")+": spec.requires: refused" {
		t.Errorf("file gone: %s", got)
	}
}
