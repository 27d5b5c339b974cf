package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

const onceManifest = `apiVersion: resil.dev/v1
kind: Service
metadata: {name: once}
spec:
  command: ["/bin/true"]
  restart: {policy: never}
  wantedBy: []
`

func newRunsReconciler(t *testing.T, dir, state string, f *fakeBackend) *Reconciler {
	log := zaptest.NewLogger(t)
	return New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: f, Applier: f,
		Events: NewRing(100, log), Log: log, RunMemory: true, Safety: Safety{StateDir: state}})
}

// A run-once service systemd unloaded after its run (inactive, no
// history) is not started again, by this agent or the next; a changed
// manifest starts it again; without the memory every pass started it.
func TestRunMemoryUnloadedServiceNotStartedAgain(t *testing.T) {
	for _, memory := range []bool{true, false} {
		t.Run(map[bool]string{true: "memory", false: "none"}[memory], func(t *testing.T) {
			dir, state := t.TempDir(), t.TempDir()
			writeManifest(t, dir, "once.yaml", onceManifest)
			f := newFake()
			r := newRunsReconciler(t, dir, state, f)
			if !memory {
				r.boot = ""
			}
			ctx := context.Background()
			pass := func(r *Reconciler) string {
				t.Helper()
				res, err := r.Reconcile(ctx, Options{})
				if err != nil {
					t.Fatal(err)
				}
				return stepStringsOf(res.Outcomes)
			}
			if got := pass(r); !strings.Contains(got, "start once.service (new unit)") {
				t.Fatalf("first pass: %s", got)
			}
			f.active["once.service"] = false // ran, exited, unloaded: systemd knows no run
			got := pass(r)
			if !memory {
				if !strings.Contains(got, "start once.service") {
					t.Fatalf("without the memory the unloaded unit is started again: %q", got)
				}
				return
			}
			if got != "" {
				t.Fatalf("second pass: %q, want nothing", got)
			}
			if got := pass(newRunsReconciler(t, dir, state, f)); got != "" {
				t.Fatalf("a new agent: %q, want nothing", got)
			}
			writeManifest(t, dir, "once.yaml", strings.Replace(onceManifest, "/bin/true", "/bin/false", 1))
			if got := pass(r); !strings.Contains(got, "start once.service") {
				t.Fatalf("changed manifest: %q, want a start", got)
			}
		})
	}
}

// A record from another boot, or a file not written by the agent, is
// ignored.
func TestRunMemoryFile(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeManifest(t, dir, "once.yaml", onceManifest)
	f := newFake()
	r := newRunsReconciler(t, dir, state, f)
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(state, RunMemoryFileName))
	if err != nil || !strings.Contains(string(b), `"once.service"`) || !strings.Contains(string(b), r.boot) {
		t.Fatalf("run memory after a start: %s, %v", b, err)
	}
	f.active["once.service"] = false
	other := strings.ReplaceAll(string(b), r.boot, "another-boot")
	if err := os.WriteFile(filepath.Join(state, RunMemoryFileName), []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	dry, err := newRunsReconciler(t, dir, state, f).Reconcile(context.Background(), Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := stepStrings(dry.Plan.Steps); !strings.Contains(got, "start once.service") {
		t.Fatalf("a record of another boot: %q, want a start", got)
	}
}

func TestRunCandidates(t *testing.T) {
	svc := func(name, extra string) *desired.Object {
		t.Helper()
		o, err := desired.DecodeObject([]byte("apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: "+name+"}\nspec:\n  command: [\"/bin/true\"]\n"+extra), desired.Source{File: name + ".yaml"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return o
	}
	timer := func(name string) *desired.Object {
		t.Helper()
		o, err := desired.DecodeObject([]byte("apiVersion: resil.dev/v1\nkind: Timer\nmetadata: {name: "+name+"}\nspec:\n  service: "+name+"\n  schedule: [daily]\n"), desired.Source{File: name + "-timer.yaml"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return o
	}
	objs := []*desired.Object{
		svc("enabled", ""),
		svc("static", "  wantedBy: []\n"),
		svc("disabled", "  enabled: false\n"),
		svc("always", "  wantedBy: []\n  restart: {policy: always}\n"),
		svc("stopped", "  wantedBy: []\n  state: stopped\n"),
		svc("never", "  enabled: false\n  restart: {policy: never}\n"),
		svc("job", "  wantedBy: []\n"),
		timer("job"),
	}
	files := map[string][]desired.UnitFile{}
	for _, o := range objs {
		fs, err := desired.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		files[o.ID()] = fs
	}
	got := runCandidates(objs, files)
	var names []string
	for n, c := range got {
		if len(c.files) != 64 || c.never != (n == "never.service") {
			t.Errorf("%s: %+v", n, c)
		}
		names = append(names, n)
	}
	slices.Sort(names)
	if want := "disabled.service never.service static.service"; strings.Join(names, " ") != want {
		t.Fatalf("candidates %v, want %s", names, want)
	}
}

func TestRememberRuns(t *testing.T) {
	const boot, fp = "b1", "h1"
	rec := runRecord{Boot: boot, Files: fp, Start: 100, Exit: 150}
	cand := map[string]runCand{"once.service": {files: fp}}
	never := map[string]runCand{"once.service": {files: fp, never: true}}
	unloadedUnit := func() *observed.Unit {
		return &observed.Unit{Name: "once.service", LoadState: "loaded", ActiveState: "inactive", SubState: "dead", Result: "success"}
	}
	tests := []struct {
		name  string
		unit  func(u *observed.Unit)
		rec   runRecord
		cands map[string]runCand
		want  bool // remembered
	}{
		{"unloaded", nil, rec, cand, true},
		{"started by the agent, not seen running", nil, runRecord{Boot: boot, Files: fp, Start: 100}, cand, true},
		{"seen running, on-failure", nil, runRecord{Boot: boot, Files: fp, Start: 100, Running: true}, cand, false},
		{"seen running, never", nil, runRecord{Boot: boot, Files: fp, Start: 100, Running: true}, never, true},
		{"other boot", nil, runRecord{Boot: "b0", Files: fp, Start: 100}, cand, false},
		{"other files", nil, runRecord{Boot: boot, Files: "h0", Start: 100}, cand, false},
		{"not a candidate", nil, rec, nil, false},
		{"running", func(u *observed.Unit) { u.ActiveState = "active" }, rec, cand, false},
		{"history loaded", func(u *observed.Unit) { u.ExecMainStartTimestamp = 90 }, rec, cand, false},
		{"job queued", func(u *observed.Unit) { u.PendingJob = true }, rec, cand, false},
		{"failed", func(u *observed.Unit) { u.ActiveState = "failed" }, rec, cand, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := unloadedUnit()
			if tt.unit != nil {
				tt.unit(u)
			}
			obs := &observed.State{Units: map[string]*observed.Unit{"once.service": u}}
			before := u.ExecMainStartTimestamp
			got := rememberRuns(obs, tt.cands, map[string]runRecord{"once.service": tt.rec}, boot)
			if u.HistoryRemembered || u.ExecMainStartTimestamp != before {
				t.Fatalf("the observed unit was changed in place")
			}
			gu := got.Units["once.service"]
			if gu.HistoryRemembered != tt.want {
				t.Fatalf("remembered %v, want %v", gu.HistoryRemembered, tt.want)
			}
			if tt.want && (!gu.ExitedOnItsOwn() || gu.ExecMainStartTimestamp != 100 || gu.ExecMainExitTimestamp != max(tt.rec.Exit, 100)) {
				t.Fatalf("remembered run %+v", gu)
			}
			if !tt.want && got != obs {
				t.Fatalf("a state with nothing remembered was copied")
			}
		})
	}
}

func TestRunsAfter(t *testing.T) {
	const boot, fp = "b1", "h1"
	cands := map[string]runCand{"once.service": {files: fp}}
	old := runRecord{Boot: boot, Files: fp, Start: 100}
	step := func(op actuators.Op, err error, skipped string) []StepOutcome {
		return []StepOutcome{{Step: actuators.Step{Op: op, Unit: "once.service"}, Err: err, Skipped: skipped}}
	}
	tests := []struct {
		name string
		unit *observed.Unit
		runs map[string]runRecord
		out  []StepOutcome
		want *runRecord
	}{
		{"started", &observed.Unit{ActiveState: "inactive"}, nil, step(actuators.OpStart, nil, ""), &runRecord{Boot: boot, Files: fp, Start: 500}},
		{"start not queued", &observed.Unit{ActiveState: "inactive"}, map[string]runRecord{"once.service": old}, step(actuators.OpStart, context.Canceled, ""), nil},
		{"start job done, effect not seen", &observed.Unit{ActiveState: "inactive"}, nil,
			[]StepOutcome{{Step: actuators.Step{Op: actuators.OpStart, Unit: "once.service"}, Result: actuators.Changed, Err: fmt.Errorf("start: %w", actuators.ErrNotObserved)}}, &runRecord{Boot: boot, Files: fp, Start: 500}},
		{"start job failed (dependency)", &observed.Unit{ActiveState: "inactive"}, map[string]runRecord{"once.service": old},
			[]StepOutcome{{Step: actuators.Step{Op: actuators.OpStart, Unit: "once.service"}, Result: actuators.Changed, Err: errors.New("job dependency")}}, nil},
		{"start job queued", &observed.Unit{ActiveState: "inactive", PendingJob: true}, map[string]runRecord{"once.service": old}, nil, &old},
		{"start skipped", &observed.Unit{ActiveState: "inactive", HistoryRemembered: true, ExecMainStartTimestamp: 100}, map[string]runRecord{"once.service": old}, step(actuators.OpStart, nil, "held"), &old},
		{"stopped by the pass", &observed.Unit{ActiveState: "active", ExecMainStartTimestamp: 100}, nil, step(actuators.OpStop, nil, ""), nil},
		{"seen running", &observed.Unit{ActiveState: "active", ExecMainStartTimestamp: 120}, map[string]runRecord{"once.service": old}, nil, &runRecord{Boot: boot, Files: fp, Start: 120, Running: true}},
		{"seen running, unloaded since, not remembered", &observed.Unit{ActiveState: "inactive"}, map[string]runRecord{"once.service": {Boot: boot, Files: fp, Start: 120, Running: true}}, nil, nil},
		{"seen exited", &observed.Unit{ActiveState: "inactive", ExecMainStartTimestamp: 120, ExecMainExitTimestamp: 130, ActiveExitTimestamp: 131}, nil, nil,
			&runRecord{Boot: boot, Files: fp, Start: 120, Exit: 130}},
		{"seen stopped", &observed.Unit{ActiveState: "inactive", ExecMainStartTimestamp: 120, ExecMainExitTimestamp: 132, ActiveExitTimestamp: 131}, map[string]runRecord{"once.service": old}, nil, nil},
		{"seen failed", &observed.Unit{ActiveState: "failed", ExecMainStartTimestamp: 120}, map[string]runRecord{"once.service": old}, nil, nil},
		{"remembered", &observed.Unit{ActiveState: "inactive", HistoryRemembered: true, ExecMainStartTimestamp: 100}, map[string]runRecord{"once.service": old}, nil, &old},
		{"activating", &observed.Unit{ActiveState: "activating"}, map[string]runRecord{"once.service": old}, nil, &old},
		{"other files", &observed.Unit{ActiveState: "inactive"}, map[string]runRecord{"once.service": {Boot: boot, Files: "h0", Start: 100}}, nil, nil},
		{"other boot", nil, map[string]runRecord{"once.service": {Boot: "b0", Files: fp, Start: 100}}, nil, nil},
		{"no longer a candidate", nil, map[string]runRecord{"gone.service": old}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := &observed.State{Units: map[string]*observed.Unit{}}
			if tt.unit != nil {
				obs.Units["once.service"] = tt.unit
			}
			got := runsAfter(tt.runs, obs, cands, tt.out, boot, 500)
			rec, ok := got["once.service"]
			switch {
			case tt.want == nil && ok:
				t.Fatalf("record %+v, want none", rec)
			case tt.want != nil && (!ok || rec != *tt.want):
				t.Fatalf("record %+v (%v), want %+v", rec, ok, *tt.want)
			}
			if _, ok := got["gone.service"]; ok {
				t.Fatalf("a record of a unit no longer a candidate stayed")
			}
		})
	}
}

// A run memory the state dir cannot hold is kept in memory: this agent
// does not start the finished run again.
func TestRunMemoryKeptWhenNotPersisted(t *testing.T) {
	dir, parent := t.TempDir(), t.TempDir()
	state := filepath.Join(parent, "state")
	if err := os.WriteFile(state, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "once.yaml", onceManifest)
	f := newFake()
	r := newRunsReconciler(t, dir, state, f)
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	f.active["once.service"] = false
	res, err := r.Reconcile(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := stepStringsOf(res.Outcomes); got != "" {
		t.Fatalf("second pass: %q, want nothing", got)
	}
	// Once the state dir can be written, the next pass writes the file
	// (the memory did not change since).
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(state, RunMemoryFileName)); err != nil || !strings.Contains(string(b), `"once.service"`) {
		t.Fatalf("run memory not written once it could be: %s, %v", b, err)
	}
}
