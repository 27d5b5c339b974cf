//go:build unix

package desired

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"resil.dev/resil/internal/filestamp"
)

// This file is the only place that opens manifests. Every path is resolved
// component by component from an open directory descriptor (openat with
// O_NOFOLLOW), every directory on the way is checked on the descriptor that
// was opened (fstat), and a file's owner, mode and type are checked on the
// descriptor it is then read from. There is no window between the check and
// the read: a name swapped after the check is simply not what is read.
//
// Symlink policy: symlinks are followed (a git-sync or Kubernetes ConfigMap
// layout is made of them: the manifests directory itself, "..data", and
// files pointing into "..data"), but only through this walk, so the
// directory that holds each symlink and every directory its target goes
// through are checked like the manifests directory's own path. A symlink
// found in a sticky directory that others may write to (such as /tmp) must
// itself be owned by root or the manifests owner. At most maxSymlinks are
// followed per lookup.

// maxSymlinks bounds the symlinks followed in one lookup (Linux's own limit).
const maxSymlinks = 40

// errNotRegular is a manifest path that is not a regular file (a directory,
// FIFO, socket or device). It is refused before anything reads it.
var errNotRegular = errors.New("not a regular file")

// errBusy is a file some process holds open for writing: its content may be
// half written, so it is not read as a new version.
var errBusy = errors.New("open for writing")

// refusal is a path the ownership or permission rules refuse.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }

// dirNode is one directory on a resolved path, held open for the whole load.
type dirNode struct {
	fd   int
	path string // absolute, symlinks resolved
	// sticky: writable by group or others but sticky (like /tmp). Entries
	// looked up in it must be owned by root or the manifests owner, since
	// nobody else can then rename or remove them.
	sticky bool
	st     unix.Stat_t
}

// fsWalker resolves and opens paths for one load. It owns every directory
// descriptor it opens; close releases them.
type fsWalker struct {
	opts Options
	fds  []int
	root []*dirNode
	// links are the symlinks followed so far (absolute path of each link).
	links []string
}

func newWalker(opts Options) (*fsWalker, error) {
	w := &fsWalker{opts: opts}
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /: %w", err)
	}
	w.fds = append(w.fds, fd)
	n := &dirNode{fd: fd, path: "/"}
	if err := unix.Fstat(fd, &n.st); err != nil {
		w.close()
		return nil, fmt.Errorf("stat /: %w", err)
	}
	if err := w.trustDir(n); err != nil {
		w.close()
		return nil, err
	}
	w.root = []*dirNode{n}
	return w, nil
}

func (w *fsWalker) close() {
	for _, fd := range w.fds {
		_ = unix.Close(fd)
	}
	w.fds = nil
}

func (w *fsWalker) trustedUID(uid uint32) bool {
	return int(uid) == w.opts.OwnerUID || uid == 0
}

// trustDir checks a directory on the path: owned by root or the manifests
// owner, and not writable by group or others unless sticky.
func (w *fsWalker) trustDir(n *dirNode) error {
	if w.opts.Insecure {
		return nil
	}
	if !w.trustedUID(n.st.Uid) {
		return &refusal{fmt.Sprintf("directory %q is owned by uid %d, want root or uid %d (manifests become root-run programs)", n.path, n.st.Uid, w.opts.OwnerUID)}
	}
	if n.st.Mode&0o022 != 0 {
		if n.st.Mode&unix.S_ISVTX == 0 {
			return &refusal{fmt.Sprintf("directory %q has mode %04o, writable by group or others (manifests become root-run programs)", n.path, n.st.Mode&0o7777)}
		}
		n.sticky = true
	}
	return nil
}

// walk resolves name (absolute, or relative to the last directory of from,
// whose earlier entries are its ancestors) and opens what it names. With
// wantDir it returns the stack of directories down to the named one and
// fd -1; otherwise it returns no stack, and an open descriptor of the
// regular file (O_RDONLY|O_NOFOLLOW|O_NOCTTY|O_NONBLOCK|O_CLOEXEC) with its fstat, which the
// caller closes.
func (w *fsWalker) walk(from []*dirNode, name string, wantDir bool) ([]*dirNode, int, *unix.Stat_t, error) {
	if !wantDir {
		// Directories opened on the way to a file (through symlinks) are
		// not needed after it: close them, so a ConfigMap of many files
		// does not hold a descriptor per file for the whole load.
		mark := len(w.fds)
		defer func() {
			for _, fd := range w.fds[mark:] {
				_ = unix.Close(fd)
			}
			w.fds = w.fds[:mark]
		}()
	}
	cur := slices.Clone(from)
	if filepath.IsAbs(name) {
		cur = slices.Clone(w.root)
	}
	comps := strings.Split(name, "/")
	hops := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) > 1 {
				cur = cur[:len(cur)-1]
			}
			continue
		}
		last := true
		for _, rest := range comps {
			if rest != "" && rest != "." {
				last = false
				break
			}
		}
		parent := cur[len(cur)-1]
		full := filepath.Join(parent.path, c)
		var lst unix.Stat_t
		if err := unix.Fstatat(parent.fd, c, &lst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, -1, nil, &os.PathError{Op: "stat", Path: full, Err: err}
		}
		if parent.sticky && !w.trustedUID(lst.Uid) {
			return nil, -1, nil, &refusal{fmt.Sprintf("%q is owned by uid %d in a directory others can write to (manifests become root-run programs)", full, lst.Uid)}
		}
		switch lst.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			hops++
			if hops > maxSymlinks {
				return nil, -1, nil, &os.PathError{Op: "open", Path: full, Err: unix.ELOOP}
			}
			target, err := readlinkat(parent.fd, c)
			if err != nil {
				return nil, -1, nil, &os.PathError{Op: "readlink", Path: full, Err: err}
			}
			w.links = append(w.links, full)
			if filepath.IsAbs(target) {
				cur = slices.Clone(w.root)
			}
			comps = append(strings.Split(target, "/"), comps...)
			continue
		case unix.S_IFDIR:
			if last && !wantDir {
				return nil, -1, nil, errNotRegular
			}
			fd, err := unix.Openat(parent.fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
			if err != nil {
				return nil, -1, nil, &os.PathError{Op: "open", Path: full, Err: err}
			}
			w.fds = append(w.fds, fd)
			n := &dirNode{fd: fd, path: full}
			if err := unix.Fstat(fd, &n.st); err != nil {
				return nil, -1, nil, &os.PathError{Op: "stat", Path: full, Err: err}
			}
			if n.st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return nil, -1, nil, &os.PathError{Op: "open", Path: full, Err: unix.ENOTDIR}
			}
			if parent.sticky && !w.trustedUID(n.st.Uid) {
				return nil, -1, nil, &refusal{fmt.Sprintf("%q is owned by uid %d in a directory others can write to (manifests become root-run programs)", full, n.st.Uid)}
			}
			// The named directory itself is checked by the caller (it
			// must be the manifests owner's); those on the way by trustDir.
			if !(last && wantDir) {
				if err := w.trustDir(n); err != nil {
					return nil, -1, nil, err
				}
			}
			cur = append(cur, n)
			continue
		case unix.S_IFREG:
			if !last || wantDir {
				return nil, -1, nil, &os.PathError{Op: "open", Path: full, Err: unix.ENOTDIR}
			}
			// O_NONBLOCK: if a FIFO was swapped in after the fstatat, the
			// open does not wait for a writer and the fstat below refuses it.
			fd, err := unix.Openat(parent.fd, c, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
			if err != nil {
				if errors.Is(err, unix.EWOULDBLOCK) {
					// Another process holds a write lease on it.
					return nil, -1, nil, errBusy
				}
				return nil, -1, nil, &os.PathError{Op: "open", Path: full, Err: err}
			}
			st := &unix.Stat_t{}
			if err := unix.Fstat(fd, st); err != nil {
				_ = unix.Close(fd)
				return nil, -1, nil, &os.PathError{Op: "stat", Path: full, Err: err}
			}
			if st.Mode&unix.S_IFMT != unix.S_IFREG {
				_ = unix.Close(fd)
				return nil, -1, nil, errNotRegular
			}
			return nil, fd, st, nil
		default:
			if !last || wantDir {
				return nil, -1, nil, &os.PathError{Op: "open", Path: full, Err: unix.ENOTDIR}
			}
			return nil, -1, nil, errNotRegular
		}
	}
	if !wantDir {
		return nil, -1, nil, errNotRegular
	}
	return cur, -1, nil, nil
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; size <= 1<<16; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			if n == 0 {
				return "", unix.ENOENT
			}
			return string(buf[:n]), nil
		}
	}
	return "", unix.ENAMETOOLONG
}

// listDir lists the entries of an open directory (through a new open file
// description, so the walker's descriptor is left as it is).
func listDir(n *dirNode) ([]os.DirEntry, error) {
	fd, err := unix.Openat(n.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: n.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), n.path)
	defer f.Close()
	ents, err := f.ReadDir(-1)
	slices.SortFunc(ents, func(a, b os.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return ents, err
}

// statDir reports whether name in n is (or leads through symlinks to) a
// directory, and the error when it cannot be told. It only classifies
// entries; the walk checks what is read.
func statDir(n *dirNode, name string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(n.fd, name, &st, 0); err != nil {
		return false, err
	}
	return st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
}

// ownerDetail checks a manifest file or folder's own owner and mode (must
// be the manifests owner, not writable by group or others); "" when fine.
func ownerDetail(st *unix.Stat_t, opts Options) string {
	if opts.Insecure {
		return ""
	}
	if int(st.Uid) != opts.OwnerUID {
		return fmt.Sprintf("owned by uid %d, want uid %d (manifests become root-run programs)", st.Uid, opts.OwnerUID)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Sprintf("mode %04o is writable by group or others (manifests become root-run programs)", st.Mode&0o7777)
	}
	return ""
}

// openDir resolves the manifests directory (or a drop-in folder, rel to
// the manifests directory) and checks its own owner and mode.
func (l *loader) openDir(rel string) ([]*dirNode, *FieldError) {
	stack, _, _, err := l.w.walk(l.stack, rel, true)
	if err != nil {
		return nil, l.readProblem(err, "cannot read drop-in folder")
	}
	if d := ownerDetail(&stack[len(stack)-1].st, l.opts); d != "" {
		return nil, &FieldError{Detail: "refused: " + d}
	}
	return stack, nil
}

// dropInFiles lists the manifests of a drop-in folder (rel to the
// manifests directory), sorted, as paths relative to the manifests
// directory. The folder's descriptor is kept for reading them.
func (l *loader) dropInFiles(sub string) ([]string, *FieldError) {
	stack, fe := l.openDir(sub)
	if fe != nil {
		return nil, fe
	}
	ents, err := listDir(stack[len(stack)-1])
	if err != nil {
		return nil, &FieldError{Detail: fmt.Sprintf("cannot read drop-in folder: %v", err)}
	}
	l.subdirs[sub] = stack
	var files []string
	for _, e := range ents {
		if IsManifestName(e.Name()) {
			files = append(files, filepath.Join(sub, e.Name()))
		}
	}
	return files, nil
}

// readProblem turns a walk error into the file's problem.
func (l *loader) readProblem(err error, what string) *FieldError {
	var r *refusal
	switch {
	case errors.As(err, &r):
		return &FieldError{Detail: "refused: " + r.msg}
	case errors.Is(err, errNotRegular):
		return &FieldError{Detail: errNotRegular.Error()}
	}
	return &FieldError{Detail: fmt.Sprintf("%s: %v", what, quotePathError(err))}
}

// quotePathError renders an *os.PathError with its path quoted (paths
// reached through symlinks may hold any byte).
func quotePathError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Sprintf("%s %q: %v", pe.Op, pe.Path, pe.Err)
	}
	return err.Error()
}

// quotedError renders err with quotePathError and unwraps to it.
type quotedError struct{ err error }

func (q quotedError) Error() string { return quotePathError(q.err) }
func (q quotedError) Unwrap() error { return q.err }

// readFile reads one manifest or drop-in (rel to the manifests directory)
// within the caps and ownership rules. A file some process holds open for
// writing is not read: it is recorded in l.busy, with no error.
//
// Busy is told by a read lease (fcntl F_SETLEASE F_RDLCK, see
// lease_linux.go), which Linux refuses with EAGAIN while any process has
// the file open for writing. The lease is released as soon as the file is
// read. Where no lease can be taken for another reason (EACCES when neither
// root nor the file's owner, EINVAL on filesystems without leases such as
// some network or overlay mounts, or not Linux), the file is read without
// this protection.
func (l *loader) readFile(rel string) ([]byte, bool) {
	of, ok := l.openFile(rel)
	if !ok {
		return nil, false
	}
	if l.ids != nil {
		l.ids[rel] = of.id() // Set.Changed
	}
	return l.readOpen(rel, of)
}

// openFile is a file opened with every check readFile makes before it
// reads: the openat walk, owner and mode on the descriptor, the size caps,
// and a read lease (a writer holding the file makes it busy).
type openFile struct {
	fd     int
	st     *unix.Stat_t
	leased bool
}

func (of *openFile) close() {
	if of.leased {
		releaseLease(of.fd)
	}
	unix.Close(of.fd)
}

// id is what identifies the file's content without reading it (FileCache).
func (of *openFile) id() filestamp.Stamp {
	return filestamp.Stamp{Dev: uint64(of.st.Dev), Ino: uint64(of.st.Ino), Size: of.st.Size, //nolint:unconvert // the types differ by arch
		Mtime: of.st.Mtim.Nano(), Ctime: of.st.Ctim.Nano()}
}

// openFile opens rel for readFile (see openFile); the caller closes it.
func (l *loader) openFile(rel string) (*openFile, bool) {
	if !safeFileRE.MatchString(filepath.Base(rel)) {
		l.fail(rel, &FieldError{Detail: "refused: file names may use only letters, digits and . _ - + @ ="})
		return nil, false
	}
	from, name := l.stack, rel
	if d := filepath.Dir(rel); d != "." {
		if s, ok := l.subdirs[d]; ok {
			from, name = s, filepath.Base(rel)
		}
	}
	_, fd, st, err := l.w.walk(from, name, false)
	if errors.Is(err, errBusy) {
		l.busy[rel] = true
		return nil, false
	}
	if err != nil {
		l.fail(rel, l.readProblem(err, "cannot read"))
		return nil, false
	}
	fail := func(fe *FieldError) (*openFile, bool) {
		unix.Close(fd)
		l.fail(rel, fe)
		return nil, false
	}
	if d := ownerDetail(st, l.opts); d != "" {
		return fail(&FieldError{Detail: "refused: " + d})
	}
	if st.Size > l.opts.MaxFileBytes {
		return fail(&FieldError{Detail: fmt.Sprintf("file is %d bytes, larger than the %d-byte cap", st.Size, l.opts.MaxFileBytes)})
	}
	if st.Size > l.budget {
		return fail(&FieldError{Detail: fmt.Sprintf("directory size cap of %d bytes reached", l.opts.MaxDirBytes)})
	}
	leased, busy := takeReadLease(fd)
	if busy {
		unix.Close(fd)
		l.busy[rel] = true
		if by := writersOf(filepath.Join(l.dir, rel), uint64(st.Dev), st.Ino); by != "" { //nolint:unconvert // Dev's type differs by arch
			l.busyBy[rel] = by
		}
		return nil, false
	}
	return &openFile{fd: fd, st: st, leased: leased}, true
}

// readOpen reads a file openFile opened, and closes it.
func (l *loader) readOpen(rel string, of *openFile) ([]byte, bool) {
	data, err := readAll(of.fd, l.opts.MaxFileBytes+1, of.st.Size)
	of.close()
	if err != nil {
		l.fail(rel, &FieldError{Detail: fmt.Sprintf("cannot read: %v", err)})
		return nil, false
	}
	if int64(len(data)) > l.opts.MaxFileBytes {
		l.fail(rel, &FieldError{Detail: fmt.Sprintf("file is larger than the %d-byte cap", l.opts.MaxFileBytes)})
		return nil, false
	}
	l.budget -= int64(len(data))
	return data, true
}

// readAll reads at most limit bytes of fd into a buffer sized for the
// file's size (sizeHint, from fstat) plus one byte, so a file that grew
// since is still read whole (up to limit); not a 64 KiB buffer per file.
func readAll(fd int, limit, sizeHint int64) ([]byte, error) {
	out := make([]byte, 0, max(min(sizeHint+1, limit), 512))
	for int64(len(out)) < limit {
		if len(out) == cap(out) {
			out = append(out, 0)[:len(out)]
		}
		n, err := unix.Read(fd, out[len(out):min(int64(cap(out)), limit)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		out = out[:len(out)+n]
	}
	return out, nil
}

// resolveDir resolves the manifests directory for one load: every
// directory on its path is checked, and it must itself be owned by the
// manifests owner. The returned stack stays open until the walker closes.
func resolveDir(w *fsWalker, abs string) ([]*dirNode, error) {
	stack, _, _, err := w.walk(w.root, abs, true)
	if err != nil {
		var r *refusal
		if errors.As(err, &r) {
			return nil, fmt.Errorf("%q: %s", abs, r.msg)
		}
		return nil, fmt.Errorf("%q: %w", abs, quotedError{err})
	}
	if d := ownerDetail(&stack[len(stack)-1].st, w.opts); d != "" {
		return nil, fmt.Errorf("%q: %s", abs, d)
	}
	return stack, nil
}

// openManifest opens the manifest file at path for a look that is not a
// load (Watch's writer check): through the checked walk with opts, the
// folder holding it must pass the checks Load makes of the manifests
// directory and drop-in folders, and the file those of a manifest. It
// returns the descriptor of a regular file (see walk), or errBusy, a
// refusal, errNotRegular or the walk's error; nothing else is opened.
func openManifest(path string, opts Options) (int, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return -1, err
	}
	w, err := newWalker(opts)
	if err != nil {
		return -1, err
	}
	defer w.close()
	stack, _, _, err := w.walk(w.root, filepath.Dir(abs), true)
	if err != nil {
		return -1, err
	}
	if d := ownerDetail(&stack[len(stack)-1].st, opts); d != "" {
		return -1, &refusal{fmt.Sprintf("%q: %s", stack[len(stack)-1].path, d)}
	}
	// A file named directly (no symlink) is checked before it is opened;
	// what a symlink leads to is checked on the descriptor (it is a
	// regular file in trusted directories by then).
	var lst unix.Stat_t
	if err := unix.Fstatat(stack[len(stack)-1].fd, filepath.Base(abs), &lst, unix.AT_SYMLINK_NOFOLLOW); err == nil && lst.Mode&unix.S_IFMT == unix.S_IFREG {
		if d := ownerDetail(&lst, opts); d != "" {
			return -1, &refusal{fmt.Sprintf("%q: %s", abs, d)}
		}
	}
	_, fd, st, err := w.walk(stack, filepath.Base(abs), false)
	if err != nil {
		return -1, err
	}
	if d := ownerDetail(st, opts); d != "" {
		_ = unix.Close(fd)
		return -1, &refusal{fmt.Sprintf("%q: %s", abs, d)}
	}
	return fd, nil
}

// swapped reports whether the manifests directory changed under a load:
// it was removed (a git-sync cleanup of the old revision), or the
// configured path now leads elsewhere (a symlink swap).
func swapped(abs string, top *dirNode) bool {
	var st unix.Stat_t
	if unix.Fstat(top.fd, &st) != nil || st.Nlink == 0 {
		return true
	}
	var now unix.Stat_t
	if unix.Stat(abs, &now) != nil {
		return true
	}
	return now.Dev != st.Dev || now.Ino != st.Ino
}

// ErrBusy is ReadChecked's error for a file some process holds open for
// writing (it may be half written).
var ErrBusy = errBusy

// ReadChecked reads the manifest or drop-in at path that is not part of a
// load (a GitOps source's local drop-ins, copied into the revision it
// composes, where Load would find them as root's own files): through the
// checked walk with opts, as Load reads a drop-in. Every directory on the
// path must be root's or the manifests owner's and not writable by group
// or others (unless sticky), the folder holding the file and the file
// itself the manifests owner's and not writable by group or others,
// checked on the descriptors read; it must be a regular file of at most
// the file cap, not held open for writing (ErrBusy).
func ReadChecked(path string, opts Options) ([]byte, error) {
	fd, err := openManifest(path, opts)
	if err != nil {
		var r *refusal
		if errors.As(err, &r) {
			return nil, fmt.Errorf("%s: refused: %s", path, r.msg)
		}
		return nil, fmt.Errorf("%s: %w", path, quotedError{err})
	}
	defer unix.Close(fd)
	leased, busy := takeReadLease(fd)
	if busy {
		return nil, fmt.Errorf("%s: %w", path, ErrBusy)
	}
	if leased {
		defer releaseLease(fd)
	}
	limit := opts.MaxFileBytes
	if limit <= 0 {
		limit = DefaultMaxFileBytes
	}
	b, err := readAll(fd, limit+1, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes", path, limit)
	}
	return b, nil
}
