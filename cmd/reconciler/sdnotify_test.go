package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
)

type fakeNotify struct {
	mu   sync.Mutex
	msgs []string
}

func (f *fakeNotify) notify(s string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, s)
	return true, nil
}

func (f *fakeNotify) pings() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.msgs {
		if strings.Contains(m, "WATCHDOG=1") {
			n++
		}
	}
	return n
}

func TestSDNotifierMessages(t *testing.T) {
	f := &fakeNotify{}
	n := &sdNotifier{log: zaptest.NewLogger(t), notify: f.notify, watchdog: 10 * time.Second}
	res := reconcile.Result{Objects: 3, Plan: reconcile.Plan{Findings: []reconcile.Finding{
		{Reason: reconcile.ReasonStopped, Warning: true}, {Reason: reconcile.ReasonTimerFailed, Warning: true}}}}
	n.afterPass(res, nil)
	n.afterPass(res, nil)
	n.afterPass(reconcile.Result{Objects: 3}, errors.New("observe: connection closed\nmore"))
	want := []string{
		"READY=1\nSTATUS=3 objects, 0 steps, 0 failed, 1 drift, 1 warnings\nWATCHDOG=1",
		"WATCHDOG=1",
		"STATUS=3 objects, 0 steps, 0 failed, 0 drift, 0 warnings; error: observe: connection closed\nWATCHDOG=1",
	}
	if strings.Join(f.msgs, "|") != strings.Join(want, "|") {
		t.Errorf("messages:\n%q\nwant\n%q", f.msgs, want)
	}
	// Without WatchdogSec: READY and STATUS only.
	f2 := &fakeNotify{}
	n2 := &sdNotifier{log: zaptest.NewLogger(t), notify: f2.notify}
	n2.afterPass(res, nil)
	n2.afterPass(res, nil)
	if len(f2.msgs) != 1 || strings.Contains(f2.msgs[0], "WATCHDOG") {
		t.Errorf("without watchdog: %q", f2.msgs)
	}
}

func TestWatchdogResync(t *testing.T) {
	for _, c := range []struct{ wd, resync, want time.Duration }{
		{0, 5 * time.Minute, 5 * time.Minute},
		{2 * time.Minute, 5 * time.Minute, time.Minute},
		{20 * time.Minute, 5 * time.Minute, 5 * time.Minute},
	} {
		n := &sdNotifier{watchdog: c.wd}
		if got := n.watchdogResync(c.resync); got != c.want {
			t.Errorf("watchdog %s resync %s: %s, want %s", c.wd, c.resync, got, c.want)
		}
	}
}

// hangingObserver answers the first n Observe calls, then blocks until ctx ends.
type hangingObserver struct {
	mu    sync.Mutex
	calls int
	n     int
}

func (h *hangingObserver) Observe(ctx context.Context, _ []string) (*observed.State, error) {
	h.mu.Lock()
	h.calls++
	c := h.calls
	h.mu.Unlock()
	if c > h.n {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{}, ReadAt: time.Now()}, nil
}

// The watchdog ping comes from the loop: when a pass hangs, pings stop, so
// systemd's WatchdogSec kills the agent. An idle loop still pings at
// WatchdogSec/2 thanks to the clamped resync.
func TestWatchdogPingStopsWhenLoopHangs(t *testing.T) {
	f := &fakeNotify{}
	n := &sdNotifier{log: zaptest.NewLogger(t), notify: f.notify, watchdog: 40 * time.Millisecond}
	obs := &hangingObserver{n: 5}
	r := reconcile.New(reconcile.Config{Manifests: t.TempDir(), Load: desired.Options{Insecure: true}, Observer: obs, Log: zaptest.NewLogger(t)})
	loop := reconcile.NewLoop(r, zaptest.NewLogger(t))
	loop.Resync = n.watchdogResync(time.Hour)
	loop.PassTimeout = time.Hour
	loop.AfterPass = n.afterPass
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for f.pings() < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if f.pings() != 5 {
		t.Fatalf("idle loop pinged %d times, want 5 (one per pass at WatchdogSec/2)", f.pings())
	}
	time.Sleep(200 * time.Millisecond) // five watchdog intervals with the 6th pass stuck
	if got := f.pings(); got != 5 {
		t.Errorf("pinged %d times while the pass hung, want no more than 5", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
