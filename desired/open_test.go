package desired

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
)

// needRoot fails (RESIL_E2E_REQUIRE=1) or skips a test that must chown.
func needRoot(t *testing.T) {
	t.Helper()
	sandbox.RequireRoot(t, "to chown test files")
}

const nobodyUID = 65534

func svcDoc(name, cmd string) string {
	return fmt.Sprintf("apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: %s}\nspec: {command: [%s]}\n", name, cmd)
}

// A file some process holds open for writing is not read, is not an error
// and is reported in Set.Busy; once closed it loads.
func TestLoadBusyFile(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.yaml": svcDoc("a", "/bin/true"), "b.yaml": svcDoc("b", "/bin/true"), "b.d/10.yaml": "spec: {user: nobody}\n"})
	held := map[string]*os.File{}
	for _, f := range []string{"a.yaml", "b.d/10.yaml"} {
		w, err := os.OpenFile(filepath.Join(dir, f), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		held[f] = w
	}
	set, err := loadInsecure(t, dir)
	if err != nil {
		t.Fatalf("busy files are not errors: %v", err)
	}
	if got := sortedKeys(set.Busy); !slices.Equal(got, []string{"a.yaml", "b.d/10.yaml"}) {
		t.Errorf("Busy = %q", got)
	}
	if set.Objects["Service/a"] != nil || len(set.Broken) != 0 {
		t.Errorf("objects %v, Broken %v", sortedKeys(set.Objects), set.Broken)
	}
	// b loads without its busy drop-in, but must keep its last good version.
	b := set.Objects["Service/b"]
	if b == nil || !set.IsBroken(b) {
		t.Fatalf("Service/b = %v, IsBroken must say keep the last good version", b)
	}
	if f, busy := set.Unsettled(b); f != "b.d/10.yaml" || !busy {
		t.Errorf("Unsettled(b) = %q, %v", f, busy)
	}
	if !set.IsBroken(&Object{Kind: KindService, Metadata: ObjectMeta{Name: "a"}, Source: Source{File: "a.yaml"}}) {
		t.Errorf("the last good a from a busy file is not kept")
	}
	for _, w := range held {
		w.Close()
	}
	set, err = loadInsecure(t, dir)
	if err != nil || len(set.Busy) != 0 || set.Objects["Service/a"] == nil || set.Objects["Service/b"].Service.User != "nobody" {
		t.Fatalf("after close: %v, busy %v, objects %v", err, set.Busy, sortedKeys(set.Objects))
	}
}

// Files (manifests and drop-ins) with no document are reported in
// Set.Empty, not as errors; IsBroken keeps what they held.
func TestLoadEmptyFiles(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"a.yaml":         "",
		"b.yaml":         "# only a comment\n",
		"c.yml":          "---\n",
		"d.yaml":         "---\n# x\n---\n\n",
		"e.yaml":         svcDoc("e", "/bin/true"),
		"e.d/10.yaml":    "",
		"f.yaml":         "---\n" + svcDoc("f", "/bin/true"),
		"f.d/10.yaml":    "spec: {user: nobody}\n",
		"f.d/20.yaml":    "# nothing\n",
		"g.yaml":         svcDoc("g", "/bin/true"),
		"g.d/10.yaml":    "---\nspec: {user: nobody}\n",
		"z-not-empty.md": "",
	})
	set, err := loadInsecure(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sortedKeys(set.Empty), []string{"a.yaml", "b.yaml", "c.yml", "d.yaml", "e.d/10.yaml", "f.d/20.yaml"}; !slices.Equal(got, want) {
		t.Errorf("Empty = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		o    *Object
		want bool
	}{
		{&Object{Kind: KindService, Metadata: ObjectMeta{Name: "a"}, Source: Source{File: "a.yaml"}}, true},
		{set.Objects["Service/e"], true},
		{set.Objects["Service/f"], true},
		{set.Objects["Service/g"], false},
	} {
		if got := set.IsBroken(tc.o); got != tc.want {
			t.Errorf("IsBroken(%s) = %v, want %v", tc.o.ID(), got, tc.want)
		}
	}
}

// Symlink policy: symlinks are followed, through checked directories only.
func TestLoadSymlinkPolicy(t *testing.T) {
	needRoot(t)
	root, _ := filepath.EvalSymlinks(t.TempDir())
	chmod(t, root, 0o755)
	good := svcDoc("web", "/bin/true")
	// Shared, trusted directory; a group-writable one; a user's one.
	writeFiles(t, root, map[string]string{"shared/web.yaml": good, "gw/web.yaml": good, "user/web.yaml": good, "userfile/web.yaml": good})
	chmod(t, filepath.Join(root, "gw"), 0o775)
	if err := os.Chown(filepath.Join(root, "user"), nobodyUID, nobodyUID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(root, "userfile", "web.yaml"), nobodyUID, nobodyUID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		setup func(dir string)
		want  string // "" loads web; else the error line, relative
	}{
		{"ConfigMap layout", func(dir string) {
			writeFiles(t, dir, map[string]string{"..2024_01/web.yaml": good})
			symlink(t, "..2024_01", filepath.Join(dir, "..data"))
			symlink(t, "..data/web.yaml", filepath.Join(dir, "web.yaml"))
		}, ""},
		{"into a trusted directory", func(dir string) {
			symlink(t, filepath.Join(root, "shared", "web.yaml"), filepath.Join(dir, "web.yaml"))
		}, ""},
		{"relative, through ..", func(dir string) {
			symlink(t, "../../shared/web.yaml", filepath.Join(dir, "web.yaml"))
		}, ""},
		{"into a group-writable directory", func(dir string) {
			symlink(t, filepath.Join(root, "gw", "web.yaml"), filepath.Join(dir, "web.yaml"))
		}, fmt.Sprintf("web.yaml: refused: directory %q has mode 0775, writable by group or others (manifests become root-run programs)", filepath.Join(root, "gw"))},
		{"into a user's directory", func(dir string) {
			symlink(t, filepath.Join(root, "user", "web.yaml"), filepath.Join(dir, "web.yaml"))
		}, fmt.Sprintf("web.yaml: refused: directory %q is owned by uid %d, want root or uid 0 (manifests become root-run programs)", filepath.Join(root, "user"), nobodyUID)},
		{"to a user's file", func(dir string) {
			symlink(t, filepath.Join(root, "userfile", "web.yaml"), filepath.Join(dir, "web.yaml"))
		}, fmt.Sprintf("web.yaml: refused: owned by uid %d, want uid 0 (manifests become root-run programs)", nobodyUID)},
		{"a loop", func(dir string) {
			symlink(t, "web.yaml", filepath.Join(dir, "web.yaml"))
		}, "web.yaml: cannot read: open"},
		{"to a directory", func(dir string) {
			symlink(t, filepath.Join(root, "shared"), filepath.Join(dir, "web.yaml"))
		}, "web.yaml: not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := mkdir(t, filepath.Join(root, "m", strings.ReplaceAll(tc.name, " ", "-")))
			tc.setup(dir)
			set, err := Load(dir, Options{Host: testHost, OwnerUID: 0})
			if set == nil {
				t.Fatalf("Load: %v", err)
			}
			got := strings.TrimSpace(errorLines(t, err, dir))
			if tc.want == "" {
				if err != nil || set.Objects["Service/web"] == nil {
					t.Fatalf("Load: %v, objects %v", err, sortedKeys(set.Objects))
				}
				return
			}
			if !strings.HasPrefix(got, tc.want) || set.Objects["Service/web"] != nil {
				t.Fatalf("errors:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
	// The manifests directory itself reached through a user's directory.
	writeFiles(t, root, map[string]string{"user/m/web.yaml": good})
	if err := os.Chown(filepath.Join(root, "user", "m"), 0, 0); err != nil {
		t.Fatal(err)
	}
	link := symlink(t, filepath.Join(root, "user", "m"), filepath.Join(root, "via-user"))
	if set, err := Load(link, Options{Host: testHost}); !errors.Is(err, ErrUnreadable) || set != nil {
		t.Fatalf("dir through a user's directory: %v, %v", set, err)
	}
}

// Issue 9 item 6: a root-owned symlink into a directory that a non-root
// user controls, the user flipping its target between a root-owned file
// and their own while loads run. The user's content must never load (with
// the check on one lookup and the open on another, it did).
func TestSymlinkFlipRaceNeverLoadsUserFile(t *testing.T) {
	needRoot(t)
	root, _ := filepath.EvalSymlinks(t.TempDir())
	chmod(t, root, 0o755)
	for _, tc := range []struct {
		name    string
		dirUID  int  // owner of the directory the symlink points into
		canLoad bool // whether the root-owned version may load
	}{
		{"directory the user controls", nobodyUID, false},
		{"root directory, user's file renamed in", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := mkdir(t, filepath.Join(root, fmt.Sprint(tc.dirUID)))
			udir := mkdir(t, filepath.Join(base, "user"))
			writeFiles(t, udir, map[string]string{"good": svcDoc("web", "/bin/true"), "evil": svcDoc("web", "/bin/evil")})
			if err := os.Chown(filepath.Join(udir, "evil"), nobodyUID, nobodyUID); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(udir, tc.dirUID, tc.dirUID); err != nil {
				t.Fatal(err)
			}
			cur := filepath.Join(udir, "cur.yaml")
			if err := os.Link(filepath.Join(udir, "good"), cur); err != nil {
				t.Fatal(err)
			}
			dir := mkdir(t, filepath.Join(base, "resil.d"))
			symlink(t, cur, filepath.Join(dir, "web.yaml"))

			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				tmp := filepath.Join(udir, "tmp")
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					src := "good"
					if i%2 == 1 {
						src = "evil"
					}
					_ = os.Remove(tmp)
					if err := os.Link(filepath.Join(udir, src), tmp); err != nil {
						t.Error(err)
						return
					}
					if err := os.Rename(tmp, cur); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			loaded := 0
			for i := 0; i < 500; i++ {
				set, err := Load(dir, Options{Host: testHost})
				if set == nil {
					t.Fatalf("Load: %v", err)
				}
				if o := set.Objects["Service/web"]; o != nil {
					if o.Service.Command[0] != "/bin/true" {
						close(stop)
						wg.Wait()
						t.Fatalf("load %d ran the user's file: %q", i, o.Service.Command)
					}
					loaded++
				}
			}
			close(stop)
			wg.Wait()
			if !tc.canLoad && loaded > 0 {
				t.Fatalf("%d loads read through a directory the user controls", loaded)
			}
			t.Logf("500 loads, %d loaded the root-owned version", loaded)
		})
	}
}

// Issue 9 item 6: a FIFO in place of a manifest (or swapped in while loads
// run) never makes Load wait for a writer; it is refused, naming the file.
func TestLoadFIFONeverHangs(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.yaml": svcDoc("a", "/bin/true"), "web.good": svcDoc("web", "/bin/true")})
	if err := syscall.Mkfifo(filepath.Join(dir, "web.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := withDeadline(t, func() (*Set, error) { return Load(dir, Options{Host: testHost, OwnerUID: os.Getuid()}) })
	if got := strings.TrimSpace(errorLines(t, err, dir)); got != "web.yaml: not a regular file" || set.Objects["Service/a"] == nil {
		t.Fatalf("errors: %s", got)
	}
	// Swapped back and forth while loads run.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			tmp := filepath.Join(dir, "tmp")
			_ = os.Remove(tmp)
			src := filepath.Join(dir, "web.good")
			if i%2 == 1 {
				src = filepath.Join(dir, "fifo")
			}
			if err := os.Link(src, tmp); err != nil {
				t.Error(err)
				return
			}
			if err := os.Rename(tmp, filepath.Join(dir, "web.yaml")); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for i := 0; i < 300; i++ {
		set, err := withDeadline(t, func() (*Set, error) { return Load(dir, Options{Host: testHost, OwnerUID: os.Getuid()}) })
		if got := strings.TrimSpace(errorLines(t, err, dir)); got != "" && got != "web.yaml: not a regular file" {
			t.Fatalf("load %d: %s", i, got)
		}
		if set.Objects["Service/a"] == nil {
			t.Fatalf("load %d lost a.yaml", i)
		}
	}
}

// withDeadline fails the test if f does not return within a minute (a
// hang, not a timing measurement).
func withDeadline(t *testing.T, f func() (*Set, error)) (*Set, error) {
	t.Helper()
	type result struct {
		set *Set
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, e := f()
		ch <- result{s, e}
	}()
	select {
	case r := <-ch:
		if r.set == nil {
			t.Fatalf("Load: %v", r.err)
		}
		return r.set, r.err
	case <-time.After(time.Minute):
		t.Fatal("Load hangs")
	}
	return nil, nil
}

// A git-sync style swap (new revision, symlink swapped, old revision
// deleted) racing loads: every load sees one whole revision, or reports the
// directory unreadable (prune nothing); never a half-deleted revision.
func TestLoadDuringGitSyncSwaps(t *testing.T) {
	root, _ := filepath.EvalSymlinks(t.TempDir())
	rev := func(i int) string {
		d := filepath.Join(root, fmt.Sprintf("rev-%d", i))
		files := map[string]string{}
		for _, n := range []string{"a", "b", "c", "d"} {
			files[n+".yaml"] = fmt.Sprintf("apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: %s}\nspec: {command: [/bin/true], description: rev%d}\n", n, i)
		}
		writeFiles(t, d, files)
		return d
	}
	rev(0)
	link := symlink(t, "rev-0", filepath.Join(root, "current"))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			rev(i)
			tmp := filepath.Join(root, "current.tmp")
			_ = os.Remove(tmp)
			if err := os.Symlink(fmt.Sprintf("rev-%d", i), tmp); err != nil {
				t.Error(err)
				return
			}
			if err := os.Rename(tmp, link); err != nil {
				t.Error(err)
				return
			}
			if err := os.RemoveAll(filepath.Join(root, fmt.Sprintf("rev-%d", i-1))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	whole := 0
	for i := 0; i < 300; i++ {
		set, err := loadInsecure(t, link)
		if errors.Is(err, ErrUnreadable) {
			continue
		}
		if err != nil {
			t.Fatalf("load %d: %v", i, err)
		}
		var revs []string
		for _, o := range set.Sorted() {
			revs = append(revs, o.Service.Description)
		}
		if len(revs) != 4 || len(slices.Compact(slices.Clone(revs))) != 1 {
			t.Fatalf("load %d mixed or lost revisions: %q (files %q)", i, revs, set.Files)
		}
		whole++
	}
	t.Logf("300 loads during swaps: %d whole revisions, the rest unreadable", whole)
}

// Load closes every descriptor it opened, whatever it read: files,
// symlinked files, drop-in folders, busy, empty and refused files.
func TestLoadClosesDescriptors(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"..v1/x.yaml": "", "web.yaml": svcDoc("web", "/bin/true"), "web.d/1.yaml": "spec: {user: nobody}\n", "empty.yaml": "", "bad.yaml": "kind: [\n"}
	for i := 0; i < 50; i++ {
		files[fmt.Sprintf("..v1/s%d.yaml", i)] = svcDoc(fmt.Sprintf("s%d", i), "/bin/true")
	}
	writeFiles(t, dir, files)
	for i := 0; i < 50; i++ {
		symlink(t, fmt.Sprintf("..v1/s%d.yaml", i), filepath.Join(dir, fmt.Sprintf("s%d.yaml", i)))
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(filepath.Join(dir, "web.d", "1.yaml"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	count := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := count()
	for i := 0; i < 5; i++ {
		set, _ := loadInsecure(t, dir)
		if set == nil || len(set.Objects) != 51 || !set.Busy["web.d/1.yaml"] {
			t.Fatalf("load: %v", set)
		}
	}
	if after := count(); after != before {
		t.Fatalf("%d descriptors open after the loads, %d before", after, before)
	}
}

// BenchmarkLoad100: a directory of 100 manifests with the owner checks on
// (openat walk, fstat, read lease per file).
func BenchmarkLoad100(b *testing.B) {
	dir := b.TempDir()
	files := map[string]string{}
	for i := 0; i < 100; i++ {
		files[fmt.Sprintf("s%03d.yaml", i)] = svcDoc(fmt.Sprintf("s%03d", i), "/bin/true")
	}
	writeFiles(b, dir, files)
	opts := Options{Host: testHost, OwnerUID: os.Getuid()}
	for b.Loop() {
		if set, err := Load(dir, opts); err != nil || len(set.Objects) != 100 {
			b.Fatalf("%v", err)
		}
	}
}

// BenchmarkLoad1000: 1000 manifests as the systemd benchmark writes them
// (e2e/bench_test.go: writeServices).
func BenchmarkLoad1000(b *testing.B) {
	dir := bench1000(b)
	opts := Options{Host: testHost, OwnerUID: os.Getuid()}
	for b.Loop() {
		if set, err := Load(dir, opts); err != nil || len(set.Objects) != 1000 {
			b.Fatalf("%v", err)
		}
	}
}
