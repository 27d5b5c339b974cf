package main

import (
	"context"
	"runtime/debug"
	"time"

	"resil.dev/resil/reconcile"
)

// memTrim gives back to the kernel the heap a pass grew, once the agent is
// quiet: a pass over 1000 units allocates tens of MB that the collector
// frees, but Go's background scavenger returns freed pages over minutes,
// so an idle agent would hold its peak (20-26 MB of anonymous memory at
// 1000 manifests, against a live heap of 6-9 MB). After quiet with no
// pass (250 ms in run), debug.FreeOSMemory (a collection, then every free
// page returned) and releaseCodePages (the executable's code and read-only
// data pages, ~19 MB touched at start-up, of which an idle agent uses
// ~0.4 MB; codepages_linux.go): a few ms of CPU per burst of passes, none
// while idle.
type memTrim struct {
	quiet  time.Duration
	passed chan struct{}
	free   func() // trimMemory; tests count calls
}

func newMemTrim(quiet time.Duration) *memTrim {
	return &memTrim{quiet: quiet, passed: make(chan struct{}, 1), free: trimMemory}
}

// trimMemory returns the freed heap and drops the code pages' mappings.
func trimMemory() {
	debug.FreeOSMemory()
	_, _ = releaseCodePages() // best effort: an error leaves the pages mapped
}

// afterPass is the loop's after-pass hook: it only notes the pass.
func (m *memTrim) afterPass(reconcile.Result, error) {
	select {
	case m.passed <- struct{}{}:
	default:
	}
}

// run trims once quiet has passed since the last pass, until ctx ends.
func (m *memTrim) run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.passed:
			timer.Reset(m.quiet)
		case <-timer.C:
			m.free()
		}
	}
}
