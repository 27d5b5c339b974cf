package desired

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"

	"resil.dev/resil/internal/filestamp"
)

// Size caps. A manifest larger than MaxFileBytes is refused; once a directory
// load has read MaxDirBytes, the remaining files are refused.
const (
	DefaultMaxFileBytes int64 = 1 << 20
	DefaultMaxDirBytes  int64 = 16 << 20
	maxDocsPerFile            = 256
)

// Options tune Load.
type Options struct {
	// Host is the host the set is computed for (host selectors).
	Host Host
	// Insecure skips the ownership and permission checks (tests, non-root
	// validate/diff on a GitOps checkout).
	Insecure bool
	// OwnerUID is the owner manifests, drop-ins, the manifests directory
	// and its drop-in folders must have when not Insecure (default 0,
	// root). Other directories on their resolved paths may be owned by
	// root or OwnerUID (see open_unix.go).
	OwnerUID int
	// MaxFileBytes and MaxDirBytes override the size caps (0: defaults).
	MaxFileBytes int64
	MaxDirBytes  int64
	// Cache, when set, answers manifest files that loaded cleanly last
	// time and have not changed since (cache.go) without parsing them
	// again; every check on opening them is still made. For the agent's
	// loop, which loads the same directory pass after pass.
	Cache *FileCache
}

// Set is the full desired state read from one directory.
type Set struct {
	// Dir is the directory as resolved for this load (symlinks followed once).
	Dir string
	// Objects are the valid objects that select this host, by ID.
	Objects map[string]*Object
	// NotSelected are valid objects whose host selector excludes this host.
	NotSelected map[string]*Object
	// Files are the manifest files considered (relative to Dir), sorted.
	Files []string
	// Broken maps a relative file to its problems. Objects that last came
	// from a broken file must keep their last good desired state.
	Broken map[string]error
	// BrokenNames are object names whose drop-ins or duplicates are broken.
	BrokenNames map[string]bool
	// DeclaredInvalid names, by object name, a file whose document
	// declares that name but is invalid (decoded, not valid): an object
	// moved into a file with an error in it. Nil when there is none.
	DeclaredInvalid map[string]string
	// Invalid maps the ID of every object decoded but not valid (its own
	// document or a drop-in of it has an error) to its file: an object
	// never seen valid has no last good version, yet status and diff name
	// it. Nil when there is none.
	Invalid map[string]string
	// Busy are files (relative: manifests and drop-ins) that some process
	// held open for writing: they were not read, and are not errors. What
	// they hold must keep its last good version (see IsBroken).
	Busy map[string]bool
	// BusyBy names, for a busy file, the processes holding it open for
	// writing ("PID 1234 (vim)"), where /proc tells.
	BusyBy map[string]string
	// NotRead are the subfolders (relative, sorted) that are not NAME.d
	// drop-in folders: manifests are read from the top level only, so a
	// manifest put in one is not applied (the caller warns).
	NotRead []string
	// Empty are files (relative) that hold no document: empty, only
	// comments, only "---". They are not errors to Load, which has no
	// memory; the caller decides (reconcile treats them like broken files,
	// so truncating a file never removes what it held).
	Empty map[string]bool
	// Changed maps each manifest file read (relative) to its last change
	// (the ctime of the descriptor read: a write, a truncation or a
	// rename into place). The agent waits for a file that lost an object
	// to be quiet before it prunes (reconcile.Config.PruneQuiet).
	Changed map[string]time.Time
}

// Sorted returns the objects in ID order.
func (s *Set) Sorted() []*Object {
	out := make([]*Object, 0, len(s.Objects))
	for _, o := range s.Objects {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// IsBroken reports whether o's last good version must be kept because the
// file it came from, or one of its drop-ins, is now invalid, busy or empty.
func (s *Set) IsBroken(o *Object) bool {
	if s.BrokenNames[o.Metadata.Name] {
		return true
	}
	if f, _ := s.Unsettled(o); f != "" {
		return true
	}
	if _, ok := s.Broken[o.Source.File]; ok {
		return true
	}
	for _, d := range o.Source.DropIns {
		if _, ok := s.Broken[d]; ok {
			return true
		}
	}
	return false
}

type loader struct {
	dir    string
	opts   Options
	budget int64
	errs   map[string][]error // by relative file
	// w opens everything; stack is the manifests directory and its
	// ancestors, subdirs the drop-in folders read so far (by relative name).
	w       *fsWalker
	stack   []*dirNode
	subdirs map[string][]*dirNode
	busy    map[string]bool
	busyBy  map[string]string
	empty   map[string]bool
	// unusable are the names of documents refused before they became
	// objects (bad apiVersion, kind or metadata): their drop-ins are not
	// orphans, and what they name keeps its last good version.
	unusable map[string]bool
	// cache is Options.Cache (nil: none); ids are the identities of the
	// manifest files opened, served the files answered from it and
	// cached their objects (cache.go).
	cache *FileCache
	// started is when the load began (the cache's racy-file rule).
	started time.Time
	ids     map[string]filestamp.Stamp
	served  map[string]bool
	cached  map[*Object]bool
}

// Load reads every manifest in dir.
//
// Outcomes:
//   - (set, nil): every file is valid.
//   - (set, err): some files are invalid; err is a multierror of
//     *FieldError naming file:line:col: field; set holds every valid object
//     and set.Broken names the bad files. One bad file never hides the others.
//   - (nil, err) with errors.Is(err, ErrUnreadable): nothing could be read
//     (missing or insecure directory, or swapped during every attempt).
//     Nothing may be pruned on this.
//
// Files open for writing (set.Busy) and files with no document (set.Empty)
// are not errors: Load reports them and the caller keeps what they held.
func Load(dir string, opts Options) (*Set, error) {
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultMaxFileBytes
	}
	if opts.MaxDirBytes <= 0 {
		opts.MaxDirBytes = DefaultMaxDirBytes
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrUnreadable, dir, err)
	}
	// A load that raced a swap of the directory (git-sync replaces the
	// symlink, then deletes the old revision) is done again, so a half
	// deleted revision is never taken for the desired state.
	for attempt := 1; ; attempt++ {
		set, raced, err := loadOnce(abs, dir, opts)
		if errors.Is(err, errCacheRetry) {
			// A problem in a file the cache answered for: load again
			// without it, for the problem's exact position.
			noCache := opts
			noCache.Cache = nil
			set, raced, err = loadOnce(abs, dir, noCache)
		}
		if !raced {
			return set, err
		}
		if attempt == maxSwapRetries {
			return nil, fmt.Errorf("%w: %q was swapped or removed during %d loads in a row", ErrUnreadable, dir, attempt)
		}
	}
}

// loadClock tells when a load begins (the cache's racy-file rule); tests
// move it forward to treat files just written as old.
var loadClock = time.Now

// maxSwapRetries bounds the loads done again because the directory was
// swapped during them.
const maxSwapRetries = 5

func loadOnce(dir, orig string, opts Options) (*Set, bool, error) {
	w, err := newWalker(opts)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	defer w.close()
	// Resolve a symlinked directory once, so a git-sync / ConfigMap swap
	// during the load cannot mix two versions: everything below is read
	// relative to the descriptor of the directory resolved here.
	stack, err := resolveDir(w, dir)
	if err != nil {
		// A symlink whose old target was deleted under the walk (git-sync
		// removes the old revision after the swap) is a race, not a loss.
		raced := len(w.links) > 0 && errors.Is(err, fs.ErrNotExist)
		return nil, raced, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	top := stack[len(stack)-1]
	entries, err := listDir(top)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %q: %w", ErrUnreadable, dir, err)
	}
	resolved := top.path
	if !filepath.IsAbs(orig) {
		// Keep a relative directory relative, as filepath.EvalSymlinks would.
		if wd, err := os.Getwd(); err == nil {
			if rel, err := filepath.Rel(wd, resolved); err == nil {
				resolved = rel
			}
		}
	}
	l := &loader{dir: resolved, opts: opts, budget: opts.MaxDirBytes, errs: map[string][]error{},
		w: w, stack: stack, subdirs: map[string][]*dirNode{}, busy: map[string]bool{}, busyBy: map[string]string{}, empty: map[string]bool{},
		cache: opts.Cache, started: loadClock(), ids: map[string]filestamp.Stamp{}, served: map[string]bool{}, cached: map[*Object]bool{}}
	set := &Set{
		Dir:         resolved,
		Objects:     map[string]*Object{},
		NotSelected: map[string]*Object{},
		Broken:      map[string]error{},
		BrokenNames: map[string]bool{},
		Busy:        l.busy,
		BusyBy:      l.busyBy,
		Empty:       l.empty,
	}
	dropInDirs := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if strings.HasSuffix(name, ".d") {
			// A NAME.d that cannot be stat'ed (a dangling symlink, no
			// permission) is a drop-in folder that cannot be read: its
			// open reports it, and the object keeps its last good
			// version, instead of being applied without its drop-ins.
			if isDir, err := statDir(top, name); isDir || err != nil {
				dropInDirs[strings.TrimSuffix(name, ".d")] = true
			}
			continue
		}
		if IsManifestName(name) {
			set.Files = append(set.Files, name)
			continue
		}
		if e.IsDir() || e.Type()&fs.ModeSymlink != 0 {
			if isDir, _ := statDir(top, name); isDir {
				set.NotRead = append(set.NotRead, name)
			}
		}
	}
	sort.Strings(set.Files)

	all := l.readManifests(set.Files, dropInDirs)
	all = l.crossCheck(all, dropInDirs, set)
	for _, o := range all {
		if opts.Host.Selects(o.Hosts()) {
			set.Objects[o.ID()] = o
		} else {
			set.NotSelected[o.ID()] = o
		}
	}
	l.checkSelected(set)
	set.Changed = make(map[string]time.Time, len(l.ids))
	for f, id := range l.ids {
		set.Changed[f] = time.Unix(0, id.Ctime)
	}
	// The parsed YAML trees served the positions of this load's errors;
	// an agent keeps the objects between passes, so they go now (3.9 MB
	// of the agent's heap with 1000 manifests, per the bench).
	for _, o := range all {
		o.docs = nil
	}
	if l.cache != nil {
		var retry []string
		for f := range l.served {
			if len(l.errs[f]) > 0 {
				retry = append(retry, f)
			}
		}
		if len(retry) > 0 {
			l.cache.forget(retry) // the next load reads them, and caches them again once clean
			return nil, false, errCacheRetry
		}
		l.cache.store(l, set, all)
	}

	var merr *multierror.Error
	files := make([]string, 0, len(l.errs))
	for f := range l.errs {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		sortByPosition(l.errs[f])
		fe := &multierror.Error{Errors: l.errs[f], ErrorFormat: listFormat}
		set.Broken[f] = fe.ErrorOrNil()
		merr = multierror.Append(merr, l.errs[f]...)
	}
	if merr != nil {
		merr.ErrorFormat = listFormat
	}
	return set, swapped(dir, top), merr.ErrorOrNil()
}

// sortByPosition orders one file's errors by line, then column, so they
// read top to bottom. Errors without a line (about the whole file) come
// first; errors that compare equal keep the order they were found in.
func sortByPosition(es []error) {
	pos := func(e error) (int, int) {
		var fe *FieldError
		if errors.As(e, &fe) {
			return fe.Line, fe.Column
		}
		return 0, 0
	}
	sort.SliceStable(es, func(i, j int) bool {
		li, ci := pos(es[i])
		lj, cj := pos(es[j])
		if li != lj {
			return li < lj
		}
		return ci < cj
	})
}

func listFormat(es []error) string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (l *loader) fail(file string, e *FieldError) {
	if e.File == "" {
		e.File = filepath.Join(l.dir, file)
	}
	l.errs[file] = append(l.errs[file], e)
}

// UnitOwner returns the ID of the object that owns unit: the service or
// timer whose unit it is, or the timer whose inline job it is (a timer
// that names its service does not own it). Objects for other hosts count,
// and so do objects never seen valid (s.Invalid). It returns "" when no
// object declares unit.
func (s *Set) UnitOwner(unit string) string {
	if s == nil {
		return ""
	}
	var job string
	for _, objs := range []map[string]*Object{s.Objects, s.NotSelected} {
		for id, o := range objs {
			switch {
			case o.UnitName() == unit:
				return id
			case slices.Contains(o.OwnedUnits(), unit): // a timer's inline job
				job = id
			}
		}
	}
	if job != "" {
		return job
	}
	for id := range s.Invalid {
		kind, name, _ := strings.Cut(id, "/")
		if (Kind(kind) == KindService && name+".service" == unit) || (Kind(kind) == KindTimer && name+".timer" == unit) {
			return id
		}
	}
	return ""
}
