package desired

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A file written just before a load is not cached (its change time is
// within filestamp.RacyWindow of the load): a second write in the same clock tick
// would leave its identity unchanged. Once older, it is.
func TestFileCacheRacyFileNotCached(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.yaml": svcDoc("a", "/bin/aaa")})
	c := NewFileCache()
	first, err := loadCached(t, dir, c)
	if err != nil {
		t.Fatal(err)
	}
	second, err := loadCached(t, dir, c)
	if err != nil {
		t.Fatal(err)
	}
	if first.Objects["Service/a"] == second.Objects["Service/a"] {
		t.Fatal("a file changed just before the load was answered from the cache")
	}
	ageFiles(t)
	third, _ := loadCached(t, dir, c)
	fourth, _ := loadCached(t, dir, c)
	if third.Objects["Service/a"] != fourth.Objects["Service/a"] {
		t.Fatal("a file older than the racy window was parsed again")
	}
}

// exampleDirs are the manifest directories the round trip is checked on:
// every example and every valid test directory.
func exampleDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	for _, pattern := range []string{"../manifests", "../manifests/*", "../manifests/examples/*", "testdata/render", "testdata/golden/*"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range m {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				dirs = append(dirs, d)
			}
		}
	}
	if len(dirs) < 4 {
		t.Fatalf("found only %v", dirs)
	}
	return dirs
}

// The cache file gives back objects equal to the ones Load parsed, for
// every manifest of the examples and test data, and a load answered from it
// equals a load without any cache.
func TestCacheFileRoundTrip(t *testing.T) {
	ageFiles(t)
	checked := 0
	defer func() {
		if checked < 4 {
			t.Errorf("only %d directories had files to cache", checked)
		}
	}()
	for _, dir := range exampleDirs(t) {
		t.Run(dir, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), CacheFileName)
			c, err := LoadFileCache(path, "stamp")
			if !os.IsNotExist(err) {
				t.Fatalf("missing file: %v", err)
			}
			want, werr := loadInsecure(t, dir)
			if _, err := loadCached(t, dir, c); (err == nil) != (werr == nil) {
				t.Fatalf("cached load: %v, plain: %v", err, werr)
			}
			if err := c.Save(path); err != nil {
				t.Fatal(err)
			}
			if len(c.files) == 0 {
				t.Logf("%s: no file to cache (none, or all with drop-ins or problems)", dir)
				return
			}
			checked++
			back, err := LoadFileCache(path, "stamp")
			if err != nil {
				t.Fatal(err)
			}
			if len(back.files) != len(c.files) {
				t.Fatalf("%d files back, %d saved", len(back.files), len(c.files))
			}
			for f, cf := range c.files {
				got := back.files[f]
				if got.id != cf.id || len(got.objs) != len(cf.objs) {
					t.Fatalf("%s: id %+v objects %d, want %+v %d", f, got.id, len(got.objs), cf.id, len(cf.objs))
				}
				for i, o := range cf.objs {
					if !reflect.DeepEqual(got.objs[i], o) {
						a, _ := json.Marshal(got.objs[i].Service)
						b, _ := json.Marshal(o.Service)
						t.Fatalf("%s: %s differs after the cache file:\n%#v\n%#v\n%s\nwant\n%#v\n%#v\n%s", f, o.ID(), got.objs[i], got.objs[i].Service, a, o, o.Service, b)
					}
				}
			}
			set, err := loadCached(t, dir, back)
			if (err == nil) != (werr == nil) || !reflect.DeepEqual(set, want) {
				t.Fatalf("a load answered from the cache file differs from one without a cache:\n%+v\n%+v", set, want)
			}
			if back.dirty {
				t.Error("a load that found every file as cached marked the cache changed")
			}
		})
	}
}

// Documents come back from the cache file byte for byte, characters JSON
// encoders escape included.
func TestCacheFileKeepsDocumentBytes(t *testing.T) {
	ageFiles(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.yaml": "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: a}\nspec:\n  command: [/bin/sh, -c, \"true && test 1 -lt 2 > /dev/null\"]\n"})
	path := filepath.Join(t.TempDir(), CacheFileName)
	c, _ := LoadFileCache(path, "s")
	set, err := loadCached(t, dir, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := LoadFileCache(path, "s")
	if err != nil {
		t.Fatal(err)
	}
	got := back.files["a.yaml"].objs[0].Document()
	if want := set.Objects["Service/a"].Document(); string(got) != string(want) {
		t.Errorf("document from the cache file:\n%s\nwant\n%s", got, want)
	}
}

// The cache file is refused when another build wrote it, when it is
// writable by group or other, when it is a symlink or does not decode;
// the cache is then empty and usable.
func TestCacheFileRefused(t *testing.T) {
	ageFiles(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.yaml": svcDoc("a", "/bin/aaa")})
	state := t.TempDir()
	path := filepath.Join(state, CacheFileName)
	c, _ := LoadFileCache(path, "one")
	if _, err := loadCached(t, dir, c); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("cache file: %v %v", fi, err)
	}
	if c, err := LoadFileCache(path, "one"); err != nil || len(c.files) != 1 {
		t.Fatalf("same stamp: %d files, %v", len(c.files), err)
	}
	check := func(name, stamp, want string) {
		t.Helper()
		c, err := LoadFileCache(path, stamp)
		if err == nil || !strings.Contains(err.Error(), want) || len(c.files) != 0 {
			t.Errorf("%s: err %v (want %q), %d files", name, err, want, len(c.files))
		}
		if _, lerr := loadCached(t, dir, c); lerr != nil {
			t.Errorf("%s: a load with the refused cache: %v", name, lerr)
		}
	}
	check("another build", "two", "another build")
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	check("world-writable", "one", "writable by group or other")
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	check("half written", "one", "unexpected end")
	real := filepath.Join(state, "real.json")
	if err := os.WriteFile(real, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
	check("symlink", "one", "too many levels")

	// A killed writer's temporary file is removed by the next save.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(state, "."+CacheFileName+"123456")
	if err := os.WriteFile(tmp, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _ = LoadFileCache(path, "one")
	if _, err := loadCached(t, dir, c); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
}

// A cache file written for another manifests directory answers nothing.
func TestCacheFileOtherDirectory(t *testing.T) {
	ageFiles(t)
	one, two := t.TempDir(), t.TempDir()
	writeFiles(t, one, map[string]string{"a.yaml": svcDoc("a", "/bin/one")})
	writeFiles(t, two, map[string]string{"a.yaml": svcDoc("a", "/bin/two")})
	path := filepath.Join(t.TempDir(), CacheFileName)
	c, _ := LoadFileCache(path, "s")
	if _, err := loadCached(t, one, c); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	c, _ = LoadFileCache(path, "s")
	set, err := loadCached(t, two, c)
	if err != nil || set.Objects["Service/a"].Service.Command[0] != "/bin/two" {
		t.Fatalf("load of another directory: %v %v", set, err)
	}
}

// BenchmarkLoadFileCache1000: reading back the cache file of 1000
// manifests as the systemd benchmark writes them.
func BenchmarkLoadFileCache1000(b *testing.B) {
	ageFiles(b)
	dir := bench1000(b)
	path := filepath.Join(b.TempDir(), CacheFileName)
	c, _ := LoadFileCache(path, "s")
	if _, err := Load(dir, Options{Host: testHost, Insecure: true, Cache: c}); err != nil {
		b.Fatal(err)
	}
	if err := c.Save(path); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if c, err := LoadFileCache(path, "s"); err != nil || len(c.files) != 1000 {
			b.Fatalf("%d files, %v", len(c.files), err)
		}
	}
}
