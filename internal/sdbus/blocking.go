package sdbus

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pipeConn is what a pipe needs of its connection: net.Conn while it is
// dialed and used for batches, blockingConn once it is the watch's.
type pipeConn interface {
	io.ReadWriteCloser
	SetDeadline(t time.Time) error
	SetReadDeadline(t time.Time) error
}

// blockingConn is a connected socket read and written by blocking system
// calls, outside Go's network poller: the watch connection's (watchRaw).
//
// systemd writes each signal to each private connection as it emits it,
// about 490 writes for a daemon-reload of 100 services. On a socket in the
// poller every write wakes the runtime's poller thread (edge-triggered
// epoll re-arms on each arrival), whether or not the reader waits for
// data: hundreds of wake-ups and context switches while PID 1 reloads on
// a small host. Measured in a sandbox with 100 services (an idle reader
// that reads every 2 ms, 30 `systemctl daemon-reload`s each, p50): no
// reader 45.7 ms, a reader through the poller 48.8 ms, a blocking reader
// 46.1 ms. A blocking read sleeps in the kernel only while the socket is
// empty; while the watch lets a burst gather, arrivals wake no one.
//
// The price is one OS thread blocked in read(2) while the watch is idle,
// and no deadlines: Close shuts the socket down, which ends a read in
// progress. (The standard library has no way to take a descriptor out of
// the poller, hence this type.)
type blockingConn struct {
	f *os.File
}

// errNoDeadline: a blockingConn has no deadlines.
var errNoDeadline = fmt.Errorf("blocking connection: %w", os.ErrNoDeadline)

// blocking moves p's connection out of the poller: a duplicate of its
// descriptor in blocking mode replaces it (O_NONBLOCK belongs to the
// shared open file; the original descriptor is closed here). Bytes p has
// read ahead stay first in line.
func (p *pipe) blocking() error {
	sc, ok := p.conn.(syscall.Conn)
	if !ok {
		return fmt.Errorf("blocking connection: %T has no descriptor", p.conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("blocking connection: %w", err)
	}
	nfd := -1
	var derr error
	if err := raw.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return fmt.Errorf("blocking connection: %w", err)
	}
	if derr != nil {
		return fmt.Errorf("blocking connection: dup: %w", derr)
	}
	if err := unix.SetNonblock(nfd, false); err != nil {
		_ = unix.Close(nfd)
		return fmt.Errorf("blocking connection: %w", err)
	}
	f := os.NewFile(uintptr(nfd), "systemd-watch")
	c := &blockingConn{f: f}
	var r io.Reader = c
	if n := p.r.Buffered(); n > 0 {
		ahead, _ := p.r.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), c)
	}
	_ = p.conn.Close()
	p.conn = c
	p.r = bufio.NewReaderSize(r, 64<<10)
	return nil
}

func (c *blockingConn) Read(b []byte) (int, error)  { return c.f.Read(b) }
func (c *blockingConn) Write(b []byte) (int, error) { return c.f.Write(b) }

// Close shuts the socket down, so that a read blocked in another goroutine
// returns, and closes the descriptor once that read has (os.File counts
// its users).
func (c *blockingConn) Close() error {
	if raw, err := c.f.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	}
	return c.f.Close()
}

func (c *blockingConn) SetDeadline(time.Time) error     { return errNoDeadline }
func (c *blockingConn) SetReadDeadline(time.Time) error { return errNoDeadline }
