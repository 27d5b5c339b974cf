package desired

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/internal/filestamp"
)

// ageFiles makes the loads of this test treat every file as changed long
// enough ago to be cached (filestamp.RacyWindow); the test writes them just before.
func ageFiles(t testing.TB) {
	loadClock = func() time.Time { return time.Now().Add(filestamp.RacyWindow + time.Second) }
	t.Cleanup(func() { loadClock = time.Now })
}

// loadCached loads dir with the cache c (owner checks off, as the other
// tests of temporary directories).
func loadCached(t *testing.T, dir string, c *FileCache) (*Set, error) {
	t.Helper()
	return Load(dir, Options{Host: testHost, Insecure: true, Cache: c})
}

// The cache answers an unchanged file with the objects it loaded before,
// and reads a file again after any edit: one that keeps its size and its
// mtime (only the ctime tells), one renamed into place with the old size
// and mtime (another inode), a drop-in folder appearing for its object.
// Each load with the cache equals a load without it.
func TestFileCacheInvalidation(t *testing.T) {
	ageFiles(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.yaml": svcDoc("a", "/bin/aaa"), "b.yaml": svcDoc("b", "/bin/bbb")})
	c := NewFileCache()
	load := func() *Set {
		t.Helper()
		set, err := loadCached(t, dir, c)
		if err != nil {
			t.Fatal(err)
		}
		want, err := loadInsecure(t, dir)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(set, want) {
			t.Fatalf("a load with the cache differs from one without:\n%+v\n%+v", set, want)
		}
		return set
	}
	cmd := func(set *Set, id string) string { return strings.Join(set.Objects[id].Service.Command, " ") }

	first := load()
	second := load()
	if first.Objects["Service/a"] != second.Objects["Service/a"] {
		t.Fatal("an unchanged file was parsed again (no cache hit)")
	}

	// Same size, same mtime: only the ctime changes.
	a := filepath.Join(dir, "a.yaml")
	fi, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a, []byte(svcDoc("a", "/bin/xxx")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(a, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.Stat(a); now.Size() != fi.Size() || !now.ModTime().Equal(fi.ModTime()) {
		t.Fatal("the edit changed the size or mtime; the test would not test the ctime")
	}
	if got := cmd(load(), "Service/a"); got != "/bin/xxx" {
		t.Errorf("after an edit keeping size and mtime: command %q, want /bin/xxx", got)
	}

	// Renamed into place, with the old size and mtime (a new inode; its
	// ctime may be the same tick as the old file's).
	tmp := filepath.Join(dir, ".b.tmp")
	if err := os.WriteFile(tmp, []byte(svcDoc("b", "/bin/yyy")), 0o644); err != nil {
		t.Fatal(err)
	}
	bi, err := os.Stat(filepath.Join(dir, "b.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, bi.ModTime(), bi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	if got := cmd(load(), "Service/b"); got != "/bin/yyy" {
		t.Errorf("after a rename into place: command %q, want /bin/yyy", got)
	}

	// A drop-in folder appears for a cached object.
	load()
	writeFiles(t, dir, map[string]string{"a.d/10.yaml": "spec: {user: nobody}\n"})
	if got := load().Objects["Service/a"]; got.Service.User != "nobody" || len(got.Source.DropIns) != 1 {
		t.Errorf("the new drop-in is not applied: %+v", got.Service)
	}
}

// A whole-set problem in a file the cache answered for (another file now
// defines the same object) is reported exactly as without the cache, with
// its line, and a busy or refused file is found on a cache hit as on a read.
func TestFileCacheChecksStillMade(t *testing.T) {
	ageFiles(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.yaml": svcDoc("a", "/bin/true")})
	c := NewFileCache()
	if _, err := loadCached(t, dir, c); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"z.yaml": svcDoc("a", "/bin/false")})
	_, err := loadCached(t, dir, c)
	_, want := loadInsecure(t, dir)
	if err == nil || want == nil || errorLines(t, err, dir) != errorLines(t, want, dir) {
		t.Errorf("duplicate with the cache:\n%v\nwithout:\n%v", err, want)
	}
	if !strings.Contains(errorLines(t, err, dir), "a.yaml:3:") {
		t.Errorf("no line in the cached file's error: %v", errorLines(t, err, dir))
	}

	if err := os.Remove(filepath.Join(dir, "z.yaml")); err != nil {
		t.Fatal(err)
	}
	for range 2 { // cached again
		if _, err := loadCached(t, dir, c); err != nil {
			t.Fatal(err)
		}
	}
	w, err := os.OpenFile(filepath.Join(dir, "a.yaml"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	set, err := loadCached(t, dir, c)
	w.Close()
	if err != nil || !set.Busy["a.yaml"] || set.Objects["Service/a"] != nil {
		t.Errorf("a file open for writing on a cache hit: busy %v, objects %v, err %v", set.Busy, set.Objects, err)
	}

	// The owner and mode checks (Insecure off) are made on every load.
	strict := Options{Host: testHost, OwnerUID: os.Getuid(), Cache: c}
	if _, err := Load(dir, strict); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "a.yaml"), 0o666); err != nil {
		t.Fatal(err)
	}
	set, err = Load(dir, strict)
	if err == nil || set.Objects["Service/a"] != nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("a world-writable manifest on a cache hit: objects %v, err %v", set.Objects, err)
	}
}

// BenchmarkLoad1000Cached is BenchmarkLoad1000 with a FileCache: the
// agent's loop loading an unchanged directory (owner checks on).
func BenchmarkLoad1000Cached(b *testing.B) {
	ageFiles(b)
	dir := bench1000(b)
	opts := Options{Host: testHost, OwnerUID: os.Getuid(), Cache: NewFileCache()}
	for b.Loop() {
		if set, err := Load(dir, opts); err != nil || len(set.Objects) != 1000 {
			b.Fatalf("%v", err)
		}
	}
}
