package reconcile

import (
	"context"
	"sync"

	"resil.dev/resil/observed"
)

// Prefetched is an observation started before the desired names are known
// (StartPrefetch, Options.Prefetched). A one-shot `apply` or `diff` spends
// most of its time in two independent halves: loading, checking and
// rendering the manifests (the agent's CPU) and reading systemd's state
// (PID 1's CPU, one property read after another). The backend observes
// every unit it finds owned in its unit directory whatever the names
// asked (they are the units a prune would remove), so on a host where
// every desired unit has its owned file (a converged host, or one where
// only contents changed) that read does not depend on the names, and it
// can run while the command opens its store and loads the manifests.
//
// A pass uses the read only when it covers every desired unit; otherwise
// (a new unit, a unit taken over from a foreign file) it observes again
// with the desired names, as without the prefetch. Either way the pass
// plans from one observation made after the command began: it may be a
// few milliseconds older than the manifests it is compared with, which no
// pass can avoid (systemd changes while a pass runs too).
type Prefetched struct {
	cancel context.CancelFunc
	done   chan struct{}
	st     *observed.State
	err    error

	mu   sync.Mutex
	used bool
}

// StartPrefetch starts observing every unit o finds owned. The caller owns
// the goroutine: it calls Wait before returning.
func StartPrefetch(ctx context.Context, o Observer) *Prefetched {
	ctx, cancel := context.WithCancel(ctx)
	p := &Prefetched{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.st, p.err = o.Observe(ctx, nil)
	}()
	return p
}

// Wait cancels the read if it still runs (a command that ends before its
// pass observes) and waits for its goroutine. A nil Prefetched is none.
func (p *Prefetched) Wait() {
	if p != nil {
		p.cancel()
		<-p.done
	}
}

// covering returns the prefetched observation when it read without error
// and has every one of names; only the first pass that asks gets it.
func (p *Prefetched) covering(names []string) (*observed.State, bool) {
	if p == nil {
		return nil, false
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used || p.err != nil || p.st == nil {
		return nil, false
	}
	p.used = true
	for _, n := range names {
		if _, ok := p.st.Units[n]; !ok {
			return nil, false
		}
	}
	return p.st, true
}

// observeAgain is the read after a prefetch that did not cover the desired
// units: a full read when the Observer has a cache (the prefetch may have
// filled it), whose differences from the cache are changes since the
// prefetch, not missed signals (no CacheDrift).
func (r *Reconciler) observeAgain(ctx context.Context, names []string) (*observed.State, error) {
	fo, ok := r.cfg.Observer.(FullObserver)
	if !ok {
		return r.cfg.Observer.Observe(ctx, names)
	}
	st, err := fo.ObserveFull(ctx, names)
	if st != nil {
		st.CacheDrift = nil
	}
	return st, err
}
