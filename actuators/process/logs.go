package process

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

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
	mu *sync.Mutex
	lj *lumberjack.Logger
	// failing: the last write failed (logged once per failure spell:
	// the line is lost, the process is not blocked).
	failing *bool
	log     *zap.Logger
	// as, when the log's folder belongs to someone other than root,
	// runs every file operation with that owner's file-system identity
	// (fsThread); nil: on the caller's thread, as root.
	as *fsThread
}

func (f fileWriter) writeLine(line []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	if f.as != nil {
		err = f.as.do(func() error {
			_, err := f.lj.Write(line)
			return err
		})
	} else {
		_, err = f.lj.Write(line)
	}
	if f.failing != nil && (err != nil) != *f.failing {
		*f.failing = err != nil
		if err != nil {
			f.log.Error("log file write failed; lines are lost until it works again", zap.String("path", f.lj.Filename), zap.Error(err))
		} else {
			f.log.Info("log file written again", zap.String("path", f.lj.Filename))
		}
	}
	return err
}

// Log files are written by the agent, which runs as root, in a folder the
// manifest names. lumberjack opens, renames, creates and chowns files by
// path; in a folder another user can write (a service's own log folder),
// that user could swap the log file for a symlink between two of those
// steps and have root truncate, append to or chown any file on the host.
// So in such a folder every file operation runs with the folder owner's
// file-system identity: the kernel then checks each path as it would for
// that user, who gains nothing they could not do themselves. A folder of
// root's that nobody else may write is used as root (systemd's
// StandardOutput=append: opens as root too).

// fsThread is one goroutine locked to an OS thread whose fsuid, fsgid and
// supplementary groups are a user's (raw, per-thread system calls, as
// openAs); it runs the functions it is given. It never unlocks: when it
// ends, Go discards the thread instead of reusing it with that identity.
type fsThread struct {
	reqs chan fsReq
	done chan struct{}
}

type fsReq struct {
	fn  func() error
	err chan error
}

func startFSThread(uid, gid int) (*fsThread, error) {
	t := &fsThread{reqs: make(chan fsReq), done: make(chan struct{})}
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

// stop ends the goroutine and waits for it.
func (t *fsThread) stop() {
	close(t.reqs)
	<-t.done
}

// nobody is the overflow user and group (nobody, nogroup).
const nobody = 65534

// logIdentity returns the file-system identity log files at path are
// written with. Every folder from the one that holds path (or the nearest
// that exists: lumberjack creates the rest) up to / is looked at, the
// deepest first, since whoever may change one of them can redirect the
// path: a folder a user owns makes it that user; a folder of root's that
// its group or anyone may write makes it nobody (with that group, or
// nogroup). A sticky one (/tmp) is safe above a folder of root's (nobody
// else may rename that away); where files or folders are created in it,
// only while the kernel refuses to follow another user's symlinks there
// (fs.protected_symlinks and fs.protected_regular). Folders of root's that
// nobody else may write all the way up: root (root true), as systemd's
// StandardOutput=append: opens.
func logIdentity(path string) (uid, gid int, root bool, err error) {
	dir := filepath.Dir(filepath.Clean(path))
	creates := true // the deepest existing folder: names are created in it
	found := false
	for {
		var st unix.Stat_t
		err := unix.Stat(dir, &st)
		switch {
		case err == nil:
			found = true
			sticky := st.Mode&unix.S_ISVTX != 0
			switch {
			case st.Uid != 0:
				return int(st.Uid), int(st.Gid), false, nil
			case st.Mode&0o022 == 0:
			case sticky && !creates:
			case sticky && sysctlOn("protected_symlinks") && sysctlOn("protected_regular"):
			case st.Mode&0o002 == 0:
				return nobody, int(st.Gid), false, nil
			default:
				return nobody, nobody, false, nil
			}
			creates = false
		case found || !errors.Is(err, unix.ENOENT):
			return 0, 0, false, fmt.Errorf("log folder %s: %w", dir, err)
		}
		if dir == "/" {
			return 0, 0, true, nil
		}
		dir = filepath.Dir(dir)
	}
}

// sysctlOn reports whether /proc/sys/fs/NAME is set (not 0).
func sysctlOn(name string) bool {
	b, err := os.ReadFile("/proc/sys/fs/" + name)
	v := strings.TrimSpace(string(b))
	return err == nil && v != "" && v != "0"
}

// logFiles owns the lumberjack loggers, by path.
type logFiles struct {
	mu    sync.Mutex
	files map[string]fileWriter
	log   *zap.Logger // nil: zap.NewNop
}

func (l *logFiles) get(path string, logs *desired.Logs) (fileWriter, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	size, err := parseSizeMB(logs.MaxSize)
	if err != nil {
		return fileWriter{}, err
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
		w.lj.MaxSize, w.lj.MaxBackups = size, backups
		w.mu.Unlock()
		return w, nil
	}
	log := l.log
	if log == nil {
		log = zap.NewNop()
	}
	w := fileWriter{mu: &sync.Mutex{}, lj: &lumberjack.Logger{Filename: path, MaxSize: size, MaxBackups: backups}, failing: new(bool), log: log}
	uid, gid, root, err := logIdentity(path)
	if err != nil {
		return fileWriter{}, err
	}
	if !root {
		if w.as, err = startFSThread(uid, gid); err != nil {
			return fileWriter{}, fmt.Errorf("log file %s: %w", path, err)
		}
	}
	if l.files == nil {
		l.files = map[string]fileWriter{}
	}
	l.files[path] = w
	return w, nil
}

func (l *logFiles) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, w := range l.files {
		w.mu.Lock()
		if w.as != nil {
			_ = w.as.do(w.lj.Close)
			w.as.stop()
		} else {
			w.lj.Close()
		}
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
