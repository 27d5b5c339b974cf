package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAndRemoveTemps(t *testing.T) {
	tmp, dir := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	if err := WriteFile(filepath.Join(dir, "a.json"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("TMPDIR used: %v", ents)
	}
	if fi, err := os.Stat(filepath.Join(dir, "a.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("a.json: %v %v", fi, err)
	}
	for _, tc := range []struct {
		name    string
		removed bool
	}{
		{".a.json123", true},
		{".a.json-9", true},
		{".b.json77", true},
		{".a.json", false},
		{".a.jsonx1", false},
		{".c.json5", false},
		{"a.json", false},
	} {
		if tc.name != "a.json" {
			if err := os.WriteFile(filepath.Join(dir, tc.name), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		defer func() {
			_, err := os.Stat(filepath.Join(dir, tc.name))
			if removed := os.IsNotExist(err); removed != tc.removed {
				t.Errorf("%s removed = %v, want %v", tc.name, removed, tc.removed)
			}
		}()
	}
	RemoveTemps(dir, "a.json", "b.json")
}
