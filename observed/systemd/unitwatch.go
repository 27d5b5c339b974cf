package systemd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/internal/filestamp"
	"resil.dev/resil/observed"
)

// The unit directory's part of Subscribe: changes to unit files, drop-ins
// and enablement links made by hand or by systemctl wake the loop as a
// stopped unit does, not only at the next resync.
//
// Two sources, because neither covers everything:
//   - inotify on the unit directory (WithRoot does not apply: it is the
//     directory the Observer scans), its dependency directories
//     (NAME.wants, .requires, .upholds) and drop-in directories (NAME.d):
//     a hand edit, `rm` or new file tells systemd nothing until a
//     daemon-reload, so no signal comes; systemctl enable, disable, mask
//     and unmask change links there too.
//   - the manager's UnitFilesChanged (systemctl enable, disable, mask,
//     unmask, link, preset, also --runtime in /run, which inotify does not
//     see) and Reloading(false) (a daemon-reload finished: what systemd
//     loaded may have changed from files outside the unit directory).
//
// inotify events are only hints: after they pause for diskGather, a disk
// check compares the directory's entries with the last check's and wakes
// on a difference. The agent's own operations (OwnFiles) are told apart
// by ownFiles (ownfiles.go). The pass it wakes reads the change: the
// unit directory's scan and the dependency directories' listings are
// read again whenever their stamps moved, and the cached properties of a
// unit whose file or status changed are read again (cache.go).

// diskGather is how long inotify events must pause before a disk check
// (an editor's write, rename and chmod are one check).
const diskGather = 20 * time.Millisecond

// OwnFiles tells Subscribe that the agent is about to change files in the
// unit directory or ask systemd to change unit files or reload
// (actuators/systemd calls it through WithOwnJobs). done must be called
// once, after the operation, with what it changed: until then the unit
// directory is not checked and the manager's UnitFilesChanged and
// Reloading signals are held; afterwards the changes and the signal it
// reports wake no pass, and whatever else changed meanwhile does (see
// ownFiles).
func (o *Observer) OwnFiles() (done func(observed.OwnChange)) {
	o.mu.Lock()
	o.own.begin(o.cfg.now())
	o.mu.Unlock()
	once := false
	return func(c observed.OwnChange) {
		if once {
			return
		}
		once = true
		values, prefixes := o.ownValues(c)
		o.mu.Lock()
		o.own.done(o.cfg.now(), c.Signal, values, prefixes)
		o.mu.Unlock()
		o.ownJobsChanged() // Subscribe checks what waited for it
	}
}

// ownValues reads the entries an operation changed as diskSnapshot
// would: their values now ("" absent), and the directories it changed as
// a whole, relative to the unit directory. Paths outside it are left out.
func (o *Observer) ownValues(c observed.OwnChange) (map[string]string, []string) {
	values := map[string]string{}
	var prefixes []string
	for _, p := range c.Paths {
		rel, ok := o.relUnitDir(p)
		if !ok {
			continue
		}
		fi, err := os.Lstat(p)
		switch {
		case err != nil:
			values[rel] = ""
			prefixes = append(prefixes, rel) // a directory removed
		case fi.IsDir():
			prefixes = append(prefixes, rel)
			entries, _ := os.ReadDir(p)
			for _, e := range entries {
				if fi, err := e.Info(); err == nil {
					values[rel+"/"+e.Name()] = entryValue(filepath.Join(p, e.Name()), fi)
				}
			}
		default:
			values[rel] = entryValue(p, fi)
		}
	}
	for _, l := range c.Links {
		k, ok := o.relUnitDir(filepath.Join(o.cfg.root, l.Path))
		if !ok {
			// systemd's path in its own mount namespace: below its unit
			// directory, or a dependency directory's link.
			if k, ok = strings.CutPrefix(l.Path, "/etc/systemd/system/"); !ok {
				k = filepath.Base(filepath.Dir(l.Path)) + "/" + filepath.Base(l.Path)
			}
		}
		if l.Dest == "" {
			values[k] = ""
		} else {
			values[k] = "l:" + l.Dest
		}
	}
	return values, prefixes
}

// relUnitDir returns p relative to the unit directory, if below it.
func (o *Observer) relUnitDir(p string) (string, bool) {
	rel, err := filepath.Rel(o.unitDir, p)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return rel, true
}

// entryValue is what a disk check compares of one entry: a regular file's
// stamp, a symlink's target.
func entryValue(path string, fi fs.FileInfo) string {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(path)
		if err != nil {
			return "l?"
		}
		return "l:" + t
	case fi.Mode().IsRegular():
		s := filestamp.Of(fi)
		return fmt.Sprintf("f:%d:%d:%d:%d:%d", s.Dev, s.Ino, s.Size, s.Mtime, s.Ctime)
	}
	return "o:" + fi.Mode().Type().String()
}

// watchedDir reports whether a directory in the unit directory holds
// entries a disk check compares: a dependency directory or a drop-in
// directory.
func watchedDir(name string) bool {
	return !strings.HasPrefix(name, ".") && (isDepDir(name) || strings.HasSuffix(name, ".d"))
}

// diskSnapshot reads the unit directory's entries that bear on what
// Observe reads: unit files and links of unit names in it (a mask is a
// link to /dev/null), every entry of its dependency directories and the
// .conf files of its drop-in directories, by path relative to dir, each
// with its entryValue. Hidden names (the agent's and editors' temporary
// files) are left out. dirs are the subdirectories read (to watch). A
// missing directory holds nothing.
func diskSnapshot(dir string) (snap map[string]string, dirs []string, err error) {
	snap = map[string]string{}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return snap, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read unit dir %s: %w", dir, err)
	}
	for _, e := range entries {
		n := e.Name()
		switch {
		case e.IsDir() && watchedDir(n):
			dirs = append(dirs, n)
			sub, err := os.ReadDir(filepath.Join(dir, n))
			if err != nil {
				continue // removed meanwhile: its entries are gone
			}
			dropIns := strings.HasSuffix(n, ".d")
			for _, s := range sub {
				if strings.HasPrefix(s.Name(), ".") || dropIns && !strings.HasSuffix(s.Name(), ".conf") {
					continue
				}
				if fi, err := s.Info(); err == nil {
					snap[n+"/"+s.Name()] = entryValue(filepath.Join(dir, n, s.Name()), fi)
				}
			}
		case !e.IsDir() && !strings.HasPrefix(n, ".") && HasUnitSuffix(n):
			if fi, err := e.Info(); err == nil {
				snap[n] = entryValue(filepath.Join(dir, n), fi)
			}
		}
	}
	return snap, dirs, nil
}

// diskWatch is Subscribe's inotify watch of the unit directory and what
// its disk checks compare with. Used by Subscribe's goroutine only.
type diskWatch struct {
	w       *fsnotify.Watcher // nil: no inotify (the directory is missing)
	dir     string
	watched map[string]bool
	last    map[string]string
	pending bool // events came since the last check
	// signal: a manager signal of an operator's came; the check wakes
	// whatever it finds.
	signal bool
	timer  *time.Timer
}

// signalled records a manager signal that wakes (managerSignal): the
// check after diskGather wakes, once for the signal and the inotify
// events of the same change.
func (d *diskWatch) signalled() {
	d.signal, d.pending = true, true
	d.timer.Reset(diskGather)
}

// isManagerSignal reports whether s is one managerSignal decides about.
func isManagerSignal(s *godbus.Signal) bool {
	return s != nil && (s.Name == managerIface+".UnitFilesChanged" || s.Name == managerIface+".Reloading")
}

// startDiskWatch watches the unit directory and takes the first
// snapshot. A missing unit directory is watched by no inotify (the
// manager's signals still wake).
func (o *Observer) startDiskWatch() (*diskWatch, error) {
	d := &diskWatch{dir: o.unitDir, watched: map[string]bool{}, timer: time.NewTimer(time.Hour)}
	d.timer.Stop()
	if _, err := os.Stat(o.unitDir); errors.Is(err, fs.ErrNotExist) {
		d.last = map[string]string{}
		return d, nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch unit dir: %w", err)
	}
	d.w = w
	if err := w.Add(o.unitDir); err != nil {
		d.close()
		return nil, fmt.Errorf("watch unit dir: %w", err)
	}
	d.watched[o.unitDir] = true
	o.mu.Lock()
	o.own.paths, o.own.prefixes = nil, nil // older than the first snapshot
	o.mu.Unlock()
	snap, dirs, err := diskSnapshot(o.unitDir)
	if err != nil {
		d.close()
		return nil, err
	}
	d.last = snap
	d.watch(dirs)
	return d, nil
}

// watch adds inotify watches of the subdirectories not yet watched. A
// directory that cannot be watched (gone, the inotify limit) is left to
// the manager's signals and the resync.
func (d *diskWatch) watch(dirs []string) {
	if d.w == nil {
		return
	}
	for _, n := range dirs {
		p := filepath.Join(d.dir, n)
		if d.watched[p] {
			continue
		}
		if d.w.Add(p) == nil {
			d.watched[p] = true
		}
	}
}

// events and errors are the watcher's channels (nil without inotify).
func (d *diskWatch) events() <-chan fsnotify.Event {
	if d.w == nil {
		return nil
	}
	return d.w.Events
}

func (d *diskWatch) errors() <-chan error {
	if d.w == nil {
		return nil
	}
	return d.w.Errors
}

// event records an inotify event: a check after diskGather.
func (d *diskWatch) event(ev fsnotify.Event) {
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		delete(d.watched, ev.Name) // inotify dropped the watch with it
	}
	d.pending = true
	d.timer.Reset(diskGather)
}

// close ends the inotify watch; fsnotify's Close returns once its reader
// goroutine has ended.
func (d *diskWatch) close() {
	d.timer.Stop()
	if d.w != nil {
		_ = d.w.Close()
	}
}

// diskCheck runs a pending disk check unless the agent's own operation
// is open (then the check waits for its done, or diskGather more). It
// reports whether the loop must wake.
func (o *Observer) diskCheck(d *diskWatch) bool {
	if !d.pending {
		return false
	}
	o.mu.Lock()
	busy, gen := o.own.busy(o.cfg.now(), ownJobMaxWait), o.own.gen
	o.mu.Unlock()
	if busy {
		d.timer.Reset(time.Second) // done kicks sooner
		return false
	}
	snap, dirs, err := diskSnapshot(d.dir)
	if err != nil {
		d.timer.Reset(time.Second)
		return false
	}
	d.watch(dirs)
	o.mu.Lock()
	if o.own.gen != gen {
		o.mu.Unlock()
		d.timer.Reset(diskGather) // an operation began meanwhile
		return false
	}
	changed := o.own.explain(d.last, snap)
	o.mu.Unlock()
	signal := d.signal
	d.last, d.pending, d.signal = snap, false, false
	if len(changed) == 0 && !signal {
		return false
	}
	o.changes.Add(1)
	return true
}

// managerSignal decides about the manager's UnitFilesChanged and
// Reloading signals: whether s is one that wakes (ownFiles.signal).
// Called with o.mu held.
func (o *Observer) managerSignal(s *godbus.Signal) bool {
	switch s.Name {
	case managerIface + ".UnitFilesChanged":
		return o.own.signal(sigUnitFilesChanged, o.cfg.now())
	case managerIface + ".Reloading":
		if len(s.Body) > 0 {
			if reloading, ok := s.Body[0].(bool); ok && !reloading {
				return o.own.signal(sigReloaded, o.cfg.now())
			}
		}
	}
	return false
}
