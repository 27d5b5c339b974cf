package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A killed agent's forked child may hold the inherited lock descriptor for an
// instant (between fork and exec): the next agent waits for it instead of
// failing, but only while the recorded holder is dead.
func TestLockWaitsForDeadHoldersDescriptor(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.lock")
	// A PID that does not run: a reaped child's.
	dead := deadPID(t)
	if err := os.WriteFile(path, []byte(dead+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	held, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(held.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(200 * time.Millisecond)
		held.Close()
	}()
	unlock, err := lockState(dir)
	<-done
	if err != nil {
		t.Fatalf("lock with a dead holder's descriptor released later: %v", err)
	}
	unlock()

	// A live holder (this process) is refused at once.
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	held2, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held2.Close()
	if err := unix.Flock(int(held2.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if _, err := lockState(dir); err == nil || !strings.Contains(err.Error(), "another reconciler holds") {
		t.Fatalf("second agent with a live holder: %v", err)
	}
}

func deadPID(t *testing.T) string {
	t.Helper()
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(p.Pid)
}
