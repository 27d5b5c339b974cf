package systemd

import (
	"os"
	"path/filepath"
	"testing"
)

// A kill -9 between renameio's create and rename leaves ".NAME.serviceDIGITS"
// beside the unit: the next agent removes it, and nothing that is not its own.
func TestRemoveTempFiles(t *testing.T) {
	unitDir, confDir := t.TempDir(), t.TempDir()
	owned := "[Unit]\nX-Resil-Object=Service/web\nX-Resil-Source=web.yaml\n"
	files := []struct {
		path, data string
		removed    bool
	}{
		{filepath.Join(unitDir, ".web.service7483373767865250937"), "", true},
		{filepath.Join(unitDir, ".web.service42"), owned, true},
		{filepath.Join(unitDir, ".web.service43"), "[Unit]\nX-Res", true},
		{filepath.Join(unitDir, "web.service.d", ".50-resil.conf9"), "# X-Resil-Object=Service/web\n", true},
		{filepath.Join(confDir, ".resil-watchdog.conf12"), "", true},
		{filepath.Join(unitDir, ".vendor.service99"), "[Unit]\nDescription=someone else's\n", false},
		{filepath.Join(unitDir, ".web.service"), "", false},
		{filepath.Join(unitDir, "web.service"), owned, false},
		{filepath.Join(unitDir, ".#override.conf1234"), "", false},
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte(f.data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n, err := New(nil, unitDir, confDir, nil).RemoveTempFiles()
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, f := range files {
		_, err := os.Lstat(f.path)
		switch {
		case f.removed && err == nil:
			t.Errorf("%s left behind", f.path)
		case !f.removed && err != nil:
			t.Errorf("%s removed: %v", f.path, err)
		}
		if f.removed {
			want++
		}
	}
	if n != want {
		t.Errorf("removed %d, want %d", n, want)
	}
}
