package reconcile

import (
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// A service whose process exited by itself with status 0 is done when its
// restart policy does not restart a clean exit (never, on-failure): the
// agent leaves it inactive (Exited, not drift). Stopped out of band (the
// unit left the active state before the process exited), killed by a
// signal, or under policy always, it is started again.
func TestPlanExitedOnItsOwn(t *testing.T) {
	const start, exit = 1_000_000, 2_000_000
	tests := []struct {
		name       string
		policy     desired.RestartPolicy
		status     int32
		activeExit uint64
		wantStart  bool
	}{
		{"never, exited 0", desired.RestartNever, 0, exit + 50, false},
		{"on-failure, exited 0", desired.RestartOnFailure, 0, exit + 50, false},
		{"default policy, exited 0", "", 0, exit + 50, false},
		{"always, exited 0 and not restarted", desired.RestartAlways, 0, exit + 50, true},
		{"never, stopped out of band", desired.RestartNever, 0, exit - 500, true},
		{"on-failure, killed by SIGTERM", desired.RestartOnFailure, 15, exit + 50, true},
		// The process exited before the unit became active (a busy PID 1
		// handled its exit before its exec): no active exit in this run.
		{"never, exited before the unit became active", desired.RestartNever, 0, 0, false},
		{"never, exited before active, an earlier run's active exit", desired.RestartNever, 0, start - 500, false},
		{"never, killed before active", desired.RestartNever, 9, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "job"},
				Source: desired.Source{File: "job.yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/true"}}}
			if tt.policy != "" {
				o.Service.Restart = &desired.RestartSpec{Policy: tt.policy}
			}
			files, err := desired.Render(o)
			if err != nil {
				t.Fatal(err)
			}
			u := &observed.Unit{Name: "job.service", File: files[0].Data, Owner: o.ID(), LoadState: "loaded", ActiveState: "inactive", SubState: "dead",
				UnitFileState: "enabled", Result: "success", ExecMainStatus: tt.status, ExecMainStartTimestamp: start, ExecMainExitTimestamp: exit,
				ActiveExitTimestamp: tt.activeExit}
			plan := Compute(Input{Objects: []*desired.Object{o}, Files: map[string][]desired.UnitFile{o.ID(): files}, UnitDir: unitDir,
				Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{"job.service": u}}})
			started, exited, stopped := false, false, false
			for _, s := range plan.Steps {
				started = started || s.Op == actuators.OpStart
			}
			for _, f := range plan.Findings {
				exited = exited || f.Reason == ReasonExited && !f.Warning
				stopped = stopped || f.Reason == ReasonStopped
			}
			if started != tt.wantStart || exited == tt.wantStart || stopped != tt.wantStart {
				t.Errorf("start %v, Exited %v, StoppedOutOfBand %v; want start %v: %v %+v", started, exited, stopped, tt.wantStart, plan.Steps, plan.Findings)
			}
		})
	}
}

// A run that exited by itself from older files than the ones on disk
// (observed.Unit.StaleRun: an agent killed between writing a run-once
// service's file and starting it) is not done: the planner starts it, under
// drift: report too, as the pass that wrote the file would have.
func TestPlanStaleRunStarted(t *testing.T) {
	const start, exit = 1_000_000, 2_000_000
	for _, tt := range []struct {
		name   string
		policy desired.RestartPolicy
		drift  desired.DriftPolicy
		stale  bool
		want   bool
	}{
		{"never, stale", desired.RestartNever, "", true, true},
		{"on-failure, stale, drift report", desired.RestartOnFailure, desired.DriftReport, true, true},
		{"never, not stale", desired.RestartNever, "", false, false},
		{"on-failure, not stale, drift report", desired.RestartOnFailure, desired.DriftReport, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "job"},
				Source: desired.Source{File: "job.yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/true"}, Restart: &desired.RestartSpec{Policy: tt.policy}}}
			if tt.drift != "" {
				o.Service.Drift = tt.drift
			}
			files, err := desired.Render(o)
			if err != nil {
				t.Fatal(err)
			}
			u := &observed.Unit{Name: "job.service", File: files[0].Data, Owner: o.ID(), LoadState: "loaded", ActiveState: "inactive", SubState: "dead",
				UnitFileState: "enabled", Result: "success", ExecMainStartTimestamp: start, ExecMainExitTimestamp: exit, ActiveExitTimestamp: exit + 50,
				StaleRun: tt.stale}
			plan := Compute(Input{Objects: []*desired.Object{o}, Files: map[string][]desired.UnitFile{o.ID(): files}, UnitDir: unitDir,
				Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{"job.service": u}}})
			started, stale := false, false
			for _, s := range plan.Steps {
				started = started || s.Op == actuators.OpStart && s.Unit == "job.service"
			}
			for _, f := range plan.Findings {
				stale = stale || f.Reason == ReasonStaleProcess && strings.Contains(f.Message, "whose start was lost")
			}
			if started != tt.want || stale != tt.want {
				t.Errorf("start %v, StaleProcess finding %v, want %v: %v %+v", started, stale, tt.want, plan.Steps, plan.Findings)
			}
		})
	}
}

// A failed service's finding names its run (the exit time): the same
// failure seen by later passes is one event, a new failure (after a reset
// or a start by hand that failed at once) another.
func TestPlanFailedFindingNamesTheRun(t *testing.T) {
	o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"},
		Source: desired.Source{File: "web.yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/false"}}}
	files, err := desired.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(exit uint64) string {
		u := &observed.Unit{Name: "web.service", File: files[0].Data, Owner: o.ID(), LoadState: "loaded", ActiveState: "failed", SubState: "failed",
			UnitFileState: "enabled", Result: "exit-code", ExecMainStatus: 1, ExecMainStartTimestamp: exit - 100, ExecMainExitTimestamp: exit}
		plan := Compute(Input{Objects: []*desired.Object{o}, Files: map[string][]desired.UnitFile{o.ID(): files}, UnitDir: unitDir,
			Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{"web.service": u}}})
		for _, f := range plan.Findings {
			if f.Reason == ReasonFailed {
				return f.Message
			}
		}
		t.Fatalf("no Failed finding: %+v", plan.Findings)
		return ""
	}
	a, b := msg(1_000_000_000), msg(2_000_000_000)
	if a == b || !strings.Contains(a, "last run exited at 1970-01-01T00:16:40.000Z") {
		t.Errorf("two runs' failures: %q, %q", a, b)
	}
}

// A run that ended before the unit became active is done only where
// activating is the exec window alone: not for a notify service (a stop
// before READY=1) or one with a startup probe (a stop while it runs).
func TestDoneBeforeActiveOnlyWhenActiveOnExec(t *testing.T) {
	u := &observed.Unit{ActiveState: "inactive", ExecMainStartTimestamp: 1_000_000, ExecMainExitTimestamp: 1_000_500}
	for _, tt := range []struct {
		name string
		spec desired.ServiceSpec
		want bool
	}{
		{"exec", desired.ServiceSpec{}, true},
		{"passthrough Type=simple", desired.ServiceSpec{Systemd: map[string]map[string]string{"Service": {"Type": "simple"}}}, true},
		{"notify (watchdog)", desired.ServiceSpec{Watchdog: &desired.ServiceWatchdog{}}, false},
		{"startup probe", desired.ServiceSpec{Health: &desired.HealthSpec{Startup: &desired.Probe{}}}, false},
		{"passthrough Type=forking", desired.ServiceSpec{Systemd: map[string]map[string]string{"Service": {"Type": "forking"}}}, false},
		{"passthrough ExecStartPost", desired.ServiceSpec{Systemd: map[string]map[string]string{"Service": {"ExecStartPost": "/bin/true"}}}, false},
	} {
		if got := done(u, &tt.spec); got != tt.want {
			t.Errorf("%s: done %v, want %v", tt.name, got, tt.want)
		}
	}
}
