package desired

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// Watch wakes the loop whenever anything under the manifests directory may
// have changed. It watches directories, not files (editors save by
// renaming), namely: the directory as resolved now, each NAME.d drop-in
// folder in it, and the parent of the configured path, so that a symlink
// swap (git-sync, Kubernetes ConfigMap "..data") is seen. After each event
// it re-resolves and re-adds watches. Chmod events are ignored. An inotify
// queue overflow just wakes the loop: the pass re-reads everything.
//
// wake must not block. Watch calls wake once at start (the first snapshot,
// even when the directory is missing) and returns when ctx is done, after
// closing its watcher; it returns an error only if inotify is unavailable.
func Watch(ctx context.Context, dir string, log *zap.Logger, wake func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	defer w.Close()
	watched := map[string]bool{}
	resync := func() {
		want := watchSet(dir)
		for p := range watched {
			if !want[p] {
				_ = w.Remove(p)
				delete(watched, p)
			}
		}
		for p := range want {
			if watched[p] {
				continue
			}
			if err := w.Add(p); err != nil {
				log.Debug("watch add failed", zap.String("path", p), zap.Error(err))
				continue
			}
			watched[p] = true
		}
	}
	resync()
	wake()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			log.Debug("manifest change", zap.String("path", ev.Name), zap.Stringer("op", ev.Op))
			resync()
			wake()
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				log.Warn("watch overflow, relisting")
			} else {
				log.Warn("watch error", zap.Error(err))
			}
			resync()
			wake()
		}
	}
}

// watchSet lists the directories to watch for dir.
func watchSet(dir string) map[string]bool {
	out := map[string]bool{}
	clean := filepath.Clean(dir)
	if parent := filepath.Dir(clean); parent != clean {
		if st, err := os.Stat(parent); err == nil && st.IsDir() {
			out[parent] = true
		}
	}
	resolved, err := filepath.EvalSymlinks(clean)
	if err != nil {
		return out
	}
	out[resolved] = true
	ents, err := os.ReadDir(resolved)
	if err != nil {
		return out
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".d") && !strings.HasPrefix(e.Name(), ".") {
			p := filepath.Join(resolved, e.Name())
			if st, err := os.Stat(p); err == nil && st.IsDir() {
				out[p] = true
			}
		}
	}
	return out
}
