package process

// Adoption by the unit runner: taking over a process a previous agent
// started, and watching the exit of a process that is not our child.

import (
	"context"
	"os"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// adopt takes over a process a previous agent started (same PID and start
// time). It keeps running what it was started from (rec.SpecHash): a newer
// unit file on disk is the planner's business (StaleProcess), never a
// restart the supervisor decides on its own. spec is the unit's spec at
// load, not the unit's current one: a reload may have unloaded it since.
func (r *runner) adopt(ctx context.Context, spec *Spec, rec *procRecord) {
	r.u.s.forgetIdle(r.u.name) // it runs: a record from before its start is stale
	r.spec = spec
	r.hash = rec.SpecHash
	r.tracker = NewTracker(*r.spec.Restart, r.u.s.now)
	r.attempt = 1
	exit := make(chan exitStatus, 1)
	p := &child{rec: *rec, exit: exit}
	paths := []string{rec.Stdout}
	if rec.Stderr != rec.Stdout {
		paths = append(paths, rec.Stderr) // one FIFO for both (errPath) is read once
	}
	want := 0
	for _, path := range paths {
		if path == "" {
			continue
		}
		want++
		f, err := openFIFOReader(path)
		if err != nil {
			r.log.Warn("adopted process output lost", zap.Error(err))
			continue
		}
		p.readers = append(p.readers, f)
	}
	if want > 0 && len(p.readers) == want {
		r.startCopiers(p)
	}
	r.proc = p
	r.unwatch = watchExit(&r.bg, rec.PID, exit)
	if r.spec.Type == TypeNotify {
		if err := r.ensureNotify(ctx); err != nil {
			r.log.Error("notify socket failed", zap.Error(err))
		}
		if w := r.spec.Watchdog; w != nil {
			r.wdTimeout = w.Timeout.D()
			r.resetWatchdog()
		}
	}
	r.phase = phRunning
	r.set("active", "running", func(st *status) {
		st.MainPID, st.ExecMainStart, st.SpecHash, st.ProcHash = rec.PID, time.UnixMicro(rec.Started), rec.SpecHash, rec.ProcHash
		st.NRestarts = rec.NRestarts
		st.Owed = rec.Owed
	})
	r.log.Info("process adopted", zap.Int("pid", rec.PID), zap.Bool("stopping", rec.Stopping))
	r.reloadSpec() // a file newer than the process that changed nothing it depends on
	if !rec.Stopping && r.adoptedInStartup(rec) {
		// The killed agent may have been running its startup probe: probe
		// again with what is left of its budget (a healthy process passes
		// at the first attempt).
		r.beginStartupProbeWithin(ctx, r.startupLeft(rec))
		return
	}
	if rec.Stopping {
		// The previous agent was stopping it when it was killed: finish
		// the stop, and start it again if that was a restart.
		r.requested = true
		r.restartAfterStop = rec.stopReason() == stopRestart
		r.owedRestart = r.restartAfterStop
		r.kill(syscall.SIGTERM, "stop-sigterm")
	}
}

// watchExit reports the exit of a process that may not be our child, using
// a pidfd (poll says when it exited). When it is our child after all (same
// agent process, as in tests) the status is reaped with wait4; otherwise it
// is unknown. The returned func stops the watch; wg tracks the goroutine.
func watchExit(wg *sync.WaitGroup, pid int, exit chan<- exitStatus) (stop func()) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return pollExit(wg, pid, exit)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return pollExit(wg, pid, exit)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := rc.Read(func(fd uintptr) bool {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, _ := unix.Poll(pfd, 0)
			return n > 0
		})
		if err == nil {
			exit <- reapIfChild(pid)
		}
	}()
	return func() { f.Close() }
}

// pollExit is watchExit without pidfd (kernels before 5.3): /proc, once a second.
func pollExit(wg *sync.WaitGroup, pid int, exit chan<- exitStatus) (stop func()) {
	return everySecond(wg, func() bool {
		if st, err := readProcStat("/proc", pid); err != nil || st.State == 'Z' {
			exit <- reapIfChild(pid)
			return true
		}
		return false
	})
}

// everySecond calls tick once a second on a goroutine wg tracks, until tick
// returns true or the returned func is called.
func everySecond(wg *sync.WaitGroup, tick func() (done bool)) (stop func()) {
	quit := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if tick() {
					return
				}
			}
		}
	}()
	return func() { close(quit) }
}

// reapIfChild collects the status of an exited process if it is our child.
func reapIfChild(pid int) exitStatus {
	var ws unix.WaitStatus
	for i := 0; i < 50; i++ {
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid {
			if ws.Signaled() {
				return exitStatus{Known: true, Signal: syscall.Signal(ws.Signal()), Core: ws.CoreDump()}
			}
			return exitStatus{Known: true, Code: ws.ExitStatus()}
		}
		if err != nil { // ECHILD: not ours
			return exitStatus{}
		}
		time.Sleep(10 * time.Millisecond) // exited but not yet a zombie
	}
	return exitStatus{}
}
