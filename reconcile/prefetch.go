package reconcile

import (
	"context"

	"resil.dev/resil/observed"
)

// prefetched is an observation started before the desired names were
// known (Options.Prefetch). A one-shot `apply` or `diff` spends most of
// its time in two independent halves: loading, checking and rendering
// the manifests (the agent's CPU) and reading systemd's state (PID 1's
// CPU, one property read after another). The backend already observes
// every unit it finds owned in its unit directory whatever the names
// asked (they are the units a prune would remove), so on a host where
// every desired unit has its owned file (a converged host, or one where
// only contents changed) that read does not depend on the names, and
// it runs while the manifests load.
//
// The read is used only when it covers every desired unit; otherwise
// (a new unit, a unit taken over from a foreign file) the pass observes
// again with the desired names, as without the prefetch. Either way the
// pass plans from one observation made after the pass began: the
// observation may be a few milliseconds older than the manifests it is
// compared with, which no pass can avoid (systemd changes while a pass
// runs too).
type prefetched struct {
	cancel context.CancelFunc
	done   chan struct{}
	st     *observed.State
	err    error
}

// prefetch starts the observation when opts ask for it. The goroutine is
// owned by the pass: Reconcile waits for it (wait) before returning.
func (r *Reconciler) prefetch(ctx context.Context, opts Options) *prefetched {
	if !opts.Prefetch || opts.Full {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &prefetched{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.st, p.err = r.cfg.Observer.Observe(ctx, nil)
	}()
	return p
}

// wait cancels the prefetch if it still runs (a pass that returns before
// it observes) and waits for its goroutine (nil: none).
func (p *prefetched) wait() {
	if p != nil {
		p.cancel()
		<-p.done
	}
}

// covering returns the prefetched observation when it read without error
// and has every one of names.
func (p *prefetched) covering(names []string) (*observed.State, bool) {
	if p == nil {
		return nil, false
	}
	<-p.done
	if p.err != nil || p.st == nil {
		return nil, false
	}
	for _, n := range names {
		if _, ok := p.st.Units[n]; !ok {
			return nil, false
		}
	}
	return p.st, true
}
