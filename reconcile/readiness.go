package reconcile

import (
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile/health"
)

// Readiness of a service, as status's READY column and the
// resil_object_ready metric show it.
const (
	ReadyYes     = "yes"
	ReadyNo      = "no"
	ReadyUnknown = "unknown" // its readiness probe has no verdict yet
)

// Readiness says whether a service is ready: desired running, its main
// process active (a notify service only after READY=1, a startup probe
// only once it passed) and, with a readiness probe, that probe passing
// for this very process. "" for other kinds and for a service desired
// stopped. No I/O.
func Readiness(o *desired.Object, obs *observed.State, statuses []health.Status) string {
	if o.Service == nil || o.Service.DesiredState() != desired.StateRunning || obs == nil {
		return ""
	}
	unit := o.Metadata.Name + ".service"
	u := obs.Units[unit]
	if u == nil || u.ActiveState != "active" || u.MainPID == 0 {
		return ReadyNo
	}
	if h := o.Service.Health; h == nil || h.Readiness == nil {
		return ReadyYes
	}
	for _, s := range statuses {
		if s.Unit != unit || s.Kind != desired.ProbeReadiness || s.MainPID != u.MainPID {
			continue
		}
		switch s.State {
		case health.Passing:
			return ReadyYes
		case health.Failing:
			return ReadyNo
		}
	}
	return ReadyUnknown
}
