package systemd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

// listUnitFiles returns the enablement of each name that has a unit file on
// disk, as systemd computes it now from the files and symlinks ("enabled",
// "disabled", "static", "masked", "linked", "alias", ...). Names without a
// unit file are absent.
func (o *Observer) listUnitFiles(ctx context.Context, names []string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	for len(names) > 0 {
		// An empty pattern list would list every unit file.
		chunk := names[:min(len(names), listChunk)]
		names = names[len(chunk):]
		o.count("ListUnitFilesByPatterns")
		files, err := o.c.ListUnitFilesByPatternsContext(ctx, nil, chunk)
		if err != nil {
			return nil, fmt.Errorf("list unit files: %w", err)
		}
		for _, f := range files {
			if n := path.Base(f.Path); want[n] {
				out[n] = f.Type
			}
		}
	}
	return out, nil
}

// searchScan is what vendorFiles found about the search path as a whole.
type searchScan struct {
	// typeDropIns: a drop-in directory for a whole unit type or name
	// prefix exists (service.d, foo-.service.d).
	typeDropIns bool
	// dirsChanged is the newest change time of the directories of the
	// search path read, but those systemd regenerates at each reload
	// (regenerated): a NAME.d directory, an alias or a type drop-in
	// directory removed since a load changes it, where nothing below is
	// left to show it.
	dirsChanged time.Time
	// unread: a directory of the search path could not be read.
	unread bool
}

// regenerated reports a directory of the search path that systemd itself
// rewrites at every daemon-reload, before it loads units, from what it
// then loads (the generators' output), or as it creates units
// (transient ones): its change time says nothing about files changed
// behind a loaded unit's back.
func regenerated(dir string) bool {
	return strings.HasPrefix(dir, "/run/systemd/generator") || dir == "/run/systemd/transient"
}

// vendor is what vendorFiles found for one unit name.
type vendor struct {
	paths     []string
	overrides bool
	// dropIns are the NAME.d/*.conf files on disk, in every directory of
	// the search path.
	dropIns []string
	// dropInsChanged is the newest change time of those NAME.d
	// directories and their files (zero when there are none).
	dropInsChanged time.Time
	// oddDropIns says the list of dropIns may not be what systemd loads
	// from them: an entry ending in .conf that is not a plain regular
	// file (a symlink, a hidden name, anything else), one name in two
	// directories (the higher one wins, and masks), or a drop-in in a
	// directory the search path names twice. aliased says a
	// symlink of another name in the search path points to the unit's
	// name: systemd also loads that name's drop-ins. Either way only
	// systemd can say which drop-ins it loaded (dropInsFromDisk).
	oddDropIns, aliased bool
	// links counts the symlinks named like the unit and pointing to a file
	// of its name in the .wants, .requires and .upholds directories of the
	// unit directory (own) and of the other directories of the search path
	// (other); odd says some entry there names the unit otherwise (a link
	// under another name, to another name, or not a link). enablement.go
	// reads them. dirs names the unit directory's dependency directories
	// holding an own link (multi-user.target.wants, ...), in scan order.
	links struct {
		own, other int
		odd        bool
		dirs       []string
	}
}

// vendorFiles finds, for each name, the files systemd could load for it
// other than a regular file in the unit directory: a unit in another
// directory of systemd's unit search path (/lib/systemd/system,
// /usr/lib/systemd/system, /run/systemd/system, /run/systemd/transient,
// generator output, ...) or a symlink in the unit directory itself (an
// alias, a mask, a linked unit). overrides says the first of them wins over
// a file in the unit directory: it sits in an earlier directory of the
// search path, or is the symlink at the unit's own path, or the unit
// directory is not in the search path at all. It also finds each name's
// NAME.d drop-ins and aliases, and scan says what it saw of the search path
// as a whole (type drop-in directories, the directories' change time, an
// unreadable one).
//
// Cost: one UnitPath read on the first call, then one stat and one
// directory listing per search-path directory per call, however many
// names, and a readlink per symlink with a unit's suffix.
func (o *Observer) vendorFiles(ctx context.Context, want map[string]bool) (out map[string]vendor, scan searchScan, err error) {
	out = map[string]vendor{}
	if len(want) == 0 {
		return out, scan, nil
	}
	dirs, err := o.searchPath(ctx)
	if err != nil {
		return nil, scan, err
	}
	own := len(dirs) // index of the unit directory in the search path
	for i, d := range dirs {
		if filepath.Clean(filepath.Join(o.cfg.root, d)) == filepath.Clean(o.unitDir) {
			own = i
			break
		}
	}
	seen := map[string]bool{}
	// twice: real directories that two entries of the search path name.
	// aliased: entries of the search path that are not their real
	// directory (a symlink on the way: /lib on a merged-/usr host).
	twice := map[string]bool{}
	aliased := make([]bool, len(dirs))
	reals := make([]string, len(dirs))
	rootReal, rerr := filepath.EvalSymlinks(filepath.Join("/", o.cfg.root))
	for i, d := range dirs {
		if real, err := filepath.EvalSymlinks(filepath.Join(o.cfg.root, d)); err == nil {
			reals[i] = real
			twice[real] = seen[real]
			seen[real] = true
			aliased[i] = rerr != nil || real != filepath.Join(rootReal, d)
		}
	}
	clear(seen)
	for i, d := range dirs {
		host := filepath.Join(o.cfg.root, d)
		// /lib and /usr/lib are one directory on a merged-/usr system.
		if real := reals[i]; real != "" {
			if seen[real] {
				continue
			}
			seen[real] = true
		}
		dfi, err := os.Stat(host)
		var entries []os.DirEntry
		if err == nil {
			entries, err = os.ReadDir(host)
		}
		if errors.Is(err, fs.ErrPermission) {
			scan.unread = true
			continue
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue
		}
		if err != nil {
			return nil, scan, fmt.Errorf("read unit search path %s: %w", d, err)
		}
		if c := changeTime(dfi); !regenerated(d) && c.After(scan.dirsChanged) {
			scan.dirsChanged = c
		}
		for _, e := range entries {
			n := e.Name()
			if isDepDir(n) && (e.IsDir() || e.Type()&fs.ModeSymlink != 0) {
				if err := o.depLinks(filepath.Join(host, n), i == own, want, out); err != nil {
					return nil, scan, fmt.Errorf("read %s: %w", path.Join(d, n), err)
				}
				continue
			}
			if typeDropInDir(n) {
				scan.typeDropIns = true
			}
			if base, ok := strings.CutSuffix(n, ".d"); ok && want[base] {
				confs, plain, changed, err := dropInFiles(filepath.Join(host, n))
				if err != nil {
					return nil, scan, fmt.Errorf("read drop-in dir %s: %w", path.Join(d, n), err)
				}
				v := out[base]
				// In a directory the search path names twice (/lib and
				// /usr/lib), systemd lists a drop-in under one name when
				// it loads and finds it under the other when it checks.
				// A drop-in directory reached through a symlink (its own,
				// or the search path's) may be listed under either name.
				v.oddDropIns = v.oddDropIns || !plain || e.Type()&fs.ModeSymlink != 0 ||
					(len(confs) > 0 && (twice[reals[i]] || aliased[i]))
				for _, c := range confs {
					for _, had := range v.dropIns {
						if path.Base(had) == c {
							v.oddDropIns = true
						}
					}
					v.dropIns = append(v.dropIns, path.Join(d, n, c))
				}
				if changed.After(v.dropInsChanged) {
					v.dropInsChanged = changed
				}
				out[base] = v
				continue
			}
			if !want[n] {
				if e.Type()&fs.ModeSymlink != 0 && HasUnitSuffix(n) {
					// An alias (or a link to the unit's file under
					// another name): its NAME.d drop-ins apply too.
					if t, err := os.Readlink(filepath.Join(host, n)); err == nil && want[path.Base(t)] {
						v := out[path.Base(t)]
						v.aliased = true
						out[path.Base(t)] = v
					}
				}
				continue
			}
			if i == own && e.Type().IsRegular() {
				continue // resil's own file, or a foreign one in its place (File)
			}
			v := out[n]
			if len(v.paths) == 0 {
				v.overrides = i <= own
			}
			v.paths = append(v.paths, path.Join(d, n))
			out[n] = v
		}
	}
	return out, scan, nil
}

// dropInFiles lists the *.conf files in a drop-in directory that systemd
// would load: regular files, or symlinks to them (a link to /dev/null masks
// a drop-in). A missing directory has none. changed is the newest change
// time of the directory and of every entry it lists (zero when it is
// missing). plain says every entry ending in .conf is a regular file
// (not a link) with a name that does not start with a dot.
func dropInFiles(dir string) (confs []string, plain bool, changed time.Time, err error) {
	dfi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, true, time.Time{}, nil
	}
	if err != nil {
		return nil, false, time.Time{}, err
	}
	changed = changeTime(dfi)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, true, time.Time{}, nil
	}
	if err != nil {
		return nil, false, time.Time{}, err
	}
	plain = true
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".conf") {
			continue
		}
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			plain = false
		}
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if c := changeTime(fi); c.After(changed) {
			changed = c
		}
		if e.Type()&fs.ModeSymlink != 0 {
			if lfi, err := os.Lstat(p); err == nil && changeTime(lfi).After(changed) {
				changed = changeTime(lfi)
			}
		}
		confs = append(confs, e.Name())
	}
	return confs, plain, changed, nil
}

// typeDropInDir reports a drop-in directory for a whole unit type or name
// prefix that applies to services or timers (service.d, timer.d,
// foo-.service.d): drop-ins resil does not look for per unit.
func typeDropInDir(name string) bool {
	for _, t := range []string{"service", "timer"} {
		if name == t+".d" || strings.HasSuffix(name, "-."+t+".d") {
			return true
		}
	}
	return false
}

// needsReload reports a drop-in on disk that systemd has not loaded for u.
// systemd 252 finds drop-ins through a cache of the directories it saw at
// its last load, so a drop-in in a NAME.d created since then raises
// NeedDaemonReload only once something else refreshes that cache: read
// alone, the flag would flip between two passes with nothing changed on
// disk.
//
// Paths are compared after resolving symlinks below root, so /lib and
// /usr/lib of a merged-/usr system are one directory.
func needsReload(root string, u *observed.Unit, onDisk []string) bool {
	return len(pendingDropIns(root, u, onDisk)) > 0
}

// pendingDropIns are the drop-ins of onDisk that u's DropInPaths (what
// systemd loaded) do not hold, in onDisk's order (see needsReload).
func pendingDropIns(root string, u *observed.Unit, onDisk []string) []string {
	if len(onDisk) == 0 {
		return nil
	}
	loaded := make(map[string]bool, len(u.DropInPaths))
	for _, p := range u.DropInPaths {
		loaded[canonPath(root, p)] = true
	}
	var out []string
	for _, p := range onDisk {
		if !loaded[canonPath(root, p)] {
			out = append(out, p)
		}
	}
	return out
}

// canonPath is p below root with its directory's symlinks resolved.
func canonPath(root, p string) string {
	if r, err := filepath.EvalSymlinks(filepath.Join(root, filepath.Dir(p))); err == nil {
		return filepath.Join(r, filepath.Base(p))
	}
	return filepath.Join(root, p)
}

// searchPath returns systemd's unit search path in priority order, read
// once from the manager's UnitPath property.
func (o *Observer) searchPath(ctx context.Context) ([]string, error) {
	o.mu.Lock()
	dirs := o.unitPath
	o.mu.Unlock()
	if dirs != nil {
		return dirs, nil
	}
	o.count("Get UnitPath")
	v, err := o.c.GetManagerPropertyContext(ctx, "UnitPath")
	if err != nil {
		return nil, fmt.Errorf("read unit search path: %w", err)
	}
	dirs, ok := v.Value().([]string)
	if !ok {
		return nil, fmt.Errorf("read unit search path: UnitPath is %s, want as", v.Signature())
	}
	if dirs == nil {
		dirs = []string{}
	}
	o.mu.Lock()
	o.unitPath = dirs
	o.mu.Unlock()
	return dirs, nil
}

// unitsLoadStart reads when systemd last (re)loaded its units, µs since the
// epoch (0 when it does not say): UnitsLoadTimestamp, which systemd 252
// sets at each daemon-reload (0 until the first), else
// UnitsLoadStartTimestamp, the load at boot.
func (o *Observer) unitsLoadStart(ctx context.Context) (uint64, error) {
	for _, p := range []string{"UnitsLoadTimestamp", "UnitsLoadStartTimestamp"} {
		o.count("Get " + p)
		v, err := o.c.GetManagerPropertyContext(ctx, p)
		if err != nil {
			var derr godbus.Error
			if errors.As(err, &derr) && derr.Name == "org.freedesktop.DBus.Error.UnknownProperty" {
				continue
			}
			return 0, fmt.Errorf("read %s: %w", p, err)
		}
		if ts, _ := v.Value().(uint64); ts != 0 {
			return ts, nil
		}
	}
	return 0, nil
}

// staleProcess reports whether u runs a main process started from an older
// version of its resil-owned files than the one on disk: a restart was
// lost, e.g. the agent was killed between writing the file and restarting
// the unit, and a new agent (with no memory of the old one) finds the file
// already matching the manifest. It is derived only from what the kernel
// and systemd report, so it survives the loss of all local state.
//
// The rule: u is active with a main process (MainPID and
// ExecMainStartTimestamp set); its file at Path carries resil's marker and
// an intact hash (a file edited by hand is FileEdited drift, restored by a
// write that restarts anyway, or left alone under drift: report); and the
// newest modification time M of that file (or its X-Resil-Process-Since
// marker, written by the agent with a change that needs no restart) and of
// u's resil-owned, intact drop-ins on disk is
//   - later than ExecMainStartTimestamp: the file changed after the process
//     started; or
//   - later than loadStart (systemd's last unit (re)load) while systemd
//     reports NeedDaemonReload: systemd has not loaded this version yet, so
//     no process, however recent, can have been started from it (this
//     catches a Restart= restart between the agent's write and its
//     daemon-reload).
//
// Foreign drop-ins never count: a change resil does not own is reported,
// not acted on.
//
// Limits: file times come from the kernel's coarse clock, which lags the
// precise clock systemd stamps ExecMainStartTimestamp with by up to one
// tick (1–10 ms, CONFIG_HZ); a file written within one tick after the
// process started can read as older, and is missed. The agent's own flow
// never gets near that: a daemon-reload (tens of ms at least) separates its
// writes from its starts, so a fresh process is never misread as stale.
// Touching an owned file (same bytes, new mtime) reads as a new version and
// costs one restart. A process restarted by systemd itself between the
// write and a daemon-reload that has since happened ran the old definition
// yet looks newer than the file: undetectable without local memory, which
// the reconciler's restart journal is (reconcile/restart_journal.go).
func staleProcess(u *observed.Unit, fragment time.Time, dropIns map[string]time.Time, loadStart uint64) bool {
	if !u.Active() || u.MainPID == 0 || u.ExecMainStartTimestamp == 0 {
		return false
	}
	m, ok := processVersionTime(u, fragment, dropIns)
	if !ok {
		return false
	}
	if m > int64(u.ExecMainStartTimestamp) {
		return true
	}
	return u.NeedDaemonReload && loadStart != 0 && m > int64(loadStart)
}

// staleRun reports whether u's last run, which exited by itself
// (observed.Unit.ExitedOnItsOwn), started before the version of its
// resil-owned files on disk (processVersionTime, as staleProcess has it):
// a start was lost, e.g. the agent was killed between writing the file of
// a run-once service and starting it, and a new agent would otherwise take
// the old run for the new version's. A version time after now (a clock
// stepped back since the write, a file touched into the future) does not
// count: it would read every later run as stale too, and start the unit on
// every pass. Same limits as staleProcess.
func staleRun(u *observed.Unit, fragment time.Time, dropIns map[string]time.Time, now time.Time) bool {
	// A run that ended before the unit became active counts too (the
	// observer does not know whether it is active on exec): either way
	// it is older than the files, and its start is owed.
	if !u.ExitedOnItsOwn() && !u.ExitedBeforeActive() {
		return false
	}
	m, ok := processVersionTime(u, fragment, dropIns)
	return ok && m > int64(u.ExecMainStartTimestamp) && m <= now.UnixMicro()
}

// processVersionTime is the time of the version of u's resil-owned files a
// process depends on, in µs since the epoch: the newest modification time
// of its file (or that file's X-Resil-Process-Since marker, written by the
// agent with a change that needs no restart) and of its resil-owned,
// intact drop-ins. ok is false when u is not resil's or its file was
// edited by hand (FileEdited drift of its own).
func processVersionTime(u *observed.Unit, fragment time.Time, dropIns map[string]time.Time) (int64, bool) {
	if u.Owner == "" || fragment.IsZero() {
		return 0, false
	}
	if _, intact := ownmark.HashOf(u.File); !intact {
		return 0, false
	}
	// A unit rewritten with reload-only changes says since when its
	// process settings are unchanged; that, not its mtime, is the time
	// of its last version a process depends on.
	newest := fragment
	if since, ok := ownmark.ProcessSince(u.File); ok {
		newest = time.UnixMicro(since)
	}
	for p, t := range dropIns {
		if _, owned := ownmark.IsOwned(u.DropIns[p]); !owned {
			continue
		}
		if _, intact := ownmark.HashOf(u.DropIns[p]); !intact {
			continue
		}
		if t.After(newest) {
			newest = t
		}
	}
	return newest.UnixMicro(), true
}
