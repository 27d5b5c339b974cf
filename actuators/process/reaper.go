package process

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// exitStatus is how a process ended.
type exitStatus struct {
	// Known is false for an adopted process that is not our child: its exit
	// was seen (pidfd) but its status belongs to its real parent.
	Known  bool
	Code   int
	Signal syscall.Signal
	Core   bool
}

// result maps a status onto systemd's Result= and its notion of a clean
// exit: status 0, or death by SIGHUP, SIGINT, SIGTERM or SIGPIPE.
func (e exitStatus) result() (result string, clean bool) {
	switch {
	case !e.Known:
		return ResultUnknown, false
	case e.Signal != 0:
		switch e.Signal {
		case syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE:
			return ResultSuccess, true
		}
		if e.Core {
			return ResultCoreDump, false
		}
		return ResultSignal, false
	case e.Code != 0:
		return ResultExitCode, false
	}
	return ResultSuccess, true
}

// execMainStatus is systemd's ExecMainStatus: the exit code or the signal number.
func (e exitStatus) execMainStatus() int32 {
	if e.Signal != 0 {
		return int32(e.Signal)
	}
	return int32(e.Code)
}

// reaper is the single place that calls wait4. Every child the supervisor
// forks is registered under mu while it is forked, so an exit is never seen
// before its waiter exists; statuses are dispatched by PID. With orphans set
// (PID 1, or a child subreaper) it also reaps re-parented orphans with
// wait4(-1), which would steal the status of any exec.Cmd run elsewhere in
// the agent: in that mode, nothing else in the process may call cmd.Wait.
type reaper struct {
	log     *zap.Logger
	orphans bool

	mu      sync.Mutex
	waiters map[int]chan<- exitStatus
}

func newReaper(log *zap.Logger, orphans bool) *reaper {
	return &reaper{log: log, orphans: orphans, waiters: map[int]chan<- exitStatus{}}
}

// fork runs start (which forks) with the registry locked and registers the
// new PID; ch must be buffered (1).
func (r *reaper) fork(start func() (int, error), ch chan<- exitStatus) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := start()
	if err != nil {
		return 0, err
	}
	r.waiters[pid] = ch
	return pid, nil
}

// run reaps on every SIGCHLD until ctx is done. sigs must already be
// registered with signal.Notify (before the first fork).
func (r *reaper) run(ctx context.Context, sigs <-chan os.Signal) {
	r.reap()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigs:
			r.reap()
		}
	}
}

func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for pid, ch := range r.waiters {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid {
			r.dispatch(pid, ch, ws)
		} else if errors.Is(err, unix.ECHILD) {
			// Reaped by someone else: report an unknown status rather than hang.
			delete(r.waiters, pid)
			ch <- exitStatus{}
		}
	}
	if !r.orphans {
		return
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		if ch, ok := r.waiters[pid]; ok {
			r.dispatch(pid, ch, ws)
			continue
		}
		r.log.Debug("orphan reaped", zap.Int("pid", pid), zap.Int("status", ws.ExitStatus()))
	}
}

func (r *reaper) dispatch(pid int, ch chan<- exitStatus, ws unix.WaitStatus) {
	delete(r.waiters, pid)
	st := exitStatus{Known: true, Code: ws.ExitStatus()}
	if ws.Signaled() {
		st = exitStatus{Known: true, Signal: syscall.Signal(ws.Signal()), Core: ws.CoreDump()}
	}
	ch <- st // buffered 1, one send per PID
}

// notifySIGCHLD registers for SIGCHLD; stop with signal.Stop.
func notifySIGCHLD() chan os.Signal {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGCHLD)
	return c
}
