package process

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

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
}

func (f fileWriter) writeLine(line []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.lj.Write(line)
	return err
}

// logFiles owns the lumberjack loggers, by path.
type logFiles struct {
	mu    sync.Mutex
	files map[string]fileWriter
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
	w := fileWriter{mu: &sync.Mutex{}, lj: &lumberjack.Logger{Filename: path, MaxSize: size, MaxBackups: backups}}
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
		w.lj.Close()
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
