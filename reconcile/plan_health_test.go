package reconcile

import (
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile/health"
)

func TestPlanLiveness(t *testing.T) {
	const unit = "web.service"
	obj := func(action desired.ProbeAction) *desired.Object {
		return &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"},
			Source: desired.Source{File: "web.yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/sleep", "1000"},
				Health: &desired.HealthSpec{Liveness: &desired.Probe{TCP: "127.0.0.1:80", Action: action}}}}
	}
	failing := health.Status{Target: health.Target{Unit: unit, Kind: desired.ProbeLiveness, MainPID: 42}, State: health.Failing, Failures: 3, LastError: "tcp probe: connection refused"}
	tests := []struct {
		name        string
		action      desired.ProbeAction
		active      string
		pid         uint32
		status      []health.Status
		wantStep    string // the runtime step planned ("" none)
		wantFinding string // substring of the Unhealthy finding ("" none)
	}{
		{"failing: restart", "", "active", 42, []health.Status{failing},
			"restart web.service (liveness probe failed 3 times: tcp probe: connection refused)", "web.service failed its liveness probe 3 times in a row: tcp probe: connection refused; restarting"},
		{"failing: report only", desired.ProbeReport, "active", 42, []health.Status{failing}, "", "; action report: left running"},
		{"failing longer: the wording stays", desired.ProbeReport, "active", 42, []health.Status{{Target: failing.Target, State: health.Failing, Failures: 7, LastError: failing.LastError}}, "",
			"failed its liveness probe 3 times in a row: tcp probe: connection refused; action report"},
		{"status of the replaced process", "", "active", 43, []health.Status{failing}, "", ""},
		{"passing", "", "active", 42, []health.Status{{Target: failing.Target, State: health.Passing}}, "", ""},
		{"unknown (failures below the threshold)", "", "active", 42, []health.Status{{Target: failing.Target, State: health.Unknown, Failures: 2}}, "", ""},
		{"readiness failing restarts nothing", "", "active", 42, []health.Status{{Target: health.Target{Unit: unit, Kind: desired.ProbeReadiness, MainPID: 42}, State: health.Failing}}, "", ""},
		{"still starting", "", "activating", 42, []health.Status{failing}, "", ""},
		{"no statuses", "", "active", 42, nil, "", ""},
		{"cannot probe: reported, not restarted", "", "active", 42, []health.Status{{Target: failing.Target, State: health.Unknown, CannotProbe: true, LastError: "the agent cannot run this probe: tcp probe: connect: operation not permitted"}}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := obj(tt.action)
			files, err := desired.Render(o)
			if err != nil {
				t.Fatal(err)
			}
			in := Input{Objects: []*desired.Object{o}, Files: map[string][]desired.UnitFile{o.ID(): files}, UnitDir: unitDir,
				Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{unit: {
					Name: unit, File: files[0].Data, Owner: o.ID(), LoadState: "loaded", ActiveState: tt.active, SubState: "running",
					UnitFileState: "enabled", MainPID: tt.pid, ExecMainStartTimestamp: 1}}},
				Health: tt.status}
			plan := Compute(in)
			var steps []string
			for _, s := range plan.Steps {
				steps = append(steps, s.String())
				if s.Op == actuators.OpRestart && !IsLivenessRestart(s) {
					t.Errorf("restart step %s is not a liveness restart", s)
				}
			}
			if got := strings.Join(steps, "\n"); got != tt.wantStep {
				t.Errorf("steps:\n%s\nwant:\n%s", got, tt.wantStep)
			}
			var found []string
			probeErr := false
			for _, f := range plan.Findings {
				probeErr = probeErr || f.Reason == ReasonProbeError && strings.Contains(f.Message, "operation not permitted")
				if f.Reason == ReasonUnhealthy {
					found = append(found, f.Message)
					if f.Enforced != (tt.wantStep != "") || !f.Warning {
						t.Errorf("finding %+v: enforced must say whether a restart is planned", f)
					}
				}
			}
			if wantErr := len(tt.status) > 0 && tt.status[0].CannotProbe; probeErr != wantErr {
				t.Errorf("ProbeError finding %v, want %v: %+v", probeErr, wantErr, plan.Findings)
			}
			if tt.wantFinding == "" && len(found) > 0 || tt.wantFinding != "" && (len(found) != 1 || !strings.Contains(found[0], tt.wantFinding)) {
				t.Errorf("Unhealthy findings %q, want one with %q", found, tt.wantFinding)
			}
		})
	}
	if ReasonUnhealthy.Category() != CategoryFailure {
		t.Errorf("Unhealthy is %s, want failure", ReasonUnhealthy.Category())
	}
}
