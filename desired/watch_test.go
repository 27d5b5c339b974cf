package desired

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// expectWake waits for a wake-up (kubelet's expectUpdate): the watcher must
// notice within a generous deadline. Draining first keeps earlier wakes
// from satisfying a later expectation.
func expectWake(t *testing.T, wakes <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-wakes:
	case <-time.After(10 * time.Second):
		t.Fatalf("no wake-up after %s", what)
	}
}

func drain(wakes <-chan struct{}) {
	for {
		select {
		case <-wakes:
		case <-time.After(100 * time.Millisecond):
			return
		}
	}
}

func TestWatchWakes(t *testing.T) {
	root := t.TempDir()
	for _, rev := range []string{"rev1", "rev2"} {
		if err := os.MkdirAll(filepath.Join(root, rev), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(root, "current")
	if err := os.Symlink("rev1", link); err != nil {
		t.Fatal(err)
	}
	wakes := make(chan struct{}, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Watch(ctx, link, watchOpts, zaptest.NewLogger(t), func() {
			select {
			case wakes <- struct{}{}:
			default:
			}
		}, nil)
	}()
	expectWake(t, wakes, "start (first snapshot)")
	drain(wakes)

	steps := []struct {
		what string
		do   func() error
	}{
		{"a new manifest", func() error { return os.WriteFile(filepath.Join(root, "rev1", "a.yaml"), []byte("x"), 0o644) }},
		{"an editor's rename-save", func() error {
			tmp := filepath.Join(root, "rev1", ".a.yaml.swp")
			if err := os.WriteFile(tmp, []byte("y"), 0o644); err != nil {
				return err
			}
			return os.Rename(tmp, filepath.Join(root, "rev1", "a.yaml"))
		}},
		{"a new drop-in folder", func() error { return os.Mkdir(filepath.Join(root, "rev1", "a.d"), 0o755) }},
		{"a drop-in inside it", func() error {
			return os.WriteFile(filepath.Join(root, "rev1", "a.d", "10.yaml"), []byte("z"), 0o644)
		}},
		{"a symlink swap", func() error {
			tmp := filepath.Join(root, "current.tmp")
			if err := os.Symlink("rev2", tmp); err != nil {
				return err
			}
			return os.Rename(tmp, link)
		}},
		{"a change in the new target", func() error { return os.WriteFile(filepath.Join(root, "rev2", "b.yaml"), []byte("x"), 0o644) }},
		{"a removal", func() error { return os.Remove(filepath.Join(root, "rev2", "b.yaml")) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		expectWake(t, wakes, s.what)
		drain(wakes)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWatchMissingDirStillWakesOnce(t *testing.T) {
	wakes := make(chan struct{}, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Watch(ctx, filepath.Join(t.TempDir(), "nope"), watchOpts, zaptest.NewLogger(t), func() { wakes <- struct{}{} }, nil)
	}()
	expectWake(t, wakes, "start with a missing directory")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// startWatch runs Watch on dir until the test ends; each wake lands on the
// returned channel (never blocking Watch).
func startWatch(t *testing.T, dir string) <-chan struct{} {
	t.Helper()
	return startWatchChanged(t, dir, nil)
}

// startWatchChanged is startWatch with Watch's changed hook.
func startWatchChanged(t *testing.T, dir string, changed func()) <-chan struct{} {
	t.Helper()
	wakes := make(chan struct{}, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Watch(ctx, dir, watchOpts, zaptest.NewLogger(t), func() {
			select {
			case wakes <- struct{}{}:
			default:
			}
		}, changed)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	expectWake(t, wakes, "start (first snapshot)")
	drain(wakes)
	return wakes
}

func countWakes(wakes <-chan struct{}) int {
	n := 0
	for {
		select {
		case <-wakes:
			n++
		case <-time.After(300 * time.Millisecond):
			return n
		}
	}
}

// Issue 9 item 10: the parent of the manifests directory is watched only
// for a swap of the directory's own name. A busy file beside it (the parent
// of /etc/resil.d is /etc) written many times wakes zero passes.
func TestWatchParentBusyFileWakesNothing(t *testing.T) {
	root := t.TempDir()
	mkdir(t, filepath.Join(root, "rev1"))
	mkdir(t, filepath.Join(root, "rev2"))
	link := symlink(t, "rev1", filepath.Join(root, "resil.d"))
	wakes := startWatch(t, link)
	logf, err := os.OpenFile(filepath.Join(root, "busy.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	for i := 0; i < 500; i++ {
		if _, err := logf.WriteString("a log line\n"); err != nil {
			t.Fatal(err)
		}
		// Also whole-file rewrites and chmods of other names.
		if i%50 == 0 {
			if err := os.WriteFile(filepath.Join(root, "other.conf"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(root, "other.conf"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := countWakes(wakes); n != 0 {
		t.Fatalf("writes beside the manifests directory woke %d passes, want 0", n)
	}
	// The swap of the directory's own name still wakes.
	tmp := filepath.Join(root, "resil.d.tmp")
	symlink(t, "rev2", tmp)
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	expectWake(t, wakes, "a symlink swap of the manifests directory")
}

// Issue 9 item 10: chmod and chown of a manifest, a drop-in, a drop-in
// folder or the directory itself wake a pass at once (the owner checks
// read them), not at the next resync.
func TestWatchPermissionChangesWake(t *testing.T) {
	needRoot(t)
	dir := mkdir(t, filepath.Join(t.TempDir(), "resil.d"))
	writeFiles(t, dir, map[string]string{"web.yaml": "x", "web.d/10.yaml": "y"})
	wakes := startWatch(t, dir)
	steps := []struct {
		what string
		do   func() error
	}{
		{"chmod of a manifest", func() error { return os.Chmod(filepath.Join(dir, "web.yaml"), 0o666) }},
		{"chown of a manifest", func() error { return os.Chown(filepath.Join(dir, "web.yaml"), 65534, -1) }},
		{"chmod of a drop-in", func() error { return os.Chmod(filepath.Join(dir, "web.d", "10.yaml"), 0o666) }},
		{"chown of a drop-in", func() error { return os.Chown(filepath.Join(dir, "web.d", "10.yaml"), 65534, -1) }},
		{"chmod of a drop-in folder", func() error { return os.Chmod(filepath.Join(dir, "web.d"), 0o777) }},
		{"chmod of the directory", func() error { return os.Chmod(dir, 0o777) }},
		{"chown of the directory", func() error { return os.Chown(dir, 65534, -1) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		expectWake(t, wakes, s.what)
		drain(wakes)
	}
}

// A manifest being written wakes nothing while its writer holds it open,
// however many writes it sees, and wakes once the writer closes it.
func TestWatchWakesOnCloseNotOnWrite(t *testing.T) {
	dir := mkdir(t, filepath.Join(t.TempDir(), "resil.d"))
	writeFiles(t, dir, map[string]string{"web.yaml": "old\n"})
	wakes := startWatch(t, dir)
	f, err := os.OpenFile(filepath.Join(dir, "web.yaml"), os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := f.WriteString("line\n"); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 {
			if n := countWakes(wakes); n != 0 {
				t.Fatalf("write %d to a file held open woke %d passes", i, n)
			}
		}
	}
	if n := countWakes(wakes); n != 0 {
		t.Fatalf("writes to a file held open woke %d passes", n)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	expectWake(t, wakes, "the writer closed the manifest")
}

// The parent of every symlink on the way to the manifests directory is
// watched for that symlink's name only; the resolved directory and its
// drop-in folders for everything.
func TestWatchSetFollowsSymlinkChain(t *testing.T) {
	root, _ := filepath.EvalSymlinks(t.TempDir())
	rev := mkdir(t, filepath.Join(root, "sync", "rev-abc"))
	mkdir(t, filepath.Join(rev, "web.d"))
	symlink(t, "rev-abc", filepath.Join(root, "sync", "current"))
	etc := mkdir(t, filepath.Join(root, "etc"))
	link := symlink(t, filepath.Join(root, "sync", "current"), filepath.Join(etc, "resil.d"))
	got := watchSet(link)
	want := map[string]watchFilter{
		etc:                         {names: map[string]bool{"resil.d": true}},
		filepath.Join(root, "sync"): {names: map[string]bool{"current": true}},
		rev:                         {all: true},
		filepath.Join(rev, "web.d"): {all: true},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("watchSet = %v\nwant %v", got, want)
	}
}

// A Kubernetes ConfigMap update (new hidden revision folder, "..data"
// swapped, files are symlinks into it) wakes the loop.
func TestWatchConfigMapSwapWakes(t *testing.T) {
	dir := mkdir(t, filepath.Join(t.TempDir(), "resil.d"))
	writeFiles(t, dir, map[string]string{"..2024_01/web.yaml": "x"})
	symlink(t, "..2024_01", filepath.Join(dir, "..data"))
	symlink(t, "..data/web.yaml", filepath.Join(dir, "web.yaml"))
	wakes := startWatch(t, dir)
	writeFiles(t, dir, map[string]string{"..2024_02/web.yaml": "y"})
	drain(wakes)
	symlink(t, "..2024_02", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	expectWake(t, wakes, "the ..data swap")
}

// Loads (reads, leases) of the watched files wake nothing: a pass must not
// wake the next one.
func TestWatchLoadsDoNotWake(t *testing.T) {
	dir := mkdir(t, filepath.Join(t.TempDir(), "resil.d"))
	writeFiles(t, dir, map[string]string{"web.yaml": "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: web}\nspec: {command: [/bin/true]}\n", "web.d/1.yaml": "spec: {user: nobody}\n"})
	wakes := startWatch(t, dir)
	for i := 0; i < 20; i++ {
		if _, err := Load(dir, Options{Host: testHost, OwnerUID: os.Getuid()}); err != nil {
			t.Fatal(err)
		}
		if busy, known := WriterOpen(filepath.Join(dir, "web.yaml"), watchOpts); busy || !known {
			t.Fatalf("WriterOpen = %v, %v", busy, known)
		}
	}
	if n := countWakes(wakes); n != 0 {
		t.Fatalf("loads woke %d passes", n)
	}
}

// watchOpts are the checks Load makes, for the test's user.
var watchOpts = Options{OwnerUID: os.Getuid()}

// Watch's changed hook counts every event that may change a load, a
// write to a manifest whose writer still holds it open included (counted
// at once, not once it settles), again at the wake once the writer closed
// it, and nothing for files Load ignores.
func TestWatchChangedCountsUnsettledWrites(t *testing.T) {
	dir := t.TempDir()
	swap := filepath.Join(dir, ".web.yaml.swp")
	if err := os.WriteFile(swap, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var changed atomic.Int64
	wakes := startWatchChanged(t, dir, func() { changed.Add(1) })

	// A write to a file Load ignores: no count.
	base := changed.Load() // the first snapshot's wake counts one
	if err := os.WriteFile(swap, []byte("xy"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := changed.Load() - base; n != 0 {
		t.Errorf("a swap file counted %d changes, want 0", n)
	}
	// A manifest held open for writing: counted at once.
	f, err := os.OpenFile(filepath.Join(dir, "web.yaml"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("apiVersion: resil.dev/v1\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for changed.Load() == base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if changed.Load() == base {
		t.Fatal("a write to an open manifest counted no change")
	}
	// Its writer closes it: the wake that follows counts a change too (what
	// Load returns changed: busy before, read after), even with no event.
	if n := countWakes(wakes); n != 0 {
		t.Fatalf("woke %d times while the manifest was open for writing", n)
	}
	before := changed.Load()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	expectWake(t, wakes, "the writer closed the manifest")
	// The count follows the wake (once the watches are re-added).
	deadline = time.Now().Add(5 * time.Second)
	for changed.Load() == before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if changed.Load() == before {
		t.Error("the wake after the writer closed the manifest counted no change")
	}
}
