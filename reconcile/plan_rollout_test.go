package reconcile

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
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
		distrust bool // the rollout record was refused
	}{
		{"all at once without a limit", 0, nil, "a b c d e", 0, false, false},
		{"first wave of 2", 2, nil, "a b", 3, false, false},
		{"one service of the last wave still starting takes a slot", 2, map[string]string{"a": "activating"}, "b", 3, false, false},
		{"the last wave not ready: no wave this pass", 2, map[string]string{"a": "activating", "b": "activating"}, "", 3, false, false},
		{"a failed service of the rollout halts it", 2, map[string]string{"e": "failed"}, "", 4, true, false},
		{"a service failed outside the rollout does not halt it", 2, map[string]string{"e": "failed outside"}, "a b", 2, false, false},
		{"a service not ready outside the rollout holds no slot", 2, map[string]string{"a": "activating outside"}, "b c", 2, false, false},
		// A member that exited by itself under on-failure is done, not
		// unready: it holds no slot (it held one for good).
		{"a member that exited by itself holds no slot", 2, map[string]string{"a": "exited"}, "b c", 2, false, false},
		// The record refused: who the rollout restarted is unknown. Any
		// failed service halts it; none holds a slot by its readiness.
		{"record refused: a failed service halts it", 2, map[string]string{"e": "failed outside"}, "", 4, true, true},
		{"record refused: a service not ready holds no slot", 2, map[string]string{"a": "activating outside"}, "b c", 2, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{Files: map[string][]desired.UnitFile{}, UnitDir: unitDir, MaxParallelRestarts: tt.max,
				Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{}}, Rollout: RolloutInput{Members: map[string]bool{}}}
			if tt.distrust {
				in.Rollout.Distrusted = "rollout.json: refused"
			}
			for _, n := range names {
				o, old := svc(n, "2"), svc(n, "1")
				files, _ := desired.Render(o)
				oldFiles, _ := desired.Render(old)
				in.Objects = append(in.Objects, o)
				in.Files[o.ID()] = files
				active := "active"
				if s := tt.state[n]; s != "" {
					var outside bool
					active, outside = strings.CutSuffix(s, " outside")
					// the previous wave's services are the rollout's members
					in.Rollout.Members[n+".service"] = !outside
				}
				pid := uint32(100)
				if active != "active" {
					// the previous wave: its file is current, it is no candidate
					oldFiles = files
				}
				if active == "failed" {
					pid = 0
				}
				u := &observed.Unit{Name: n + ".service", File: oldFiles[0].Data, Owner: o.ID(), LoadState: "loaded",
					ActiveState: active, SubState: "running", UnitFileState: "enabled", MainPID: pid, ExecMainStartTimestamp: 1}
				if active == "exited" {
					u.ActiveState, u.SubState, u.MainPID, u.ExecMainExitTimestamp, u.ActiveExitTimestamp = "inactive", "dead", 0, 2, 3
				}
				in.Observed.Units[n+".service"] = u
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
			pending, halted, refused := 0, false, false
			for _, f := range plan.Findings {
				switch {
				case f.Reason == ReasonRolloutPending && strings.Contains(f.Message, "rollout record refused"):
					refused = true
				case f.Reason == ReasonRolloutPending:
					pending++
				case f.Reason == ReasonRolloutHalted:
					halted = true
					if !strings.Contains(f.Message, "e.service failed") || !strings.Contains(f.Message, fmt.Sprintf("%d pending", tt.pending)) {
						t.Errorf("halted finding %q", f.Message)
					}
				}
			}
			if refused != tt.distrust {
				t.Errorf("refused-record finding %v, want %v", refused, tt.distrust)
			}
			if pending != tt.pending || halted != tt.halted {
				t.Errorf("pending %d halted %v, want %d %v: %+v", pending, halted, tt.pending, tt.halted, plan.Findings)
			}
		})
	}
}

// With readiness probes, the agent (Input.Health set) counts a service of
// the rollout without a verdict (its process is new, or the agent just
// restarted) as not ready; diff and apply (no probes, Health nil) count an
// active one as ready, so diff shows the wave run would run once the
// probes pass.
func TestPlanRolloutReadinessUnknown(t *testing.T) {
	for _, tt := range []struct {
		name   string
		health []health.Status
		want   int
	}{
		{"no probes run (diff, apply)", nil, 2},
		{"agent, no verdict yet for c of the last wave", []health.Status{}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{Files: map[string][]desired.UnitFile{}, UnitDir: unitDir, MaxParallelRestarts: 2, Health: tt.health,
				Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{}},
				Rollout:  RolloutInput{Members: map[string]bool{"c.service": true}}}
			for _, n := range []string{"a", "b", "c"} {
				mk := func(v string) *desired.Object {
					return &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: n},
						Source: desired.Source{File: n + ".yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/sleep", v},
							Health: &desired.HealthSpec{Readiness: &desired.Probe{TCP: "127.0.0.1:1"}}}}
				}
				o := mk("2")
				files, _ := desired.Render(o)
				old, _ := desired.Render(mk("1"))
				if n == "c" {
					old = files
				}
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
		current  bool   // its file is already the new version: restarted by the rollout
		outside  bool   // current, but not restarted by the rollout
		member   bool   // restarted by the rollout, and its file changed since (a fix)
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
		{"not ready beyond the timeout outside the rollout: no halt, no slot", []svcCase{{name: "a"}, {name: "b"}, {name: "x", probe: true, current: true, outside: true, status: "failing", started: 10 * time.Minute}}, "a b", false},
		// A fix of the service that holds a slot or halts the rollout
		// replaces it at once: held back, it would keep the broken
		// version, and the halt, for good.
		{"a fix of a service not ready beyond the timeout: restarted at once, no halt", []svcCase{{name: "a"}, {name: "b"}, {name: "x", probe: true, member: true, status: "failing", started: 10 * time.Minute}}, "a x", false},
		{"a fix of a service not ready within the timeout: restarted at once, on its own slot", []svcCase{{name: "a"}, {name: "b"}, {name: "x", probe: true, member: true, status: "failing", started: time.Minute}}, "a x", false},
		{"a fix of a not-ready service while another halts: only the fix", []svcCase{{name: "a"}, {name: "w", probe: true, current: true, status: "failing", started: 10 * time.Minute}, {name: "x", probe: true, member: true, status: "failing", started: time.Minute}}, "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{Files: map[string][]desired.UnitFile{}, UnitDir: unitDir, MaxParallelRestarts: 2, Health: []health.Status{},
				Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{}, ReadAt: readAt}, Rollout: RolloutInput{Members: map[string]bool{}}}
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
					in.Rollout.Members[sc.name+".service"] = !sc.outside
				}
				if sc.member {
					in.Rollout.Members[sc.name+".service"] = true
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

// The plan's rollout report: the wave admitted now, the later waves diff
// shows, --min-ready, the jitter gate, and failures let pass by `rollout
// resume` (acknowledged by the hash of the version that failed).
func TestPlanRolloutReport(t *testing.T) {
	now := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	mk := func(n, v string) *desired.Object {
		return &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: n},
			Source: desired.Source{File: n + ".yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/sleep", v}}}
	}
	type svc struct {
		name    string
		state   string        // "" candidate (old version, active); "member": restarted, active; "failed": restarted, failed; "crashed": restarted, active again after crashes; "fixed": failed, and a new version written this pass
		started time.Duration // how long ago its process started (default 1h)
	}
	input := func(svcs []svc, rin RolloutInput) Input {
		in := Input{Files: map[string][]desired.UnitFile{}, UnitDir: unitDir, MaxParallelRestarts: 2, SafetyInput: SafetyInput{Now: now},
			Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{}, ReadAt: now}, Rollout: rin}
		if in.Rollout.Members == nil {
			in.Rollout.Members = map[string]bool{}
		}
		for i, s := range svcs {
			o := mk(s.name, "2")
			files, _ := desired.Render(o)
			old, _ := desired.Render(mk(s.name, "1"))
			active, pid := "active", uint32(100+i)
			if s.state != "" {
				if s.state != "fixed" {
					old = files
				}
				in.Rollout.Members[s.name+".service"] = true
			}
			if s.state == "failed" || s.state == "fixed" {
				active, pid = "failed", 0
			}
			var nRestarts uint32
			if s.state == "crashed" {
				nRestarts = 2
			}
			started := s.started
			if started == 0 {
				started = time.Hour
			}
			in.Objects = append(in.Objects, o)
			in.Files[o.ID()] = files
			in.Observed.Units[s.name+".service"] = &observed.Unit{Name: s.name + ".service", File: old[0].Data, Owner: o.ID(), LoadState: "loaded",
				ActiveState: active, SubState: "running", UnitFileState: "enabled", MainPID: pid, ExecMainStartTimestamp: uint64(now.Add(-started).UnixMicro()),
				NRestarts: nRestarts}
		}
		return in
	}
	cands := []svc{{name: "a"}, {name: "b"}, {name: "c"}, {name: "d"}, {name: "e"}}
	failedHash := func(in Input, unit string) string {
		h, _ := ownmark.HashOf(in.Observed.Units[unit].File)
		return h
	}
	tests := []struct {
		name     string
		svcs     []svc
		rin      RolloutInput
		ack      string // unit whose failure is acknowledged
		admitted string
		waves    string
		notReady string
		halted   bool
		readyAt  time.Duration // from now; 0: none
	}{
		{"waves of 2", cands, RolloutInput{}, "", "a b", "c d|e", "", false, 0},
		{"min-ready: the last wave too young holds its slots", append([]svc{{name: "x", state: "member", started: 5 * time.Second}}, cands...), RolloutInput{MinReady: 30 * time.Second}, "", "a", "b c|d e", "x.service", false, 25 * time.Second},
		{"min-ready passed", append([]svc{{name: "x", state: "member", started: time.Minute}}, cands...), RolloutInput{MinReady: 30 * time.Second}, "", "a b", "c d|e", "", false, 0},
		{"jitter gate ahead: no wave now", cands, RolloutInput{HoldUntil: now.Add(3 * time.Second)}, "", "", "a b|c d|e", "", false, 0},
		{"jitter gate passed", cands, RolloutInput{HoldUntil: now.Add(-time.Second)}, "", "a b", "c d|e", "", false, 0},
		{"a failed member halts", append([]svc{{name: "x", state: "failed"}}, cands...), RolloutInput{}, "", "", "a b|c d|e", "x.service", true, 0},
		{"a failed member acknowledged: passes", append([]svc{{name: "x", state: "failed"}}, cands...), RolloutInput{}, "x.service", "a b", "c d|e", "", false, 0},
		// The last wave: nothing pending, one member failed. Halted (an
		// alert), not "in progress" for good.
		{"a failed member of the last wave halts", []svc{{name: "x", state: "failed"}, {name: "y", state: "member"}}, RolloutInput{}, "", "", "", "x.service", true, 0},
		// A member its policy restarted since the rollout's restart: the new
		// version crashes, though it reads active (and ready) between
		// crashes. It halted only at its start limit, which a long restart
		// delay never reaches, while the other slot kept admitting waves.
		{"a member that crashed since its restart halts", append([]svc{{name: "x", state: "crashed"}}, cands...), RolloutInput{}, "", "", "a b|c d|e", "", true, 0},
		// A fix of a failed member: started at once, holding its slot,
		// halting nothing (the pass that wrote it halted: RolloutHalted).
		{"a failed member's fix", append([]svc{{name: "x", state: "fixed"}}, cands...), RolloutInput{}, "", "a", "b c|d e", "x.service", false, 0},
		{"a crashed member acknowledged: passes", append([]svc{{name: "x", state: "crashed"}}, cands...), RolloutInput{}, "x.service", "a b", "c d|e", "", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := input(tt.svcs, tt.rin)
			if tt.ack != "" {
				in.Rollout.Acks = map[string]string{tt.ack: failedHash(in, tt.ack)}
			}
			plan := Compute(in)
			rep := plan.Rollout
			if rep == nil {
				t.Fatal("no rollout report")
			}
			var waves []string
			for _, w := range rep.Waves {
				waves = append(waves, strings.Join(w, " "))
			}
			trim := func(s string) string { return strings.ReplaceAll(s, ".service", "") }
			if got := trim(strings.Join(rep.Admitted, " ")); got != tt.admitted {
				t.Errorf("admitted %q, want %q", got, tt.admitted)
			}
			if got := trim(strings.Join(waves, "|")); got != tt.waves {
				t.Errorf("waves %q, want %q", got, tt.waves)
			}
			if got := strings.Join(rep.NotReady, " "); tt.notReady != "" && !strings.Contains(got+" "+failedList(rep.Failed), tt.notReady) {
				t.Errorf("not ready %q failed %v, want %s", got, rep.Failed, tt.notReady)
			}
			if rep.Halted != tt.halted {
				t.Errorf("halted %v, want %v", rep.Halted, tt.halted)
			}
			if tt.ack != "" && (len(rep.Acknowledged) != 1 || rep.Acknowledged[0] != tt.ack) {
				t.Errorf("acknowledged %v, want %s", rep.Acknowledged, tt.ack)
			}
			if want := now.Add(tt.readyAt); tt.readyAt != 0 && !rep.ReadyAt.Equal(want) || tt.readyAt == 0 && !rep.ReadyAt.IsZero() {
				t.Errorf("ready at %v, want %v", rep.ReadyAt, tt.readyAt)
			}
			var restarted []string
			for _, s := range plan.Steps {
				if s.Op == actuators.OpRestart {
					restarted = append(restarted, trim(s.Unit))
				}
			}
			if got := strings.Join(restarted, " "); got != tt.admitted {
				t.Errorf("restart steps %q, want the admitted wave %q", got, tt.admitted)
			}
		})
	}
}
