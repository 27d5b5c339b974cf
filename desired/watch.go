package desired

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// Settling of written files (see Watch).
const (
	// settlePoll is how often a file written to is checked for its writer
	// having closed it.
	settlePoll = 100 * time.Millisecond
	// settleQuiet is how long a file whose writers cannot be told (no lease
	// possible) must see no write before it wakes the loop.
	settleQuiet = 500 * time.Millisecond
)

// watchFilter says which events of one watched directory matter: all of
// them (the manifests directory and its drop-in folders), or only those
// naming one of names (a parent directory, watched for a swap of the name
// of the manifests directory or of a symlink on its path).
type watchFilter struct {
	all   bool
	names map[string]bool
}

// Watch wakes the loop whenever anything under the manifests directory may
// have changed. It watches directories, not files (editors save by
// renaming):
//
//   - the directory as resolved now, and each NAME.d drop-in folder in it:
//     every create, remove, rename and chmod/chown (a permission change is
//     noticed at once) wakes the loop;
//   - the parent of the configured path, and the directory holding each
//     symlink on the way to the resolved directory (git-sync, Kubernetes
//     ConfigMap "..data"): only events naming that entry wake the loop, so
//     writes to other files there (/etc is busy) wake nothing.
//
// A write to a manifest does not wake the loop by itself: the file may be
// half written. fsnotify v1.10.1 does not export inotify's IN_CLOSE_WRITE
// (its UnportableCloseWrite/WithOps are unexported), so Watch debounces
// instead: a written (or newly created) manifest is checked every
// settlePoll and wakes the loop once no process holds it open for writing
// (a read lease can be taken, see WriterOpen: the file is opened only
// through the walk Load uses, with opts, so nothing Load would refuse and
// nothing but a regular file is ever opened), or, where that cannot be
// told, once it saw no write for settleQuiet. Load refuses busy files too,
// which covers startup, the periodic resync and passes woken by another
// file. Writes to names that are not manifests (swap files, logs) are
// ignored. A file opened for writing and closed without a write makes no
// event at all; the loop comes back by itself while a load finds a file
// busy (reconcile's busyRecheck).
//
// After each waking event it re-resolves and re-adds watches. An inotify
// queue overflow just wakes the loop: the pass re-reads everything.
//
// wake must not block. Watch calls wake once at start (the first snapshot,
// even when the directory is missing) and returns when ctx is done, after
// closing its watcher; it returns an error only if inotify is unavailable.
// It starts no goroutine of its own (fsnotify's reader is closed with it).
//
// changed (nil: none) is called for every event that may change what Load
// returns, at once (a write whose writer still holds the file open
// included), and again right after each wake, once the watches were
// re-added (a writer that closed its file changes what Load returns: busy
// before, read after; a new drop-in folder is watched only from then):
// a load begun before either may be stale (reconcile's LoadAhead). It
// must not block. The wake comes first so that the loop's settle delay
// counts from the event; the debug line naming the event is written
// after it. What inotify does not report (a symlinked file's target
// outside the watched folders, a permission change above the parent of
// dir, writes through mmap) calls neither, as it wakes nothing.
func Watch(ctx context.Context, dir string, opts Options, log *zap.Logger, wake, changed func()) error {
	if changed == nil {
		changed = func() {}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %q: %w", dir, err)
	}
	defer w.Close()
	watched := map[string]watchFilter{}
	resync := func() {
		want := watchSet(dir)
		for p := range watched {
			if _, ok := want[p]; !ok {
				_ = w.Remove(p)
				delete(watched, p)
			}
		}
		for p, f := range want {
			if _, ok := watched[p]; !ok {
				if err := w.Add(p); err != nil {
					log.Debug("watch add failed", zap.String("path", p), zap.Error(err))
					continue
				}
			}
			watched[p] = f
		}
	}
	// pending: manifests written to, by the time of the last write.
	pending := map[string]time.Time{}
	settle := time.NewTimer(settlePoll)
	settle.Stop()
	defer settle.Stop()
	// check wakes the loop if a pending file has settled, and re-arms.
	check := func() bool {
		woke := false
		now := time.Now()
		for p, last := range pending {
			busy, known := WriterOpen(p, opts)
			if busy || (!known && now.Sub(last) < settleQuiet) {
				continue
			}
			delete(pending, p)
			woke = true
		}
		if len(pending) > 0 {
			settle.Reset(settlePoll)
		}
		return woke
	}
	// wakeNow kicks the loop first (its settle delay counts from the
	// event, not from the bookkeeping after it), then re-adds the watches
	// and counts the change: a load begun before that count is taken as
	// stale, so one begun between the kick and the count is only wasted.
	wakeNow := func() {
		wake()
		resync()
		changed()
	}
	resync()
	changed()
	wake()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			act := classify(watched, ev)
			if act != evIgnore {
				changed()
			}
			switch act {
			case evIgnore:
				continue
			case evSettle:
				_, known := pending[ev.Name]
				pending[ev.Name] = time.Now()
				if known {
					continue // the poll checks it
				}
				if check() {
					wakeNow()
				}
				log.Debug("manifest written", zap.String("path", ev.Name), zap.Stringer("op", ev.Op))
			case evWake:
				// A removed or renamed file no longer needs settling.
				delete(pending, ev.Name)
				wakeNow()
				log.Debug("manifest change", zap.String("path", ev.Name), zap.Stringer("op", ev.Op))
			}
		case <-settle.C:
			if check() {
				wakeNow()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				log.Warn("watch overflow, relisting")
			} else {
				log.Warn("watch error", zap.Error(err))
			}
			wakeNow()
		}
	}
}

type evAction int

const (
	evIgnore evAction = iota
	evSettle          // a manifest was written: wake once its writer closed it
	evWake
)

// classify decides what an event means for the loop.
func classify(watched map[string]watchFilter, ev fsnotify.Event) evAction {
	if f, self := watched[ev.Name]; self {
		// The watched directory itself: removed, moved, or its
		// permissions changed (which the owner checks read).
		if f.all || ev.Has(fsnotify.Chmod) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			return evWake
		}
		return evIgnore
	}
	f, ok := watched[filepath.Dir(ev.Name)]
	if !ok {
		return evIgnore // a late event of a directory no longer watched
	}
	base := filepath.Base(ev.Name)
	if !f.all {
		if f.names[base] {
			return evWake
		}
		return evIgnore
	}
	manifest := IsManifestName(base)
	switch {
	case ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Chmod):
		return evWake
	case ev.Has(fsnotify.Write) || ev.Has(fsnotify.Create):
		if manifest {
			return evSettle
		}
		if ev.Has(fsnotify.Create) {
			return evWake // a folder, a symlink ("..data"), a renamed-in file
		}
	}
	return evIgnore
}

// watchSet lists the directories to watch for dir, with what matters in each.
func watchSet(dir string) map[string]watchFilter {
	out := map[string]watchFilter{}
	addName := func(d, name string) {
		f, ok := out[d]
		if ok && f.all {
			return
		}
		if f.names == nil {
			f.names = map[string]bool{}
		}
		f.names[name] = true
		out[d] = f
	}
	clean, err := filepath.Abs(dir)
	if err != nil {
		return out
	}
	if parent := filepath.Dir(clean); parent != clean {
		if st, err := os.Stat(parent); err == nil && st.IsDir() {
			addName(parent, filepath.Base(clean))
		}
	}
	w, err := newWalker(Options{Insecure: true})
	if err != nil {
		return out
	}
	defer w.close()
	stack, _, _, err := w.walk(w.root, clean, true)
	for _, l := range w.links {
		addName(filepath.Dir(l), filepath.Base(l))
	}
	if err != nil {
		return out
	}
	top := stack[len(stack)-1]
	out[top.path] = watchFilter{all: true}
	ents, err := listDir(top)
	if err != nil {
		return out
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".d") || strings.HasPrefix(name, ".") {
			continue
		}
		n := len(w.links)
		sub, _, _, err := w.walk(stack, name, true)
		for _, l := range w.links[n:] {
			addName(filepath.Dir(l), filepath.Base(l))
		}
		if err == nil {
			out[sub[len(sub)-1].path] = watchFilter{all: true}
		}
	}
	return out
}
