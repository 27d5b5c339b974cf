package desired

import (
	"context"
	"os"
	"path/filepath"
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
		done <- Watch(ctx, link, zaptest.NewLogger(t), func() {
			select {
			case wakes <- struct{}{}:
			default:
			}
		})
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
		done <- Watch(ctx, filepath.Join(t.TempDir(), "nope"), zaptest.NewLogger(t), func() { wakes <- struct{}{} })
	}()
	expectWake(t, wakes, "start with a missing directory")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
