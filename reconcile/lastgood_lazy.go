package reconcile

import (
	"go.uber.org/zap"

	"resil.dev/resil/desired"
)

// loadLastGood loads Config.LastGood into r.lastGood on the first pass,
// and only when that pass's load needs it: nothing readable, or a file or
// drop-in broken, busy or empty (their objects keep their persisted last
// good version). A first pass that loads cleanly replaces the last good
// objects with what it loaded, so it never reads them: decoding 1000
// persisted objects costs as much as loading the manifests again. Later
// passes keep their own memory and never load. An object with drift:
// report needs them too: what its manifest changed of state or enabled
// since then is applied, not reported as drift (Input.StateChanged).
func (r *Reconciler) loadLastGood(set *desired.Set) {
	if !r.lastGoodPending {
		return
	}
	r.lastGoodPending = false
	if set != nil && len(set.Broken) == 0 && len(set.Busy) == 0 && len(set.Empty) == 0 && len(set.BrokenNames) == 0 && !anyReport(set) {
		return
	}
	objs, err := r.cfg.LastGood.Load()
	if err != nil {
		r.log.Warn("persisted last good objects ignored", zap.Error(err))
	}
	for id, o := range objs {
		r.lastGood[id] = o
	}
	if len(objs) > 0 {
		r.log.Info("persisted last good objects loaded", zap.Int("objects", len(objs)))
	}
}

func anyReport(set *desired.Set) bool {
	for _, o := range set.Objects {
		if o.DriftPolicy() == desired.DriftReport {
			return true
		}
	}
	return false
}
