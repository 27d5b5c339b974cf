package reconcile

import (
	"testing"

	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile/health"
)

func TestReadiness(t *testing.T) {
	probe := &desired.HealthSpec{Readiness: &desired.Probe{TCP: "127.0.0.1:80"}}
	svc := func(h *desired.HealthSpec, state desired.State) *desired.Object {
		return &desired.Object{Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"}, Service: &desired.ServiceSpec{Health: h, State: state}}
	}
	obs := func(active string, pid uint32) *observed.State {
		return &observed.State{Units: map[string]*observed.Unit{"web.service": {Name: "web.service", ActiveState: active, MainPID: pid}}}
	}
	st := func(kind string, pid uint32, s health.State) []health.Status {
		return []health.Status{{Target: health.Target{Unit: "web.service", Kind: kind, MainPID: pid}, State: s}}
	}
	tests := []struct {
		name   string
		o      *desired.Object
		obs    *observed.State
		status []health.Status
		want   string
	}{
		{"active, no probe", svc(nil, ""), obs("active", 7), nil, ReadyYes},
		{"activating (start, READY=1 or startup probe pending)", svc(nil, ""), obs("activating", 7), nil, ReadyNo},
		{"failed", svc(nil, ""), obs("failed", 0), nil, ReadyNo},
		{"absent", svc(nil, ""), &observed.State{}, nil, ReadyNo},
		{"probe passing", svc(probe, ""), obs("active", 7), st(desired.ProbeReadiness, 7, health.Passing), ReadyYes},
		{"probe failing", svc(probe, ""), obs("active", 7), st(desired.ProbeReadiness, 7, health.Failing), ReadyNo},
		{"probe without a verdict", svc(probe, ""), obs("active", 7), st(desired.ProbeReadiness, 7, health.Unknown), ReadyUnknown},
		{"probe of the replaced process", svc(probe, ""), obs("active", 8), st(desired.ProbeReadiness, 7, health.Passing), ReadyUnknown},
		{"a liveness status is no readiness", svc(probe, ""), obs("active", 7), st(desired.ProbeLiveness, 7, health.Passing), ReadyUnknown},
		{"desired stopped", svc(nil, desired.StateStopped), obs("inactive", 0), nil, ""},
		{"a timer", &desired.Object{Kind: desired.KindTimer, Metadata: desired.ObjectMeta{Name: "t"}, Timer: &desired.TimerSpec{}}, obs("active", 0), nil, ""},
		{"nothing observed", svc(nil, ""), nil, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Readiness(tt.o, tt.obs, tt.status); got != tt.want {
				t.Errorf("Readiness = %q, want %q", got, tt.want)
			}
		})
	}
}
