package sdbus

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBlockingConn: a pipe moved out of the poller keeps the bytes it had
// read ahead, reads and writes as before, and Close ends a read blocked in
// another goroutine.
func TestBlockingConn(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer srv.Close()
	if _, err := srv.Write([]byte("ahead|after")); err != nil {
		t.Fatal(err)
	}
	p := &pipe{conn: c, r: bufio.NewReaderSize(c, 64<<10)}
	if _, err := p.r.Peek(len("ahead|after")); err != nil { // read ahead into p.r
		t.Fatal(err)
	}
	fds := openFDs(t)
	if err := p.blocking(); err != nil {
		t.Fatal(err)
	}
	bc, ok := p.conn.(*blockingConn)
	if !ok {
		t.Fatalf("conn is %T", p.conn)
	}
	if n := openFDs(t); n != fds {
		t.Errorf("%d descriptors open after blocking(), %d before: the poller's one not closed", n, fds)
	}
	flags, err := unix.FcntlInt(bc.f.Fd(), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_NONBLOCK != 0 {
		t.Errorf("flags %#x, %v: want a blocking descriptor", flags, err)
	}
	if err := bc.f.SetReadDeadline(time.Now()); !errors.Is(err, os.ErrNoDeadline) {
		t.Errorf("the file takes deadlines (%v): it is in the poller", err)
	}
	if _, err := srv.Write([]byte("|later")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("ahead|after|later"))
	if _, err := io.ReadFull(p.r, got); err != nil || string(got) != "ahead|after|later" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := p.conn.Write([]byte("out")); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 3)
	if _, err := io.ReadFull(srv, out); err != nil || string(out) != "out" {
		t.Fatalf("server read %q, %v", out, err)
	}
	if err := p.conn.SetDeadline(time.Now()); err == nil {
		t.Error("SetDeadline: no error on a blocking connection")
	}

	done := make(chan error, 1)
	go func() {
		_, err := p.r.ReadByte() // blocks: nothing more is sent
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the read block (it ends either way)
	p.close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("read after Close returned a byte")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not end a blocked read")
	}
	if _, err := srv.Read(out); err != io.EOF {
		t.Errorf("server read after Close: %v, want EOF", err)
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
