package reconcile

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile/health"
)

func TestPlanRolloutWaves(t *testing.T) {
	svc := func(name, version string) *desired.Object {
		return &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: name},
			Source: desired.Source{File: name + ".yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/sleep", version}}}
	}
	names := []string{"a", "b", "c", "d", "e"}
	tests := []struct {
		name     string
		max      int
		state    map[string]string // active state by name (default active)
		restarts string            // units restarted, in order
		pending  int
		halted   bool
	}{
		{"all at once without a limit", 0, nil, "a b c d e", 0, false},
		{"first wave of 2", 2, nil, "a b", 3, false},
		{"one service of the last wave still starting takes a slot", 2, map[string]string{"a": "activating"}, "b", 3, false},
		{"the last wave not ready: no wave this pass", 2, map[string]string{"a": "activating", "b": "activating"}, "", 3, false},
		{"a failed service halts the rollout", 2, map[string]string{"e": "failed"}, "", 4, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{Files: map[string][]desired.UnitFile{}, UnitDir: unitDir, MaxParallelRestarts: tt.max,
				Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{}}}
			for _, n := range names {
				o, old := svc(n, "2"), svc(n, "1")
				files, _ := desired.Render(o)
				oldFiles, _ := desired.Render(old)
				in.Objects = append(in.Objects, o)
				in.Files[o.ID()] = files
				active := "active"
				if s := tt.state[n]; s != "" {
					active = s
				}
				pid := uint32(100)
				if active != "active" {
					// the previous wave: its file is current, it is no candidate
					oldFiles = files
				}
				if active == "failed" {
					pid = 0
				}
				in.Observed.Units[n+".service"] = &observed.Unit{Name: n + ".service", File: oldFiles[0].Data, Owner: o.ID(), LoadState: "loaded",
					ActiveState: active, SubState: "running", UnitFileState: "enabled", MainPID: pid, ExecMainStartTimestamp: 1}
			}
			plan := Compute(in)
			var restarted, written []string
			for _, s := range plan.Steps {
				switch s.Op {
				case actuators.OpRestart:
					restarted = append(restarted, strings.TrimSuffix(s.Unit, ".service"))
				case actuators.OpWriteFile:
					written = append(written, strings.TrimSuffix(s.Unit, ".service"))
				}
			}
			if got := strings.Join(restarted, " "); got != tt.restarts {
				t.Errorf("restarted %q, want %q", got, tt.restarts)
			}
			if got, want := strings.Join(written, " "), tt.restarts; got != want {
				t.Errorf("written %q, want only the wave's files %q", got, want)
			}
			pending, halted := 0, false
			for _, f := range plan.Findings {
				switch f.Reason {
				case ReasonRolloutPending:
					pending++
				case ReasonRolloutHalted:
					halted = true
					if !strings.Contains(f.Message, "e.service failed") || !strings.Contains(f.Message, fmt.Sprintf("%d pending", tt.pending)) {
						t.Errorf("halted finding %q", f.Message)
					}
				}
			}
			if pending != tt.pending || halted != tt.halted {
				t.Errorf("pending %d halted %v, want %d %v: %+v", pending, halted, tt.pending, tt.halted, plan.Findings)
			}
		})
	}
}

// With readiness probes, the agent (Input.Health set) counts a service
// without a verdict as not ready; diff and apply (no probes, Health nil)
// count an active one as ready, so diff shows the wave run would run
// once the probes pass.
func TestPlanRolloutReadinessUnknown(t *testing.T) {
	for _, tt := range []struct {
		name   string
		health []health.Status
		want   int
	}{
		{"no probes run (diff, apply)", nil, 2},
		{"agent, no verdict yet", []health.Status{}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{Files: map[string][]desired.UnitFile{}, UnitDir: unitDir, MaxParallelRestarts: 2, Health: tt.health,
				Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{}}}
			for _, n := range []string{"a", "b", "c"} {
				mk := func(v string) *desired.Object {
					return &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: n},
						Source: desired.Source{File: n + ".yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/sleep", v},
							Health: &desired.HealthSpec{Readiness: &desired.Probe{TCP: "127.0.0.1:1"}}}}
				}
				o := mk("2")
				files, _ := desired.Render(o)
				old, _ := desired.Render(mk("1"))
				in.Objects = append(in.Objects, o)
				in.Files[o.ID()] = files
				in.Observed.Units[n+".service"] = &observed.Unit{Name: n + ".service", File: old[0].Data, Owner: o.ID(), LoadState: "loaded",
					ActiveState: "active", SubState: "running", UnitFileState: "enabled", MainPID: 100, ExecMainStartTimestamp: 1}
			}
			got := 0
			for _, s := range Compute(in).Steps {
				if s.Op == actuators.OpRestart {
					got++
				}
			}
			if got != tt.want {
				t.Errorf("%d restarts, want %d", got, tt.want)
			}
		})
	}
}

// Services another candidate requires are restarted first; a service
// active but not ready longer than the ready timeout halts the rollout.
func TestPlanRolloutOrderAndReadyTimeout(t *testing.T) {
	readAt := time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)
	type svcCase struct {
		name     string
		requires []string
		probe    bool
		current  bool   // its file is already the new version
		status   string // readiness probe state of its process
		started  time.Duration
	}
	tests := []struct {
		name     string
		svcs     []svcCase
		restarts string
		halted   bool
	}{
		{"required first", []svcCase{{name: "a", requires: []string{"c.service"}}, {name: "b", requires: []string{"c.service"}}, {name: "c"}}, "c", false},
		{"chain", []svcCase{{name: "a", requires: []string{"b.service"}}, {name: "b", requires: []string{"c.service"}}, {name: "c"}, {name: "d"}}, "c d", false},
		{"not ready, within the timeout: holds a slot", []svcCase{{name: "a"}, {name: "b"}, {name: "x", probe: true, current: true, status: "failing", started: time.Minute}}, "a", false},
		{"not ready beyond the timeout: halts", []svcCase{{name: "a"}, {name: "b"}, {name: "x", probe: true, current: true, status: "failing", started: 10 * time.Minute}}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{Files: map[string][]desired.UnitFile{}, UnitDir: unitDir, MaxParallelRestarts: 2, Health: []health.Status{},
				Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{}, ReadAt: readAt}}
			for i, sc := range tt.svcs {
				mk := func(v string) *desired.Object {
					o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: sc.name},
						Source: desired.Source{File: sc.name + ".yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/sleep", v}, Requires: sc.requires}}
					if sc.probe {
						o.Service.Health = &desired.HealthSpec{Readiness: &desired.Probe{TCP: "127.0.0.1:1"}}
					}
					return o
				}
				o := mk("2")
				files, _ := desired.Render(o)
				old, _ := desired.Render(mk("1"))
				if sc.current {
					old = files
				}
				pid := uint32(100 + i)
				in.Objects = append(in.Objects, o)
				in.Files[o.ID()] = files
				in.Observed.Units[sc.name+".service"] = &observed.Unit{Name: sc.name + ".service", File: old[0].Data, Owner: o.ID(), LoadState: "loaded",
					ActiveState: "active", SubState: "running", UnitFileState: "enabled", MainPID: pid, ExecMainStartTimestamp: uint64(readAt.Add(-max(sc.started, time.Second)).UnixMicro())}
				if sc.status != "" {
					in.Health = append(in.Health, health.Status{Target: health.Target{Unit: sc.name + ".service", Kind: desired.ProbeReadiness, MainPID: pid}, State: health.State(sc.status)})
				} else if sc.probe {
					t.Fatal("a probe needs a status here")
				}
			}
			plan := Compute(in)
			var restarted []string
			halted := false
			for _, s := range plan.Steps {
				if s.Op == actuators.OpRestart {
					restarted = append(restarted, strings.TrimSuffix(s.Unit, ".service"))
				}
			}
			for _, f := range plan.Findings {
				halted = halted || f.Reason == ReasonRolloutHalted && strings.Contains(f.Message, "x.service (not ready within 5m0s)")
			}
			if got := strings.Join(restarted, " "); got != tt.restarts || halted != tt.halted {
				t.Errorf("restarted %q halted %v, want %q %v; findings %+v", got, halted, tt.restarts, tt.halted, plan.Findings)
			}
		})
	}
}

func TestAdmissibleCycle(t *testing.T) {
	mk := func(n string, req ...string) *desired.Object {
		return &desired.Object{Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: n}, Service: &desired.ServiceSpec{Requires: req}}
	}
	got := admissible([]*desired.Object{mk("b", "a.service"), mk("a", "b.service"), mk("c", "a.service")})
	var names []string
	for _, o := range got {
		names = append(names, o.Metadata.Name)
	}
	if strings.Join(names, " ") != "a b" {
		t.Errorf("admissible in a cycle: %v, want a b", names)
	}
}
