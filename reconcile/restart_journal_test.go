package reconcile

import (
	"context"
	"errors"
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
	if app.atWrite["web.service"] {
		t.Fatal("a new unit (nothing running) was journaled")
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
	unit := func(active string, reload bool) *observed.Unit {
		return &observed.Unit{ActiveState: active, LoadState: "loaded", NeedDaemonReload: reload}
	}
	ok := func(op actuators.Op, unit string) StepOutcome {
		return StepOutcome{Step: actuators.Step{Op: op, Unit: unit}}
	}
	failed := func(op actuators.Op, unit string) StepOutcome {
		oc := ok(op, unit)
		oc.Err = errors.New("boom")
		return oc
	}
	for _, tc := range []struct {
		name string
		u    *observed.Unit
		out  []StepOutcome
		keep bool
	}{
		{name: "restarted", u: unit("active", false), out: []StepOutcome{ok(actuators.OpRestart, "a")}},
		{name: "restart failed", u: unit("active", false), out: []StepOutcome{failed(actuators.OpRestart, "a")}, keep: true},
		{name: "restart skipped", u: unit("active", false), out: []StepOutcome{{Step: actuators.Step{Op: actuators.OpRestart, Unit: "a"}, Skipped: "earlier failure"}}, keep: true},
		{name: "running, no step (held back)", u: unit("active", false), keep: true},
		{name: "Restart= pending (activating)", u: unit("activating", false), keep: true},
		{name: "stopped, file loaded", u: unit("inactive", false)},
		{name: "failed, file loaded", u: unit("failed", false)},
		{name: "stopped, reload pending", u: unit("inactive", true), keep: true},
		{name: "stopped, the pass reloaded", u: unit("inactive", true), out: []StepOutcome{ok(actuators.OpDaemonReload, "")}},
		{name: "stopped, the pass's reload failed", u: unit("inactive", true), out: []StepOutcome{failed(actuators.OpDaemonReload, "")}, keep: true},
		{name: "gone", u: nil},
		{name: "stopped by the pass", u: unit("active", false), out: []StepOutcome{ok(actuators.OpStop, "a")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := &observed.State{Units: map[string]*observed.Unit{"b": unit("active", false)}}
			if tc.u != nil {
				obs.Units["a"] = tc.u
			}
			got := journalAfter(map[string]time.Time{"a": at, "b": at}, obs, tc.out)
			if _, kept := got["a"]; kept != tc.keep {
				t.Fatalf("a kept = %v, want %v", kept, tc.keep)
			}
			if _, kept := got["b"]; !kept {
				t.Fatal("b, untouched and running, was dropped")
			}
		})
	}
}

func TestRestartIntents(t *testing.T) {
	steps := []actuators.Step{
		{Op: actuators.OpWriteFile, Unit: "a.service"},
		{Op: actuators.OpWriteFile, Unit: "b.service"},
		{Op: actuators.OpDaemonReload},
		{Op: actuators.OpRestart, Unit: "a.service"},
		{Op: actuators.OpRestart, Unit: "c.service"}, // liveness: no file written
		{Op: actuators.OpStart, Unit: "b.service"},
	}
	if got := restartIntents(steps); !slices.Equal(got, []string{"a.service"}) {
		t.Fatalf("intents = %v", got)
	}
}
