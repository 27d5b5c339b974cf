package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/desired"
)

// switchCheck passes while ok is set.
type switchCheck struct{ ok *atomic.Bool }

func (c switchCheck) Check(context.Context) error {
	if c.ok.Load() {
		return nil
	}
	return errors.New("down")
}

func waitStatus(t *testing.T, p *Prober, what string, cond func([]Status) bool) []Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := p.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProberLifecycle(t *testing.T) {
	var ok atomic.Bool
	ok.Store(true)
	var wakes atomic.Int32
	p := New(zaptest.NewLogger(t), func() { wakes.Add(1) })
	p.checker = func(desired.Probe, Identity) (Checker, error) { return switchCheck{&ok}, nil }
	probe := desired.Probe{TCP: "127.0.0.1:1", Interval: "10ms", Timeout: "10ms", Failures: 3}.Effective(desired.ProbeLiveness)
	target := Target{Object: "Service/web", Unit: "web.service", Kind: desired.ProbeLiveness, Probe: probe, MainPID: 10, Started: time.Now()}
	// Set before Run: the loops start with Run.
	p.Set([]Target{target})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	one := func(st []Status) *Status {
		if len(st) != 1 {
			return nil
		}
		return &st[0]
	}
	waitStatus(t, p, "passing", func(st []Status) bool { s := one(st); return s != nil && s.State == Passing })
	ok.Store(false)
	st := waitStatus(t, p, "failing", func(st []Status) bool { s := one(st); return s != nil && s.State == Failing })
	if s := one(st); s.Failures < 3 || s.LastError != "down" {
		t.Fatalf("failing status %+v", s)
	}
	if wakes.Load() < 2 {
		t.Fatalf("%d wakes for two state changes", wakes.Load())
	}
	// The same target again changes nothing; a restarted process begins
	// afresh (Unknown until its first verdict).
	p.Set([]Target{target})
	if s := one(p.Status()); s == nil || s.State != Failing {
		t.Fatalf("same target reset the probe: %+v", s)
	}
	restarted := target
	restarted.MainPID, restarted.Started = 11, time.Now().Add(time.Hour) // initial delay pending
	restarted.Probe.InitialDelay = "1h"
	p.Set([]Target{restarted})
	if s := one(p.Status()); s == nil || s.State != Unknown || s.MainPID != 11 || s.Attempts != 0 {
		t.Fatalf("after a restart: %+v", s)
	}
	// A target that goes away stops its loop and its status.
	p.Set(nil)
	if st := p.Status(); len(st) != 0 {
		t.Fatalf("status after the target left: %+v", st)
	}
}

func TestProberCheckerError(t *testing.T) {
	p := New(zaptest.NewLogger(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitStatus(t, p, "run", func([]Status) bool { p.mu.Lock(); defer p.mu.Unlock(); return p.ctx != nil })
	// A user that does not exist: the agent cannot run the probe. That is
	// no verdict on the service (State stays Unknown, so a liveness probe
	// never restarts it), reported with the reason.
	probe := desired.Probe{Exec: []string{"/bin/true"}}.Effective(desired.ProbeLiveness)
	p.Set([]Target{{Unit: "x.service", Kind: desired.ProbeLiveness, Probe: probe, Identity: Identity{User: "no-such-user-resil"}}})
	st := waitStatus(t, p, "cannot probe", func(st []Status) bool { return len(st) == 1 && st[0].CannotProbe })
	if st[0].State != Unknown || !strings.Contains(st[0].LastError, "no-such-user-resil") {
		t.Fatalf("status %+v, want Unknown with the reason", st[0])
	}
}

// Permission errors of an attempt (the agent's sandbox refusing the
// connection or the exec) are ErrCannotProbe; other failures are verdicts.
func TestCannotProbe(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("tcp probe: %w", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EPERM)}), true},
		{fmt.Errorf("exec probe: %w", &os.PathError{Op: "fork/exec", Path: "/x", Err: syscall.EACCES}), true},
		{fmt.Errorf("tcp probe: %w", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), false},
		{errors.New("http probe: status 500"), false},
	} {
		if got := errors.Is(cannotProbe(tt.err), ErrCannotProbe); got != tt.want {
			t.Errorf("cannotProbe(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
