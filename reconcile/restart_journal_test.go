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
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// journalApplier records, at each unit file write, whether the restart
// journal on disk names the unit.
type journalApplier struct {
	*fakeBackend
	stateDir string
	atWrite  map[string]bool
}

func (j *journalApplier) Apply(ctx context.Context, s actuators.Step) (actuators.Result, error) {
	if s.Op == actuators.OpWriteFile {
		b, _ := os.ReadFile(filepath.Join(j.stateDir, RestartJournalFileName))
		j.atWrite[s.Unit] = strings.Contains(string(b), `"`+s.Unit+`"`)
	}
	return j.fakeBackend.Apply(ctx, s)
}

func newJournalReconciler(t *testing.T, dir, state string, f *fakeBackend, app Applier) *Reconciler {
	log := zaptest.NewLogger(t)
	return New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: f, Applier: app,
		Events: NewRing(100, log), Log: log, RestartJournal: true, Safety: Safety{StateDir: state}})
}

// A restart the pass owes survives the agent: the journal names the
// service before its file is written, a new agent that finds the file
// already matching restarts it, and the record goes once it did.
func TestRestartJournalSurvivesTheAgent(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	app := &journalApplier{fakeBackend: f, stateDir: state, atWrite: map[string]bool{}}
	r := newJournalReconciler(t, dir, state, f, app)
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	// A new unit is journaled before its file is written (its start owed
	// until made), and the record goes with the start.
	if !app.atWrite["web.service"] {
		t.Fatal("a new unit was not journaled before its write")
	}
	if j := r.journal; len(j) != 0 {
		t.Fatalf("journal after the start: %v", j)
	}
	pid := f.pid["web.service"]

	// The command changes; the restart is lost (the agent "dies" there).
	writeManifest(t, dir, "web.yaml", strings.Replace(webManifest, "infinity", "1000", 1))
	f.failOn["restart web.service"] = errors.New("killed")
	if _, err := r.Reconcile(context.Background(), Options{}); err == nil {
		t.Fatal("want the failed restart")
	}
	if !app.atWrite["web.service"] {
		t.Fatal("web.service's file was written before the journal named it")
	}
	if f.pid["web.service"] != pid {
		t.Fatal("restarted")
	}
	delete(f.failOn, "restart web.service")

	// A new agent: the file matches the manifest, the process is old.
	r2 := newJournalReconciler(t, dir, state, f, f)
	dry, err := r2.Reconcile(context.Background(), Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := stepStrings(dry.Plan.Steps); got != "restart web.service (restart owed by an interrupted pass)" {
		t.Fatalf("plan = %q", got)
	}
	if !slices.ContainsFunc(dry.Plan.Findings, func(f Finding) bool { return f.Reason == ReasonStaleProcess && f.Unit == "web.service" }) {
		t.Fatalf("no StaleProcess finding: %+v", dry.Plan.Findings)
	}
	if _, err := r2.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if f.pid["web.service"] == pid {
		t.Fatal("not restarted")
	}
	// Settled: no more restarts, from this agent or the next.
	for _, rr := range []*Reconciler{r2, newJournalReconciler(t, dir, state, f, f)} {
		res, err := rr.Reconcile(context.Background(), Options{DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Plan.Steps) != 0 {
			t.Fatalf("plan after the restart = %q", stepStrings(res.Plan.Steps))
		}
	}
}

// A reload-only change journals nothing: no restart is owed.
func TestRestartJournalReloadOnlyChange(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	withDelay := func(d string) string { return webManifest + "  restart: {policy: always, delay: " + d + "}\n" }
	writeManifest(t, dir, "web.yaml", withDelay("5s"))
	f := newFake()
	app := &journalApplier{fakeBackend: f, stateDir: state, atWrite: map[string]bool{}}
	r := newJournalReconciler(t, dir, state, f, app)
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "web.yaml", withDelay("1s"))
	res, err := r.Reconcile(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(res.Plan.Steps, func(s actuators.Step) bool { return s.Op == actuators.OpWriteFile }) {
		t.Fatalf("no write: %q", stepStrings(res.Plan.Steps))
	}
	if app.atWrite["web.service"] {
		t.Fatalf("journaled a reload-only change: %q", stepStrings(res.Plan.Steps))
	}
}

func TestJournalAfter(t *testing.T) {
	at := time.Unix(1, 0)
	const load = 5_000_000 // systemd's last unit load, µs
	unit := func(active string, reload bool, started uint64) *observed.Unit {
		return &observed.Unit{ActiveState: active, LoadState: "loaded", NeedDaemonReload: reload, ExecMainStartTimestamp: started}
	}
	ok := func(op actuators.Op, unit string) StepOutcome {
		return StepOutcome{Step: actuators.Step{Op: op, Unit: unit}}
	}
	failed := func(op actuators.Op, unit string) StepOutcome {
		oc := ok(op, unit)
		oc.Err = errors.New("boom")
		return oc
	}
	old, fresh := uint64(load-1), uint64(load+1) // started before / after the last load
	for _, tc := range []struct {
		name   string
		u      *observed.Unit
		load   uint64
		intent bool // the pass's own intent
		out    []StepOutcome
		keep   bool
	}{
		{name: "restarted", u: unit("active", false, old), out: []StepOutcome{ok(actuators.OpRestart, "a")}},
		{name: "restart failed", u: unit("active", false, old), out: []StepOutcome{failed(actuators.OpRestart, "a")}, keep: true},
		{name: "restart skipped", u: unit("active", false, old), out: []StepOutcome{{Step: actuators.Step{Op: actuators.OpRestart, Unit: "a"}, Skipped: "earlier failure"}}, keep: true},
		{name: "running from before the last load (held back)", u: unit("active", false, old), keep: true},
		{name: "running since after the last load: moot", u: unit("active", false, fresh)},
		{name: "running since after the last load, a reload pending", u: unit("active", true, fresh), keep: true},
		{name: "running, the last load unknown", u: unit("active", false, fresh), load: 1, keep: true},
		{name: "this pass's intent, restart failed: the observation predates the write", u: unit("active", false, fresh), intent: true,
			out: []StepOutcome{failed(actuators.OpRestart, "a")}, keep: true},
		{name: "Restart= pending (activating, no process)", u: unit("activating", false, 0), keep: true},
		{name: "deactivating, started by the pass (systemd may have restarted it first)", u: unit("deactivating", false, old),
			out: []StepOutcome{ok(actuators.OpStart, "a")}, keep: true},
		{name: "inactive, started by the pass", u: unit("inactive", true, 0), out: []StepOutcome{ok(actuators.OpStart, "a")}},
		{name: "stopped, file loaded", u: unit("inactive", false, 0)},
		{name: "failed, file loaded", u: unit("failed", false, 0)},
		{name: "stopped, reload pending", u: unit("inactive", true, 0), keep: true},
		{name: "stopped, the pass reloaded", u: unit("inactive", true, 0), out: []StepOutcome{ok(actuators.OpDaemonReload, "")}},
		{name: "stopped, the pass's reload failed", u: unit("inactive", true, 0), out: []StepOutcome{failed(actuators.OpDaemonReload, "")}, keep: true},
		{name: "gone", u: nil},
		{name: "stopped by the pass", u: unit("active", false, old), out: []StepOutcome{ok(actuators.OpStop, "a")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := &observed.State{UnitsLoadStart: load, Units: map[string]*observed.Unit{"b": unit("active", false, old)}}
			if tc.load == 1 {
				obs.UnitsLoadStart = 0
			}
			if tc.u != nil {
				obs.Units["a"] = tc.u
			}
			var intents []string
			if tc.intent {
				intents = []string{"a"}
			}
			got := journalAfter(map[string]time.Time{"a": at, "b": at}, obs, intents, nil, tc.out)
			if _, kept := got["a"]; kept != tc.keep {
				t.Fatalf("a kept = %v, want %v", kept, tc.keep)
			}
			if _, kept := got["b"]; !kept {
				t.Fatal("b, untouched and running from before the last load, was dropped")
			}
		})
	}
}

// A timer's record is a start owed (stopped for a schedule change): a
// successful stop keeps it, a successful start settles it, and a pass that
// plans no start for the timer drops it.
func TestJournalAfterTimer(t *testing.T) {
	at := time.Unix(1, 0)
	const name = "report.timer"
	oc := func(op actuators.Op, err error, skipped string) StepOutcome {
		return StepOutcome{Step: actuators.Step{Op: op, Unit: name}, Err: err, Skipped: skipped}
	}
	boom := errors.New("boom")
	for _, tc := range []struct {
		name   string
		active string // "": gone
		intent bool
		owed   bool // the planner still owes the start (Plan.StartsOwed)
		out    []StepOutcome
		keep   bool
	}{
		{name: "stopped and started by the pass", active: "active", intent: true,
			out: []StepOutcome{oc(actuators.OpStop, nil, ""), oc(actuators.OpDaemonReload, nil, ""), oc(actuators.OpStart, nil, "")}},
		{name: "stopped, the start failed", active: "active", intent: true,
			out: []StepOutcome{oc(actuators.OpStop, nil, ""), oc(actuators.OpStart, boom, "")}, keep: true},
		{name: "stopped, the reload failed: start skipped", active: "active", intent: true,
			out: []StepOutcome{oc(actuators.OpStop, nil, ""), oc(actuators.OpDaemonReload, boom, ""), oc(actuators.OpStart, nil, "earlier failure")}, keep: true},
		{name: "found inactive, started", active: "inactive", owed: true, out: []StepOutcome{oc(actuators.OpStart, nil, "")}},
		{name: "found inactive, the start failed", active: "inactive", owed: true, out: []StepOutcome{oc(actuators.OpStart, boom, "")}, keep: true},
		{name: "found inactive, the start withheld (pause lease)", active: "inactive", owed: true, keep: true},
		{name: "found inactive, no start owed (disabled)", active: "inactive"},
		{name: "found active, nothing planned", active: "active"},
		{name: "gone", active: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := &observed.State{UnitsLoadStart: 5, Units: map[string]*observed.Unit{}}
			if tc.active != "" {
				obs.Units[name] = &observed.Unit{Name: name, ActiveState: tc.active, LoadState: "loaded"}
			}
			var intents []string
			if tc.intent {
				intents = []string{name}
			}
			var owed []string
			if tc.owed {
				owed = []string{name}
			}
			got := journalAfter(map[string]time.Time{name: at}, obs, intents, owed, tc.out)
			if _, kept := got[name]; kept != tc.keep {
				t.Fatalf("kept = %v, want %v", kept, tc.keep)
			}
		})
	}
}

// A failed service's record is a start owed (its unit file rewritten by
// a pass cut off before its start): it stays while the planner owes it and
// no start was made, and goes with the first start made, whatever its
// result (a failed start is not tried again until the manifest changes).
func TestJournalAfterFailedService(t *testing.T) {
	const name = "worker.service"
	oc := func(op actuators.Op, err error, skipped string) StepOutcome {
		return StepOutcome{Step: actuators.Step{Op: op, Unit: name}, Err: err, Skipped: skipped}
	}
	boom := errors.New("boom")
	jobFailed := &testJobError{"failed"}
	for _, tc := range []struct {
		name   string
		intent bool
		owed   bool
		reload bool // the unit reads NeedDaemonReload
		out    []StepOutcome
		keep   bool
	}{
		{name: "owed, started", owed: true, out: []StepOutcome{oc(actuators.OpResetFailed, nil, ""), oc(actuators.OpStart, nil, "")}},
		{name: "owed, the start's job failed", owed: true, out: []StepOutcome{oc(actuators.OpResetFailed, nil, ""), oc(actuators.OpStart, jobFailed, "")}},
		{name: "owed, started, its effect not seen", owed: true, out: []StepOutcome{oc(actuators.OpStart, fmt.Errorf("start: %w", actuators.ErrNotObserved), "")}},
		{name: "owed, the start not made (not queued, dependency)", owed: true, out: []StepOutcome{oc(actuators.OpStart, boom, "")}, keep: true},
		{name: "owed, the start's job canceled", owed: true, out: []StepOutcome{oc(actuators.OpStart, &testJobError{"canceled"}, "")}, keep: true},
		{name: "owed, the start skipped after an earlier failure", owed: true, out: []StepOutcome{oc(actuators.OpResetFailed, boom, ""), oc(actuators.OpStart, nil, "earlier failure")}, keep: true},
		{name: "owed, withheld (pause lease)", owed: true, keep: true},
		{name: "not owed (its failed run is the new file's)"},
		{name: "not owed, a reload pending and none this pass", reload: true, keep: true},
		{name: "the pass's own intent, its start failed", intent: true, out: []StepOutcome{oc(actuators.OpWriteFile, nil, ""), oc(actuators.OpDaemonReload, nil, ""), oc(actuators.OpStart, jobFailed, "")}},
		{name: "the pass's own intent, cut off before its start", intent: true, out: []StepOutcome{oc(actuators.OpWriteFile, nil, "")}, keep: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := &observed.State{Units: map[string]*observed.Unit{name: {Name: name, ActiveState: "failed", LoadState: "loaded", NeedDaemonReload: tc.reload}}}
			var intents, owed []string
			if tc.intent {
				intents = []string{name}
			}
			if tc.owed {
				owed = []string{name}
			}
			got := journalAfter(map[string]time.Time{name: time.Unix(100, 0)}, obs, intents, owed, tc.out)
			if _, kept := got[name]; kept != tc.keep {
				t.Fatalf("kept = %v, want %v", kept, tc.keep)
			}
		})
	}
}

// The planner journals a service whose file it rewrites with a change
// that needs a restart while a process runs or may start (intents), and
// restarts a journaled service only while the restart is owed.
func TestPlanRestartJournal(t *testing.T) {
	svc := func(cmd, delay string) *desired.Object {
		return &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"},
			Source:  desired.Source{File: "web.yaml"},
			Service: &desired.ServiceSpec{Command: []string{"/bin/sleep", cmd}, Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: desired.Duration(delay)}}}
	}
	render := func(o *desired.Object) []desired.UnitFile {
		fs, err := desired.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		return fs
	}
	const load = 5_000_000
	cur := render(svc("1000", "5s"))[0].Data
	for _, tt := range []struct {
		name    string
		want    *desired.Object
		active  string
		started uint64
		reload  bool
		pending bool
		intents string
		steps   string
	}{
		{name: "command changed, running: journaled", want: svc("2000", "5s"), active: "active", started: 1, intents: "[web.service]",
			steps: "write /etc/systemd/system/web.service (manifest changed); daemon-reload (unit files written); restart web.service (unit file changed: ExecStart)"},
		{name: "reload-only change: nothing owed", want: svc("1000", "1s"), active: "active", started: 1, intents: "[]",
			steps: "write /etc/systemd/system/web.service (manifest changed; reload only: RestartSec changed); daemon-reload (unit files written)"},
		{name: "command changed, deactivating: journaled (Restart= may fire first)", want: svc("2000", "5s"), active: "deactivating", intents: "[web.service]",
			steps: "write /etc/systemd/system/web.service (manifest changed); daemon-reload (unit files written); start web.service (deactivating, want active)"},
		{name: "command changed, inactive: its start journaled", want: svc("2000", "5s"), active: "inactive", intents: "[web.service]",
			steps: "write /etc/systemd/system/web.service (manifest changed); daemon-reload (unit files written); start web.service (inactive, want active)"},
		{name: "journaled, started before the last load: owed", want: svc("1000", "5s"), active: "active", started: load - 1, pending: true, intents: "[]",
			steps: "restart web.service (restart owed by an interrupted pass)"},
		{name: "journaled, a reload pending: owed", want: svc("1000", "5s"), active: "active", started: load + 1, reload: true, pending: true, intents: "[]",
			steps: "daemon-reload (web.service changed on disk since last reload); restart web.service (restart owed by an interrupted pass)"},
		{name: "journaled, started after the last load: moot", want: svc("1000", "5s"), active: "active", started: load + 1, pending: true, intents: "[]",
			steps: ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := &observed.Unit{Name: "web.service", Owner: "Service/web", Path: "/etc/systemd/system/web.service", File: cur, LoadState: "loaded",
				ActiveState: tt.active, UnitFileState: "enabled", ExecMainStartTimestamp: tt.started, NeedDaemonReload: tt.reload}
			if tt.active == "active" {
				u.SubState, u.MainPID = "running", 10
			}
			in := Input{Objects: []*desired.Object{tt.want}, Files: map[string][]desired.UnitFile{"Service/web": render(tt.want)},
				UnitDir: "/etc/systemd/system", Observed: &observed.State{UnitsLoadStart: load, Units: map[string]*observed.Unit{"web.service": u}}, Prune: true}
			if tt.pending {
				in.RestartPending = map[string]time.Time{"web.service": time.Unix(1, 0)}
			}
			plan := Compute(in)
			var got []string
			for _, s := range plan.Steps {
				got = append(got, s.String())
			}
			if strings.Join(got, "; ") != tt.steps {
				t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "; "), tt.steps)
			}
			if g := fmt.Sprint(plan.RestartIntents); g != tt.intents && !(g == "[]" && tt.intents == "[]") {
				t.Errorf("intents %s, want %s", g, tt.intents)
			}
		})
	}
}

// A journaled timer whose manifest is broken now (protected, not in the
// desired set) still owes its start: the record stays for when the
// manifest is good again.
func TestTimerStartOwedWhileManifestBroken(t *testing.T) {
	u := &observed.Unit{Name: "report.timer", Owner: "Timer/report", ActiveState: "inactive", LoadState: "loaded"}
	in := Input{UnitDir: unitDir, Observed: &observed.State{Units: map[string]*observed.Unit{"report.timer": u}},
		Protected: map[string]bool{"Timer/report": true}, RestartPending: map[string]time.Time{"report.timer": time.Unix(1, 0)}}
	if got := Compute(in).StartsOwed; len(got) != 1 || got[0] != "report.timer" {
		t.Fatalf("starts owed %v, want report.timer", got)
	}
	in.Protected = nil // gone for good: nothing owed
	if got := Compute(in).StartsOwed; len(got) != 0 {
		t.Fatalf("starts owed %v, want none", got)
	}
}

// testJobError is a job that finished with another result than done, as
// actuators/systemd.JobError.
type testJobError struct{ result string }

func (e *testJobError) Error() string     { return "job result " + e.result }
func (e *testJobError) JobResult() string { return e.result }

// A journaled service found stopped is owed one start, under drift:
// report too, while it has not run since the record (never ran, unloaded
// since, failed or exited before it); one that ran since owes none.
func TestPlanJournaledStartOwed(t *testing.T) {
	rec := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	before, after := uint64(rec.Add(-time.Minute).UnixMicro()), uint64(rec.Add(time.Second).UnixMicro())
	for _, tc := range []struct {
		name    string
		active  string
		status  int32
		start   uint64
		journal bool
		want    string
		reload  bool // NeedDaemonReload: systemd restarted the old definition after the record
	}{
		{"never ran (or unloaded since)", "inactive", 0, 0, true, "start job.service (start owed by an interrupted pass)", false},
		{"exited before the record", "inactive", 0, before, true, "start job.service (start owed by an interrupted pass)", false},
		{"failed before the record", "failed", 1, before, true, "reset-failed job.service (start owed by an interrupted pass); start job.service (start owed by an interrupted pass)", false},
		{"exited after the record: ran", "inactive", 0, after, true, "", false},
		{"failed after the record: ran", "failed", 1, after, true, "", false},
		{"never ran, no record: drift report", "inactive", 0, 0, false, "", false},
		{"failed after the record, a reload pending: the old file's run", "failed", 1, after, true,
			"daemon-reload (job.service changed on disk since last reload); reset-failed job.service (start owed by an interrupted pass); start job.service (start owed by an interrupted pass)", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "job"},
				Source: desired.Source{File: "job.yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/true"}, Drift: desired.DriftReport,
					Restart: &desired.RestartSpec{Policy: desired.RestartNever}}}
			files, err := desired.Render(o)
			if err != nil {
				t.Fatal(err)
			}
			u := &observed.Unit{Name: "job.service", File: files[0].Data, Owner: o.ID(), LoadState: "loaded", ActiveState: tc.active, SubState: "dead",
				UnitFileState: "enabled", Result: "success", ExecMainStatus: tc.status, ExecMainStartTimestamp: tc.start, NeedDaemonReload: tc.reload}
			if tc.start != 0 {
				u.ExecMainExitTimestamp, u.ActiveExitTimestamp = tc.start+10, tc.start+20
			}
			in := Input{Objects: []*desired.Object{o}, Files: map[string][]desired.UnitFile{o.ID(): files}, UnitDir: unitDir,
				Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{"job.service": u}}}
			if tc.journal {
				in.RestartPending = map[string]time.Time{"job.service": rec}
			}
			plan := Compute(in)
			var steps []string
			for _, s := range plan.Steps {
				steps = append(steps, s.String())
			}
			if got := strings.Join(steps, "; "); got != tc.want {
				t.Errorf("steps %q, want %q", got, tc.want)
			}
			if owed := slices.Contains(plan.StartsOwed, "job.service"); owed != (tc.want != "") {
				t.Errorf("start owed %v, want %v", owed, tc.want != "")
			}
		})
	}
}
