package systemd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/google/renameio/v2"
	"github.com/hashicorp/go-multierror"

	"resil.dev/resil/actuators"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

// fileMode is the mode of every file resil writes.
const fileMode = 0o644

// pathKind says where a step's path lies.
type pathKind int

const (
	unitFile    pathKind = iota + 1 // unitDir/NAME
	unitDropIn                      // unitDir/NAME.d/FILE
	managerConf                     // managerConfDir/FILE
)

func (a *Applier) classify(s actuators.Step) (pathKind, error) {
	p := s.Path
	if p == "" || !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return 0, fmt.Errorf("%s %q: %w: want a clean absolute path", s.Op, p, ErrInvalidStep)
	}
	dir, base := filepath.Dir(p), filepath.Base(p)
	if strings.HasPrefix(base, ".") {
		return 0, fmt.Errorf("%s %s: %w: hidden file", s.Op, p, ErrInvalidStep)
	}
	switch {
	case dir == a.unitDir:
		return unitFile, nil
	case filepath.Dir(dir) == a.unitDir && strings.HasSuffix(filepath.Base(dir), ".d"):
		return unitDropIn, nil
	case dir == a.managerConfDir:
		return managerConf, nil
	}
	return 0, fmt.Errorf("%s %s: %w (%s, %s)", s.Op, p, ErrOutsideDirs, a.unitDir, a.managerConfDir)
}

// readCurrent returns the content of path. Outcomes: (data, true, nil) for a
// regular file; (nil, false, nil) when nothing is there; (nil, true, err
// wrapping ErrNotOwned) for anything that is not a regular file.
func readCurrent(path string) ([]byte, bool, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if !fi.Mode().IsRegular() {
		return nil, true, fmt.Errorf("%s is a %s, not a regular file: %w", path, fi.Mode().Type(), ErrNotOwned)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	return data, true, err
}

// writeFile replaces s.Path with s.Data when the bytes differ: a temporary
// file in the same directory, fsync, rename, fsync of the directory. The
// data must carry the ownership marker, and an existing file must too
// (unless WithOverwriteForeign).
func (a *Applier) writeFile(s actuators.Step) (actuators.Result, error) {
	if _, err := a.classify(s); err != nil {
		return actuators.Unchanged, err
	}
	if _, owned := ownmark.IsOwned(s.Data); !owned {
		// resil could neither update nor remove such a file later.
		return actuators.Unchanged, fmt.Errorf("write %s: %w: data lacks the %s marker", s.Path, ErrInvalidStep, ownmark.KeyObject)
	}
	cur, exists, err := readCurrent(s.Path)
	if err != nil {
		return actuators.Unchanged, fmt.Errorf("write %s: %w", s.Path, err)
	}
	if exists && bytes.Equal(cur, s.Data) {
		return actuators.Unchanged, nil
	}
	if exists && !a.cfg.overwriteForeign {
		if _, owned := ownmark.IsOwned(cur); !owned {
			return actuators.Unchanged, fmt.Errorf("write %s: existing file %w", s.Path, ErrNotOwned)
		}
	}
	done := a.ownFiles()
	defer func() { done(observed.OwnChange{Paths: []string{s.Path}}) }()
	dir := filepath.Dir(s.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return actuators.Unchanged, fmt.Errorf("write %s: %w", s.Path, err)
	}
	if err := writeAtomic(s.Path, s.Data); err != nil {
		return actuators.Unchanged, fmt.Errorf("write %s: %w", s.Path, err)
	}
	return actuators.Changed, nil
}

func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	// WithTempDir: renameio would otherwise probe whether $TMPDIR can be
	// renamed into dir and, if so, write the temporary file there.
	f, err := renameio.NewPendingFile(path, renameio.WithTempDir(dir), renameio.WithStaticPermissions(fileMode))
	if err != nil {
		return err
	}
	defer f.Cleanup()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.CloseAtomicallyReplace(); err != nil { // fsync, close, rename
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// removeFile removes an owned file and, for a unit file, the owned files in
// its drop-in directory (removed first, so a crash in between leaves the
// owned unit file and a retry finishes the job). A file without the marker
// is refused with ErrNotOwned and nothing is removed.
func (a *Applier) removeFile(s actuators.Step) (actuators.Result, error) {
	kind, err := a.classify(s)
	if err != nil {
		return actuators.Unchanged, err
	}
	cur, exists, err := readCurrent(s.Path)
	if err != nil {
		return actuators.Unchanged, fmt.Errorf("remove %s: %w", s.Path, err)
	}
	if !exists {
		return actuators.Unchanged, nil
	}
	if _, owned := ownmark.IsOwned(cur); !owned {
		return actuators.Unchanged, fmt.Errorf("remove %s: %w", s.Path, ErrNotOwned)
	}
	done := a.ownFiles()
	changed := []string{s.Path}
	if kind == unitFile {
		changed = append(changed, s.Path+".d")
	}
	defer func() { done(observed.OwnChange{Paths: changed}) }()
	if kind == unitFile {
		if err := removeOwnedDropIns(s.Path + ".d"); err != nil {
			return actuators.Unchanged, fmt.Errorf("remove %s: %w", s.Path, err)
		}
	}
	if err := os.Remove(s.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return actuators.Unchanged, fmt.Errorf("remove %s: %w", s.Path, err)
	}
	if err := syncDir(filepath.Dir(s.Path)); err != nil {
		return actuators.Changed, fmt.Errorf("remove %s: %w", s.Path, err)
	}
	return actuators.Changed, nil
}

// removeOwnedDropIns removes the owned regular files in dir, then dir if it
// is empty. Foreign drop-ins stay.
func removeOwnedDropIns(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	removed := false
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if _, owned := ownmark.IsOwned(data); !owned {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed = true
	}
	if removed {
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	// Only succeeds when empty; a foreign drop-in keeps the directory.
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) && !isNotEmpty(err) {
		return err
	}
	return nil
}

func isNotEmpty(err error) bool {
	return errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST)
}

// tempNameRE matches the temporary files writeAtomic creates (renameio:
// "." + the target's base name + decimal digits), for the file names resil
// writes: units, timers and drop-ins.
var tempNameRE = regexp.MustCompile(`^\.[A-Za-z0-9_.:@+=-]+\.(service|timer|conf)[0-9]+$`)

// RemoveTempFiles deletes the temporary files a killed agent left between
// renameio's create and rename in the unit dir, its NAME.d drop-in folders
// and the manager drop-in folder. Only names of writeAtomic's form whose
// content is empty or carries resil's ownership marker are removed (a
// temporary file is written from the start, and the marker is in its first
// lines), so nobody else's file is touched. It returns how many it removed.
// The agent calls it before its first pass (apply, run); diff never does.
func (a *Applier) RemoveTempFiles() (int, error) {
	dirs := []string{a.unitDir, a.managerConfDir}
	if ents, err := os.ReadDir(a.unitDir); err == nil {
		for _, e := range ents {
			if e.IsDir() && strings.HasSuffix(e.Name(), ".d") {
				dirs = append(dirs, filepath.Join(a.unitDir, e.Name()))
			}
		}
	}
	var merr *multierror.Error
	n := 0
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.Type().IsRegular() || !tempNameRE.MatchString(e.Name()) {
				continue
			}
			p := filepath.Join(d, e.Name())
			data, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			if _, owned := ownmark.IsOwned(data); len(data) > 0 && !owned && !ownedPrefix(data) {
				continue
			}
			if err := os.Remove(p); err != nil {
				merr = multierror.Append(merr, fmt.Errorf("remove temporary file %s: %w", p, err))
				continue
			}
			n++
		}
	}
	return n, merr.ErrorOrNil()
}

// ownedPrefix reports whether a cut-short file starts like one resil
// renders: the marker comes first in [Unit] (units) or in the leading
// comment block (drop-ins).
func ownedPrefix(data []byte) bool {
	head := data[:min(len(data), 512)]
	for _, start := range []string{"[Unit]\n" + ownmark.KeyObject + "=", "# " + ownmark.KeyObject + "="} {
		if bytes.HasPrefix([]byte(start), head) || bytes.HasPrefix(head, []byte(start)) {
			return true
		}
	}
	return bytes.Contains(head, []byte("\n"+ownmark.KeyObject+"="))
}
