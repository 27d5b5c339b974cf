package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// lockState takes the agent's single-instance lock: an flock on
// <state-dir>/agent.lock. A second agent (run or apply) fails at once with a
// message naming the holder. The kernel drops the lock when the process dies,
// so a kill -9 never leaves a stale lock behind.
func lockState(stateDir string) (func(), error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	path := filepath.Join(stateDir, "agent.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := flockDeadHolder(f, path); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("another reconciler holds %s (pid %s); only one agent may run per state directory", path, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// flockDeadHolder takes the lock without blocking, except when the agent
// recorded as its holder is dead: then a child it forked may still hold the
// inherited descriptor for the instant between fork and exec (O_CLOEXEC
// closes it only at exec), so a kill -9 of the agent during a start could
// refuse the next agent. It retries for up to 3 s in that case only.
func flockDeadHolder(f *os.File, path string) error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EWOULDBLOCK || time.Now().After(deadline) || holderAlive(path) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agentRunning reports whether the process recorded in the state
// directory's lock file still runs (true when that cannot be told). It
// takes no lock: a probe must never make a starting agent find the lock
// held.
func agentRunning(stateDir string) bool {
	path := filepath.Join(stateDir, "agent.lock")
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return false
	}
	return holderAlive(path)
}

// holderAlive reports whether the PID recorded in the lock file still runs
// (true when unknown, so a live agent is never waited on).
func holderAlive(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return true
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return true
	}
	return syscall.Kill(pid, 0) != syscall.ESRCH
}
