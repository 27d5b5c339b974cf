package reconcile

import (
	"context"
	"fmt"
	"sort"

	"go.uber.org/zap"

	"resil.dev/resil/observed"
)

// FullObserver is an Observer that may answer Observe from a watch-fed
// cache; ObserveFull reads everything and reports, in State.CacheDrift,
// every unit where the cache was wrong. Declared here, by its consumer.
type FullObserver interface {
	Observer
	ObserveFull(ctx context.Context, names []string) (*observed.State, error)
}

// observe reads the backend's state: a full read when full (the loop's
// resync) and the Observer can tell, with a CacheDrift event per unit the
// cache had wrong; otherwise Observe.
func (r *Reconciler) observe(ctx context.Context, names []string, full bool) (*observed.State, error) {
	fo, ok := r.cfg.Observer.(FullObserver)
	if !full || !ok {
		return r.cfg.Observer.Observe(ctx, names)
	}
	st, err := fo.ObserveFull(ctx, names)
	if err != nil || st == nil {
		return st, err
	}
	units := make([]string, 0, len(st.CacheDrift))
	for u := range st.CacheDrift {
		units = append(units, u)
	}
	sort.Strings(units)
	for _, u := range units {
		msg := fmt.Sprintf("the resync read %s differently from the watch-fed cache (%s); a signal was missed", u, st.CacheDrift[u])
		r.log.Warn("cache drift", zap.String("unit", u), zap.String("diff", st.CacheDrift[u]))
		r.event(Warning, ReasonCacheDrift, "", u, "", msg)
	}
	return st, nil
}
