package reconcile

import (
	"testing"

	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// gaveUpRestarting tells a crash loop systemd 252 stopped at its start
// limit (Result stays the last run's) from a failure no policy restarts.
func TestGaveUpRestarting(t *testing.T) {
	spec := func(policy desired.RestartPolicy, systemd map[string]map[string]string) *desired.ServiceSpec {
		return &desired.ServiceSpec{Restart: &desired.RestartSpec{Policy: policy}, Systemd: systemd}
	}
	for _, tc := range []struct {
		name string
		s    *desired.ServiceSpec
		u    observed.Unit
		want bool
	}{
		{"always, restarted, exit-code", spec(desired.RestartAlways, nil), observed.Unit{Result: "exit-code", NRestarts: 5}, true},
		{"on-failure, restarted, signal", spec(desired.RestartOnFailure, nil), observed.Unit{Result: "signal", NRestarts: 4}, true},
		{"default policy (on-failure)", &desired.ServiceSpec{}, observed.Unit{Result: "core-dump", NRestarts: 6}, true},
		{"never restarts", spec(desired.RestartNever, nil), observed.Unit{Result: "exit-code", NRestarts: 3}, false},
		{"never restarted: the first run failed", spec(desired.RestartAlways, nil), observed.Unit{Result: "exit-code"}, false},
		{"an exit status kept from restarting", spec(desired.RestartAlways, map[string]map[string]string{"Service": {"RestartPreventExitStatus": "3"}}),
			observed.Unit{Result: "exit-code", NRestarts: 3}, false},
		{"spawn failures restart too", spec(desired.RestartOnFailure, nil), observed.Unit{Result: "resources", NRestarts: 4}, true},
		{"fewer restarts than the default burst allows (a stop by hand)", spec(desired.RestartAlways, nil), observed.Unit{Result: "exit-code", NRestarts: 2}, false},
		{"the manifest's burst", &desired.ServiceSpec{Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Limit: &desired.StartLimit{Burst: 2, Interval: "1m"}}},
			observed.Unit{Result: "exit-code", NRestarts: 2}, true},
		{"the limit off", &desired.ServiceSpec{Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Limit: &desired.StartLimit{Burst: 2}}},
			observed.Unit{Result: "exit-code", NRestarts: 9}, false},
		{"Restart= of the systemd section wins", spec(desired.RestartAlways, map[string]map[string]string{"Service": {"Restart": "on-abnormal"}}),
			observed.Unit{Result: "exit-code", NRestarts: 9}, false},
		{"StartLimitBurst= of the systemd section", spec(desired.RestartAlways, map[string]map[string]string{"Unit": {"StartLimitBurst": "10"}}),
			observed.Unit{Result: "exit-code", NRestarts: 5}, false},
		{"no failed result", spec(desired.RestartAlways, nil), observed.Unit{Result: "success", NRestarts: 3}, false},
	} {
		if got := gaveUpRestarting(tc.s, &tc.u); got != tc.want {
			t.Errorf("%s: gaveUpRestarting = %v, want %v", tc.name, got, tc.want)
		}
	}
}
