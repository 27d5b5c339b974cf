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

// ChangeCounter is an Observer that can tell whether what it reads may have
// changed since an earlier moment (observed/systemd: any signal its watch
// delivered, any daemon-reload). ok is false when it cannot tell.
type ChangeCounter interface {
	ChangeSeq() (seq uint64, ok bool)
}

// Ahead is an observation the loop starts when a change wakes it, before
// its settle delay (Loop.Overlap): the pass after the delay uses it when
// the Observer reports no change since it began (ChangeCounter), and
// observes as usual otherwise. A pass woken by an edit then spends its
// first milliseconds loading the manifests only (100 services: a pass
// after an edit observed for 4-5 ms, the critical half of it, in the
// settle delay's idle time instead). The observation is then up to one
// settle delay older than the manifests it is compared with; what systemd
// signals (unit states, jobs, reloads) has not changed since, and files
// on disk that no signal tells of (unit files written by hand) wake no
// pass either: the next pass or resync sees them, as it would have.
type Ahead struct {
	pre *Prefetched
	seq uint64
	cc  ChangeCounter
}

// ObserveAhead starts an Ahead read, or returns nil when the Observer
// cannot tell changes (no ChangeCounter, no watch running). The caller
// owns the read's goroutine: it calls Wait (a pass given it in
// Options.Ahead does not).
func (r *Reconciler) ObserveAhead(ctx context.Context) *Ahead {
	cc, ok := r.cfg.Observer.(ChangeCounter)
	if !ok {
		return nil
	}
	seq, ok := cc.ChangeSeq()
	if !ok {
		return nil
	}
	return &Ahead{pre: StartPrefetch(ctx, r.cfg.Observer), seq: seq, cc: cc}
}

// Wait waits for the read's goroutine (cancelling it if it still runs). A
// nil Ahead is none.
func (a *Ahead) Wait() {
	if a != nil {
		a.pre.Wait()
	}
}

// take returns the read once it is done, if nothing changed since it
// began; nil otherwise, or when ctx (the pass's, with its timeout) ends
// first: the pass then observes under its own deadline.
func (a *Ahead) take(ctx context.Context) *Prefetched {
	if a == nil {
		return nil
	}
	select {
	case <-a.pre.done:
	case <-ctx.Done():
		return nil
	}
	if seq, ok := a.cc.ChangeSeq(); !ok || seq != a.seq {
		return nil
	}
	return a.pre
}
