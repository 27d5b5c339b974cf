package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"resil.dev/resil/reconcile"
)

// A burst of passes trims once, after the quiet period that follows
// them; no pass, no trim.
func TestMemTrimOncePerBurst(t *testing.T) {
	m := newMemTrim(50 * time.Millisecond)
	var n atomic.Int32
	freed := make(chan struct{}, 10)
	m.free = func() { n.Add(1); freed <- struct{}{} }
	for range 5 { // a burst: the hook never blocks the loop
		m.afterPass(reconcile.Result{}, nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.run(ctx) }()
	<-freed
	time.Sleep(150 * time.Millisecond) // no pass since: no second trim
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 1 {
		t.Errorf("%d trims for one burst, want 1", got)
	}
}
