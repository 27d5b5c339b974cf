package process

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"gopkg.in/natefinch/lumberjack.v2"

	"resil.dev/resil/desired"
)

// Output: stdout and stderr are FIFOs (one FIFO, fd 1 and fd 2, when stderr
// follows stdout: errPath) the child holds open read-write, so a
// write never fails with EPIPE while no agent reads (it blocks once 64 KiB
// are buffered); copiers write whole lines to a lumberjack file (rotated by
// maxSize/maxBackups; stderr follows stdout unless logs.stderr is set) or to
// Options.Output as "NAME: line"; a last line without newline is flushed at
// exit. Children: own process group (stop signals the group; what is left
// of the group after the main process exits is killed, like
// KillMode=control-group), setuid/setgid from user/group, stdin /dev/null,
// lock as an inherited flock'd fd 3 (held for the process's life, also
// across agent restarts). One reaper calls wait4, for registered PIDs only,
// so exec.Cmd.Wait elsewhere in the agent keeps working; with
// Options.Subreaper (forced as PID 1) it also reaps orphans with
// wait4(-1), and then nothing else in the process may wait for children
// and only one Supervisor may run per process.

// lineWriter receives whole lines (with their trailing newline).
type lineWriter interface {
	writeLine(line []byte) error
}

// prefixWriter writes "NAME: line" to the agent's output; one mutex for all
// units keeps lines whole.
type prefixWriter struct {
	mu  *sync.Mutex
	out io.Writer
	pfx []byte
}

func (p prefixWriter) writeLine(line []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	buf := make([]byte, 0, len(p.pfx)+len(line))
	buf = append(append(buf, p.pfx...), line...)
	_, err := p.out.Write(buf)
	return err
}

// fileWriter appends lines to a rotating log file shared by every process
// (and unit) that names the same path.
type fileWriter struct {
	mu   sync.Mutex
	path string // as the manifest names it
	lj   *lumberjack.Logger
	// failing: the last write failed (logged once per failure spell:
	// the line is lost, the process is not blocked).
	failing bool
	log     *zap.Logger
	// as, when someone other than root may change the log's folder,
	// runs every file operation with that user's file-system identity
	// (fsThread); nil: on the caller's thread, as root.
	as *fsThread
	// pin, when root writes but someone else may change a folder above
	// the log's: the log's folder, held open; lumberjack works through
	// /proc/self/fd/N (see logAccess).
	pin *pinnedDir
	// backups is how many rotated files to keep (0: all). lumberjack is
	// told to keep all: its own clean-up runs on a goroutine of its own,
	// as root and by path, outside as and pin (and reads its settings
	// there without a lock); prune removes them instead, on the writer's
	// thread, whenever sincePrune shows a rotation may have happened.
	backups    int
	sincePrune int64
	// access is the identity as and pin implement; checked when it was
	// last decided. A folder chowned to a user, or opened to others,
	// while the agent runs changes it: writeLine decides again at most
	// every identityRecheck.
	access  logAccess
	checked time.Time
	// accessErr: the last decision failed, or failed to set up (the
	// writes fail until the next one works).
	accessErr error
	// abandoned counts the writes left blocked (abandon); dead: too
	// many, the writer writes no more.
	abandoned int
	dead      bool
	// file is the device and inode at the path after the first write
	// since the file was (re)opened (zero: not known yet); a different
	// one at a recheck means the file was moved away.
	file [2]uint64
}

// identityRecheck is how often (at most, while lines are written) a log
// file's identity is decided again; failedRecheck, while it fails.
var (
	identityRecheck = 5 * time.Second
	failedRecheck   = time.Second
)

type pinnedDir struct {
	f        *os.File // O_PATH
	dev, ino uint64
}

func (f *fileWriter) writeLine(line []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); !f.dead && (now.Sub(f.checked) >= identityRecheck || f.accessErr != nil && now.Sub(f.checked) >= failedRecheck) {
		f.checked = now
		f.recheck()
	}
	err := f.accessErr
	if err == nil {
		err = f.write(line)
	}
	if prev := f.access; err != nil && f.pin != nil {
		// The pinned folder removed, or replaced by the operator: decide
		// again now, not at the next check, and retry if that changed it.
		f.checked = time.Now()
		f.recheck()
		if f.accessErr == nil && f.access != prev {
			err = f.write(line)
		}
	}
	if (err != nil) != f.failing {
		f.failing = err != nil
		if err != nil {
			f.log.Error("log file write failed; lines are lost until it works again", zap.String("path", f.path), zap.Error(err))
		} else {
			f.log.Info("log file written again", zap.String("path", f.path))
		}
	}
	return err
}

func (f *fileWriter) write(line []byte) error {
	if f.as == nil {
		if _, err := f.lj.Write(line); err != nil {
			return err
		}
		if f.due(len(line)) {
			f.settle()
		}
		return nil
	}
	// Others may create names in this folder: a FIFO at the log's name
	// (or where a symlink there points) would block lumberjack's open,
	// and the writer, the copier and the agent's shutdown with it.
	// Refused up front (then the open file is closed: it may be that
	// FIFO); an open still blocked after fifoWait (one made between this
	// check and the open) is released by opening its read end, and a
	// write that stays blocked is abandoned (fsThread.doUnblocking). The
	// function touches only lj and line: an abandoned one may run on.
	lj, path := f.lj, f.path
	err := f.as.doUnblocking(func() error {
		var st unix.Stat_t
		if err := unix.Stat(lj.Filename, &st); err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG {
			_ = lj.Close()
			return fmt.Errorf("log file %s: not a regular file (mode %#o)", path, st.Mode&unix.S_IFMT)
		}
		_, err := lj.Write(line)
		return err
	}, lj.Filename)
	if errors.Is(err, errWriteBlocked) {
		f.abandon()
		return f.accessErr
	}
	if err == nil && f.due(len(line)) {
		err = f.as.do(func() error { f.settle(); return nil })
	}
	return err
}

// due counts n bytes written and reports whether settle has work: the
// file's identity to note after an open, or a prune.
func (f *fileWriter) due(n int) bool {
	f.sincePrune += int64(n)
	return f.file == [2]uint64{} || f.sincePrune >= int64(f.lj.MaxSize)<<20
}

// settle notes the open file's device and inode (see recheck) and prunes
// rotated files when due; on the writer's thread, under f.mu.
func (f *fileWriter) settle() {
	if f.file == [2]uint64{} {
		var st unix.Stat_t
		if unix.Stat(f.lj.Filename, &st) == nil {
			f.file = [2]uint64{st.Dev, st.Ino}
		}
	}
	if f.sincePrune >= int64(f.lj.MaxSize)<<20 {
		f.sincePrune = 0
		f.prune()
	}
}

// recheck decides the identity again; a different one replaces as or pin
// (the open file is closed: the next write opens it anew), and so does a
// log file no longer at its path. A path that can no longer be decided
// closes the file and sets accessErr: nothing is written until it can.
// Under f.mu.
func (f *fileWriter) recheck() {
	a, err := logIdentity(f.path)
	if err != nil {
		// Undecidable now (a folder put at the file's name): writing on
		// with the old identity could be root by path in a folder that
		// since became a user's. Nothing is written until it decides.
		f.release()
		f.access, f.accessErr = logAccess{}, err
		return
	}
	if a == f.access && f.accessErr == nil {
		// The file moved away (logrotate, with or without `create`) or
		// removed: open it anew rather than write where no one reads.
		var st unix.Stat_t
		if err := unix.Stat(f.lj.Filename, &st); (err == nil && f.file != [2]uint64{st.Dev, st.Ino}) || errors.Is(err, unix.ENOENT) {
			f.closeFile()
		}
		return
	}
	f.release()
	if f.accessErr = f.setAccess(a); f.accessErr != nil {
		return
	}
	f.log.Info("log file identity changed", zap.String("path", f.path), zap.Bool("root", a.root), zap.Bool("pinned", a.pinned),
		zap.Int("uid", a.uid), zap.Int("gid", a.gid))
}

// setAccess makes f write with a's identity (see logIdentity).
func (f *fileWriter) setAccess(a logAccess) error {
	f.access, f.lj.Filename = a, f.path
	var err error
	switch {
	case !a.root:
		if f.as, err = startFSThread(a.uid, a.gid); err != nil {
			return fmt.Errorf("log file %s: %w", f.path, err)
		}
	case a.pinned:
		if f.pin, f.lj.Filename, err = a.open(); err != nil {
			return err
		}
	}
	return nil
}

// closeFile closes the open file, with the writer's identity: the next
// write opens it anew.
func (f *fileWriter) closeFile() {
	f.file = [2]uint64{}
	if f.as != nil {
		_ = f.as.do(f.lj.Close)
	} else {
		_ = f.lj.Close()
	}
}

// release closes the open file and ends as and pin.
func (f *fileWriter) release() {
	f.closeFile()
	if f.as != nil {
		f.as.stop()
		f.as = nil
	}
	if f.pin != nil {
		_ = f.pin.f.Close()
		f.pin = nil
	}
}

// backupTime is the time lumberjack puts in a rotated file's name.
const backupTime = "2006-01-02T15-04-05.000"

// prune removes rotated files beyond the newest f.backups (lumberjack's
// names: NAME-TIME.EXT, or .EXT.gz), through the same path and identity
// as the writes. Called on the writer's thread, under f.mu.
func (f *fileWriter) prune() {
	if f.backups <= 0 {
		return
	}
	dir, base := filepath.Split(f.lj.Filename)
	ext := filepath.Ext(base)
	prefix := strings.TrimSuffix(base, ext) + "-"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var old []string // the time in each name sorts as the name does
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(n, prefix) {
			continue
		}
		stem := strings.TrimSuffix(n, ".gz")
		if !strings.HasSuffix(stem, ext) || len(stem) != len(prefix)+len(backupTime)+len(ext) {
			continue
		}
		ts := stem[len(prefix) : len(prefix)+len(backupTime)]
		if _, err := time.Parse(backupTime, ts); err == nil {
			old = append(old, n)
		}
	}
	slices.Sort(old)
	for _, n := range old[:max(0, len(old)-f.backups)] {
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			f.log.Warn("remove rotated log file failed", zap.String("path", filepath.Join(filepath.Dir(f.path), n)), zap.Error(err))
		}
	}
}

// Log files are written by the agent, which runs as root, in a folder the
// manifest names. lumberjack opens, renames, creates and chowns files by
// path; whoever may change a folder on that path (its owner, or anyone its
// mode lets write it) could swap the log file, or a folder, for a symlink
// between two of those steps and have root truncate, append to or chown
// any file on the host. So (logIdentity):
//   - where a user other than root owns a folder or symlink on the path,
//     lumberjack's file operations run with that user's file-system
//     identity (their uid and primary group, not the folder's group): the
//     kernel then checks each path as it would for that user, who gains
//     nothing they could not do themselves;
//   - where the log's own folder is root's but others may write it, with
//     the identity nobody (and the folder's group, when only it may
//     write): such a folder is no place for root's files;
//   - where only a folder above it is writable by others (Ubuntu's
//     /var/log, root:syslog 0775, above /var/log/app), root writes, but
//     through the log's folder held open (pinnedDir): a swapped folder
//     above it changes nothing;
//   - otherwise root writes by path, as systemd's StandardOutput=append:
//     opens.

// fsThread is one goroutine locked to an OS thread whose fsuid, fsgid and
// supplementary groups are a user's (raw, per-thread system calls, as
// openAs); it runs the functions it is given. It never unlocks: when it
// ends, Go discards the thread instead of reusing it with that identity.
type fsThread struct {
	reqs     chan fsReq
	done     chan struct{}
	uid, gid int
}

type fsReq struct {
	fn  func() error
	err chan error
}

func startFSThread(uid, gid int) (*fsThread, error) {
	t := &fsThread{reqs: make(chan fsReq), done: make(chan struct{}), uid: uid, gid: gid}
	ready := make(chan error, 1)
	go func() {
		defer close(t.done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Setgroups(nil); err != nil {
			ready <- fmt.Errorf("setgroups: %w", err)
			return
		}
		_ = unix.Setfsgid(gid)
		_ = unix.Setfsuid(uid)
		if got, _ := unix.SetfsuidRetUid(-1); got != uid {
			ready <- fmt.Errorf("setfsuid %d did not take", uid)
			return
		}
		if got, _ := unix.SetfsgidRetGid(-1); got != gid {
			ready <- fmt.Errorf("setfsgid %d did not take", gid)
			return
		}
		ready <- nil
		for r := range t.reqs {
			r.err <- r.fn()
		}
	}()
	if err := <-ready; err != nil {
		<-t.done
		return nil, err
	}
	return t, nil
}

// do runs fn on the thread and returns its error.
func (t *fsThread) do(fn func() error) error {
	r := fsReq{fn: fn, err: make(chan error, 1)}
	t.reqs <- r
	return <-r.err
}

// fifoWait is how long doUnblocking lets fn block before it looks for a
// FIFO to release.
var fifoWait = 2 * time.Second

// doUnblocking is do, for fn that opens path: if fn has not returned after
// fifoWait and path is a FIFO (an open for writing waits for a reader), a
// second thread with the same identity opens its read end (through an
// O_PATH descriptor checked to be that FIFO, so nothing else is opened),
// which lets the open return; the read end is closed once fn returns. If
// fn is still blocked fifoWait later, it returns errWriteBlocked and t,
// still running fn, must not be used again.
func (t *fsThread) doUnblocking(fn func() error, path string) error {
	r := fsReq{fn: fn, err: make(chan error, 1)}
	t.reqs <- r
	timer := time.NewTimer(fifoWait)
	defer timer.Stop()
	select {
	case err := <-r.err:
		return err
	case <-timer.C:
	}
	h, err := startFSThread(t.uid, t.gid)
	if err != nil {
		return <-r.err
	}
	defer h.stop()
	reader := -1
	_ = h.do(func() error {
		fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			return err
		}
		reader, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		return err
	})
	wait := time.NewTimer(fifoWait)
	defer wait.Stop()
	select {
	case err = <-r.err:
	case <-wait.C:
		// Not a FIFO's open (it moved away, or the file is a FIFO a
		// reader holds and does not read): the caller abandons t.
		err = errWriteBlocked
	}
	if reader >= 0 {
		_ = unix.Close(reader)
	}
	return err
}

// errWriteBlocked: doUnblocking's fn is still blocked; its thread is
// abandoned (fileWriter.abandon).
var errWriteBlocked = errors.New("write blocked")

// abandon leaves the thread and the lumberjack file of a write that stays
// blocked to it (the thread ends if the write ever returns) and starts
// over: the next identity check (at most a second later) makes a new
// thread and opens the file anew. After maxAbandoned the writer stops:
// each abandoned write holds a thread and maybe a descriptor.
func (f *fileWriter) abandon() {
	close(f.as.reqs)
	f.as = nil
	f.lj = &lumberjack.Logger{Filename: f.path, MaxSize: f.lj.MaxSize}
	f.file, f.access = [2]uint64{}, logAccess{}
	f.abandoned++
	f.accessErr = fmt.Errorf("log file %s: a write stayed blocked for %s (a FIFO, or a reader that stopped reading): %w", f.path, 2*fifoWait, errWriteBlocked)
	if f.abandoned >= maxAbandoned {
		f.dead = true
		f.accessErr = fmt.Errorf("log file %s: writes stayed blocked %d times; not written again until the agent restarts: %w", f.path, f.abandoned, errWriteBlocked)
	}
}

// maxAbandoned is how many blocked writes a log file may leave behind.
const maxAbandoned = 4

// stop ends the goroutine and waits for it.
func (t *fsThread) stop() {
	close(t.reqs)
	<-t.done
}

// nobody is the overflow user and group (nobody, nogroup).
const nobody = 65534

// logAccess is how log files at a path are written.
type logAccess struct {
	uid, gid int  // the file-system identity, unless root
	root     bool // root writes
	// pinned (root only): a folder above dir may be changed by someone
	// other than root; dir is opened once and every file operation goes
	// through it.
	pinned   bool
	dir      string // the deepest folder that exists, symlinks resolved
	dev, ino uint64 // dir's, as checked
	rest     string // the path below dir: folders to create, the file
}

// maxLinks is how many symlinks logIdentity follows (the kernel's 40).
const maxLinks = 40

// logIdentity walks path from / as the kernel resolves it, one component
// at a time with lstat, following symlinks (the log file's own name too),
// and decides how its log files are written (see the comment above
// fsThread). A user's folder, symlink or existing log file: that user
// (nobody, when there are two or more); the deepest existing folder of
// root's but writable by others, sticky (/tmp) or not: nobody (with its
// group when only the group may write); a folder above it writable by
// others and not sticky: root, pinned; else root.
func logIdentity(path string) (logAccess, error) {
	path = filepath.Clean(path)
	if !filepath.IsAbs(path) || path == "/" {
		return logAccess{}, fmt.Errorf("log file %s: not an absolute path to a file", path)
	}
	var cur unix.Stat_t
	if err := unix.Lstat("/", &cur); err != nil {
		return logAccess{}, fmt.Errorf("log folder /: %w", err)
	}
	dir := "/"
	owner, twoUsers := -1, false
	if cur.Uid != 0 {
		owner = int(cur.Uid)
	}
	unsafeAbove := false
	var missing []string
	leaf := "" // the log file's name in dir, when it exists
	queue := strings.Split(path, "/")
	for links := 0; len(queue) > 0; {
		name := queue[0]
		queue = queue[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			dir = filepath.Dir(dir)
			if err := unix.Lstat(dir, &cur); err != nil {
				return logAccess{}, fmt.Errorf("log folder %s: %w", dir, err)
			}
			continue
		}
		next := filepath.Join(dir, name)
		last := !slices.ContainsFunc(queue, func(q string) bool { return q != "" && q != "." })
		var st unix.Stat_t
		err := unix.Lstat(next, &st)
		if errors.Is(err, unix.ENOENT) {
			missing = append([]string{name}, queue...)
			for _, m := range missing {
				if m == ".." {
					return logAccess{}, fmt.Errorf("log folder %s: a symlink leads to .. below a missing folder", next)
				}
			}
			break
		}
		if err != nil {
			return logAccess{}, fmt.Errorf("log folder %s: %w", next, err)
		}
		// Who may rename name away in dir: dir's owner (root: checked
		// as dir was entered), and anyone its mode lets write it, unless
		// it is sticky and name is root's.
		if cur.Mode&0o022 != 0 && cur.Mode&unix.S_ISVTX == 0 {
			unsafeAbove = true
		}
		if st.Uid != 0 {
			// A user's folder, symlink, or log file (one they made
			// before the agent: root appending to it, and chowning it
			// at rotation, would write where they point it).
			if owner >= 0 && owner != int(st.Uid) {
				// Two users: the first could point the path into the
				// second's files (a symlink to their authorized_keys);
				// writing as either would let one act as the other.
				twoUsers = true
			}
			owner = int(st.Uid)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			if links++; links > maxLinks {
				return logAccess{}, fmt.Errorf("log file %s: %w", path, unix.ELOOP)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return logAccess{}, fmt.Errorf("log folder %s: %w", next, err)
			}
			queue = append(strings.Split(target, "/"), queue...)
			if filepath.IsAbs(target) {
				dir = "/"
				if err := unix.Lstat(dir, &cur); err != nil {
					return logAccess{}, fmt.Errorf("log folder /: %w", err)
				}
			}
		case unix.S_IFDIR:
			if last {
				return logAccess{}, fmt.Errorf("log file %s: %s is a folder", path, next)
			}
			dir, cur = next, st
		default:
			if !last {
				return logAccess{}, fmt.Errorf("log folder %s: not a folder", next)
			}
			leaf = name
		}
	}
	if leaf == "" && len(missing) == 0 {
		return logAccess{}, fmt.Errorf("log file %s: %s is a folder", path, dir)
	}
	if twoUsers {
		return logAccess{uid: nobody, gid: nobody}, nil
	}
	if owner >= 0 {
		return logAccess{uid: owner, gid: primaryGID(owner)}, nil
	}
	// Names are created in dir: the file (at each rotation too), or the
	// folders missing.
	switch {
	case cur.Mode&0o022 == 0:
	// A sticky folder (/tmp) is no exception: the kernel's protections
	// (fs.protected_fifos, _regular) cover only opens that may create,
	// and lumberjack opens an existing file without O_CREAT, so another
	// user's FIFO there would block root's open.
	case cur.Mode&0o002 == 0:
		return logAccess{uid: nobody, gid: int(cur.Gid)}, nil
	default:
		return logAccess{uid: nobody, gid: nobody}, nil
	}
	rest := leaf
	if len(missing) > 0 {
		rest = filepath.Join(missing...)
	}
	return logAccess{root: true, pinned: unsafeAbove, dir: dir, dev: cur.Dev, ino: cur.Ino, rest: rest}, nil
}

// open pins a.dir: opens it (O_PATH) and checks it is the folder
// logIdentity looked at; name is the log file's path through it.
func (a logAccess) open() (pin *pinnedDir, name string, err error) {
	fd, err := unix.Open(a.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("log folder %s: %w", a.dir, err)
	}
	f := os.NewFile(uintptr(fd), a.dir)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Dev != a.dev || st.Ino != a.ino {
		f.Close()
		return nil, "", fmt.Errorf("log folder %s changed while it was checked (%v)", a.dir, err)
	}
	name = fmt.Sprintf("/proc/self/fd/%d/%s", fd, a.rest)
	if err := unix.Stat(fmt.Sprintf("/proc/self/fd/%d", fd), &st); err != nil || st.Dev != a.dev || st.Ino != a.ino {
		f.Close()
		return nil, "", fmt.Errorf("log folder %s: held open, not reachable through /proc: %w", a.dir, err)
	}
	return &pinnedDir{f: f, dev: a.dev, ino: a.ino}, name, nil
}

// primaryGID is uid's group in the user database, or nogroup: not the
// folder's group (/var/log/mysql is mysql:adm), which the user need not be
// in; writing with it would let them point the agent's writes at files
// only that group may write.
func primaryGID(uid int) int {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nobody
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil || gid == 0 {
		return nobody
	}
	return gid
}

// logFiles owns the lumberjack loggers, by path.
type logFiles struct {
	mu    sync.Mutex
	files map[string]*fileWriter
	log   *zap.Logger // nil: zap.NewNop
}

func (l *logFiles) get(path string, logs *desired.Logs) (*fileWriter, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	size, err := parseSizeMB(logs.MaxSize)
	if err != nil {
		return nil, err
	}
	backups := 3
	if logs.MaxBackups != nil {
		backups = *logs.MaxBackups
	}
	if w, ok := l.files[path]; ok {
		// The writer lives as long as the agent; a process started from a
		// changed manifest brings its rotation settings (lumberjack reads
		// them at each write, under the writer's lock).
		w.mu.Lock()
		w.lj.MaxSize, w.backups = size, backups
		w.mu.Unlock()
		return w, nil
	}
	log := l.log
	if log == nil {
		log = zap.NewNop()
	}
	// sincePrune starts full: the first write prunes what earlier agents
	// left (an agent restarted often might never write MaxSize).
	w := &fileWriter{path: path, lj: &lumberjack.Logger{Filename: path, MaxSize: size}, backups: backups, log: log, checked: time.Now(),
		sincePrune: int64(size) << 20}
	a, err := logIdentity(path)
	if err != nil {
		return nil, err
	}
	if err := w.setAccess(a); err != nil {
		return nil, err
	}
	if l.files == nil {
		l.files = map[string]*fileWriter{}
	}
	l.files[path] = w
	return w, nil
}

func (l *logFiles) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, w := range l.files {
		w.mu.Lock()
		w.release()
		w.mu.Unlock()
		delete(l.files, p)
	}
}

// parseSizeMB parses "10M", "512K", "1G" into lumberjack's megabytes
// (rounded up; lumberjack cannot rotate below 1 MB). Empty means 10.
func parseSizeMB(s string) (int, error) {
	if s == "" {
		return 10, nil
	}
	mult := int64(1)
	num := strings.TrimSuffix(strings.ToUpper(s), "B")
	switch {
	case strings.HasSuffix(num, "K"):
		mult, num = 1<<10, strings.TrimSuffix(num, "K")
	case strings.HasSuffix(num, "M"):
		mult, num = 1<<20, strings.TrimSuffix(num, "M")
	case strings.HasSuffix(num, "G"):
		mult, num = 1<<30, strings.TrimSuffix(num, "G")
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("log maxSize %q: want a size like 10M", s)
	}
	mb := (n*mult + 1<<20 - 1) >> 20
	return int(mb), nil
}

// copyLines reads r until EOF or error and writes whole lines to w. A last
// line without newline (a process that crashed mid-line) is flushed with
// one added, so nothing read is lost.
// maxLine is the longest line copyLines keeps whole.
const maxLine = 64 << 10

func copyLines(r io.Reader, w lineWriter) {
	// The buffer starts small (two per service add up: 64 KiB each was
	// 82% of the agent's heap with 100 services) and doubles, up to
	// maxLine, while a line does not fit.
	buf := make([]byte, 4<<10)
	n := 0 // bytes pending in buf
	for {
		if n == len(buf) && len(buf) < maxLine {
			buf = append(buf, make([]byte, min(len(buf), maxLine-len(buf)))...)
		}
		if n == len(buf) { // a line longer than maxLine: write it in pieces
			_ = w.writeLine(append(buf[:n:n], '\n'))
			n = 0
		}
		m, err := r.Read(buf[n:])
		n += m
		start := 0
		for {
			i := bytes.IndexByte(buf[start:n], '\n')
			if i < 0 {
				break
			}
			_ = w.writeLine(buf[start : start+i+1])
			start += i + 1
		}
		n = copy(buf, buf[start:n])
		if err != nil {
			if n > 0 {
				_ = w.writeLine(append(buf[:n:n], '\n'))
			}
			return
		}
	}
}

// makeFIFO creates a FIFO and opens it twice: the reader end for the agent
// (non-blocking, so closing it unblocks the copier) and a read-write end for
// the child's stdout/stderr. Because the child holds the FIFO open for
// reading too, its writes never fail with EPIPE while no agent reads (the
// agent was restarted); they block once the pipe is full, and the next agent
// re-opens the FIFO by path and drains it.
func makeFIFO(path string) (reader, child *os.File, err error) {
	if err := unix.Mkfifo(path, 0o600); err != nil && !os.IsExist(err) {
		return nil, nil, fmt.Errorf("mkfifo %s: %w", path, err)
	}
	reader, err = openFIFOReader(path)
	if err != nil {
		return nil, nil, err
	}
	child, err = os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		reader.Close()
		return nil, nil, fmt.Errorf("open fifo %s: %w", path, err)
	}
	return reader, child, nil
}

func openFIFOReader(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open fifo %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}
