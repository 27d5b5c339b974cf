package reconcile

import (
	"resil.dev/resil/desired"
)

// LoadAhead is a load of the manifests started when the loop is woken,
// before its settle delay (Loop.Settle, 100 ms by default): the pass after
// the delay uses it instead of loading again when no manifest event came
// since it began (Config.ManifestSeq unchanged). A load is the agent's
// work on its own files (1.5 ms at 100 manifests, ~10 ms at 1000, every
// file opened, checked and leased even when cached), and an edit's pass
// otherwise starts with it, before the unit file it writes.
//
// Level-triggered as before: it is a full load, only taken up to one
// settle delay earlier, and every manifest event meanwhile (a write, even
// one whose writer has not closed the file yet; the close that lets the
// watch wake the loop; a rename, a chmod, a symlink swap, a watch error, a
// git revision deployed) moves the sequence, and the pass loads again.
// What the watch cannot see (desired.Watch) wakes nothing either way: the
// next wake-up or resync reads it, as before.
type LoadAhead struct {
	seq  uint64
	done chan struct{}
	set  *desired.Set
	err  error
}

// StartLoadAhead starts a LoadAhead, or returns nil when there is no
// manifest event count (Config.ManifestSeq). The caller owns its goroutine:
// it calls Wait (a pass given it in Options.LoadAhead does not).
func (r *Reconciler) StartLoadAhead() *LoadAhead {
	if r.cfg.ManifestSeq == nil {
		return nil
	}
	la := &LoadAhead{seq: r.cfg.ManifestSeq(), done: make(chan struct{})}
	go func() {
		defer close(la.done)
		la.set, la.err = desired.Load(r.cfg.Manifests, r.cfg.Load)
	}()
	return la
}

// restartLoadAhead returns la when no manifest event came since it began,
// else a new LoadAhead, la waited for first.
func (r *Reconciler) restartLoadAhead(la *LoadAhead) *LoadAhead {
	if la == nil || r.cfg.ManifestSeq == nil || r.cfg.ManifestSeq() == la.seq {
		return la
	}
	la.Wait()
	return r.StartLoadAhead()
}

// Wait waits for the load's goroutine. A nil LoadAhead is none.
func (la *LoadAhead) Wait() {
	if la != nil {
		<-la.done
	}
}

// load is desired.Load, or the LoadAhead's result when nothing changed
// since it began. It waits for the load ahead either way: two loads must
// not run at once (they share the file cache).
func (r *Reconciler) load(la *LoadAhead) (*desired.Set, error) {
	if la != nil && r.cfg.ManifestSeq != nil {
		<-la.done
		if r.cfg.ManifestSeq() == la.seq {
			r.loadsAhead++
			return la.set, la.err
		}
	}
	return desired.Load(r.cfg.Manifests, r.cfg.Load)
}
