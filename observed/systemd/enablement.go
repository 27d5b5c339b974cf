package systemd

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"resil.dev/resil/internal/filestamp"
)

// enablement returns the enablement of each name that has a unit file on
// disk, as systemd would compute it from the files and symlinks now.
//
// Neither systemd's UnitFileState property (a cache: a daemon-reload or an
// enable through systemd refreshes it, a symlink made or removed by hand
// does not) nor asking systemd to compute it (ListUnitFilesByPatterns, or
// reading the property after a reload) is cheap: PID 1 scans every .wants
// directory for each unit, about 0.5 ms per unit at 1000 enabled units,
// most of a converged pass. So the plain case is read from the disk the
// way systemd reads it: a regular file in the unit directory, the only
// file for its name in the search path, no drop-ins, an [Install] section
// with WantedBy=, RequiredBy=, UpheldBy= or Alias= and nothing unusual in
// it; then "enabled" when the .wants, .requires or .upholds directories of
// the unit directory hold a symlink of its name to a file of its name and
// no other directory of the search path holds one, "disabled" when none
// does anywhere. Every other name with a unit file (static, indirect,
// masked, linked, runtime-enabled, vendor or generated units, a link of
// another name) is listed with ListUnitFilesByPatterns, as before; the
// sandbox test TestSandboxFidelityPipelinedReads compares the two. A name
// without any unit file on disk has no enablement.
func (o *Observer) enablement(ctx context.Context, names []string, files map[string]unitFile, vendor map[string]vendor) (map[string]string, error) {
	out := make(map[string]string, len(names))
	var ask []string
	for _, n := range names {
		v := vendor[n]
		f, hasFile := files[n]
		if !hasFile && len(v.paths) == 0 {
			continue
		}
		if state, ok := diskEnablement(f.data, hasFile, v); ok {
			out[n] = state
			continue
		}
		ask = append(ask, n)
	}
	if len(ask) == 0 {
		return out, nil
	}
	listed, err := o.listUnitFiles(ctx, ask)
	if err != nil {
		return nil, err
	}
	for n, s := range listed {
		out[n] = s
	}
	return out, nil
}

// diskEnablement is systemd's verdict for the plain case (see enablement);
// ok false: not a plain case, ask systemd.
func diskEnablement(data []byte, hasFile bool, v vendor) (state string, ok bool) {
	if !hasFile || len(v.paths) > 0 || len(v.dropIns) > 0 || v.links.odd || v.links.other > 0 {
		return "", false
	}
	if rules, plain := installRules(data); !plain || !rules {
		return "", false
	}
	if v.links.own > 0 {
		return "enabled", true
	}
	return "disabled", true
}

// installRules reports whether a unit file's [Install] section has a rule
// that makes it enableable (WantedBy=, RequiredBy=, UpheldBy=, Alias=
// with a value); plain false when the section holds anything else that
// bears on enablement (Also=, an empty assignment that resets a list, a
// continued line) or the file cannot be read line by line.
func installRules(data []byte) (rules, plain bool) {
	in := false
	for len(data) > 0 {
		var raw []byte
		raw, data, _ = bytes.Cut(data, []byte{'\n'})
		line := bytes.TrimSpace(raw)
		if len(line) == 0 || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			in = string(line) == "[Install]"
			continue
		}
		if !in {
			continue
		}
		if line[len(line)-1] == '\\' {
			return false, false
		}
		k, val, found := bytes.Cut(line, []byte{'='})
		if !found {
			return false, false
		}
		k, val = bytes.TrimSpace(k), bytes.TrimSpace(val)
		switch string(k) {
		case "WantedBy", "RequiredBy", "UpheldBy", "Alias":
			if len(val) == 0 {
				return false, false
			}
			rules = true
		case "Also", "DefaultInstance":
			return false, false
		}
	}
	return rules, true
}

// depLinks counts, for the names in want, the entries of a dependency
// directory (NAME.wants, .requires, .upholds) into out's links: a symlink
// named like the unit that points to a file of its name counts (own: in
// the unit directory); any other entry that names a unit of want, by its
// own name or by its target's, makes that unit odd. A missing directory
// holds none.
func (o *Observer) depLinks(dir string, own bool, want map[string]bool, out map[string]vendor) error {
	links, err := o.dirLinks(dir)
	if err != nil {
		return err
	}
	for _, l := range links {
		name, dest := l.name, l.dest
		switch {
		case want[name] && dest == name:
			v := out[name]
			if own {
				v.links.own++
				v.links.dirs = append(v.links.dirs, filepath.Base(dir))
			} else {
				v.links.other++
			}
			out[name] = v
		default:
			for _, n := range []string{name, dest} {
				if n != "" && want[n] {
					v := out[n]
					v.links.odd = true
					out[n] = v
				}
			}
		}
	}
	return nil
}

// dirLink is an entry of a dependency directory and, for a symlink, the
// base name of its target.
type dirLink struct{ name, dest string }

// dirLinks lists a dependency directory's entries with their targets. A
// directory read by an earlier pass whose stamp is the same is not read
// again (1000 enabled units: 1000 readlinks a pass): a symlink's target
// cannot change in place, and adding, removing or replacing an entry
// changes the directory's times. As in scanUnitDir, only a directory whose
// stamp was settled when it was read is kept.
func (o *Observer) dirLinks(dir string) ([]dirLink, error) {
	start := time.Now()
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	stamp := filestamp.Of(fi)
	o.scanMu.Lock()
	c, ok := o.links[dir]
	o.scanMu.Unlock()
	if ok && !stamp.IsZero() && c.stamp == stamp {
		return c.links, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	links := make([]dirLink, 0, len(entries))
	for _, e := range entries {
		l := dirLink{name: e.Name()}
		if e.Type()&fs.ModeSymlink != 0 {
			if t, err := os.Readlink(filepath.Join(dir, l.name)); err == nil {
				l.dest = filepath.Base(t)
			}
		}
		links = append(links, l)
	}
	o.scanMu.Lock()
	defer o.scanMu.Unlock()
	if o.links == nil {
		o.links = map[string]linkDir{}
	}
	if stamp.Settled(start, racyWindow) {
		o.links[dir] = linkDir{stamp: stamp, links: links}
	} else {
		delete(o.links, dir)
	}
	return links, nil
}

// linkDir is a dependency directory kept by dirLinks with its stamp.
type linkDir struct {
	stamp filestamp.Stamp
	links []dirLink
}

// installLinks returns the dependency directories of the unit directory
// that hold the unit's enablement links, sorted, and whether they are all
// of them: only where the enablement was read from the disk (the plain
// case of diskEnablement, see enablement) and is "enabled".
func installLinks(data []byte, hasFile bool, v vendor) ([]string, bool) {
	if state, ok := diskEnablement(data, hasFile, v); !ok || state != "enabled" {
		return nil, false
	}
	dirs := slices.Clone(v.links.dirs)
	slices.Sort(dirs)
	return slices.Compact(dirs), true
}

// isDepDir reports whether a directory name holds dependency symlinks
// that make a unit enabled.
func isDepDir(name string) bool {
	for _, s := range []string{".wants", ".requires", ".upholds"} {
		if len(name) > len(s) && name[len(name)-len(s):] == s {
			return true
		}
	}
	return false
}
