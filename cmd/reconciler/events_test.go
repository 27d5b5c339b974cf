package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/internal/syncbuf"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/store"
)

// events --watch -o json prints new and repeated events of the selected
// object as the writer records them, and nothing else.
func TestEventsWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), store.FileName)
	w, err := store.Open(path, store.Options{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Record(reconcile.Event{Type: reconcile.Normal, Reason: reconcile.ReasonApplied, Object: "Service/web", Message: "before"})
	r, err := store.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	q := store.Query{Object: "web"}
	var out syncbuf.Buffer
	done := make(chan error, 1)
	go func() { done <- watchEvents(ctx, r, q, &out, true) }()
	waitFor(t, "first listing", func() bool { return strings.Count(out.String(), "\n") >= 1 })
	w.Record(reconcile.Event{Type: reconcile.Warning, Reason: reconcile.ReasonStopped, Object: "Service/web", Message: "stopped"})
	w.Record(reconcile.Event{Type: reconcile.Warning, Reason: reconcile.ReasonStopped, Object: "Service/other", Message: "stopped"})
	waitFor(t, "watched event", func() bool { return strings.Count(out.String(), "\n") >= 2 })
	w.Record(reconcile.Event{Type: reconcile.Normal, Reason: reconcile.ReasonApplied, Object: "Service/web", Message: "before"}) // a repeat
	waitFor(t, "watched repeat", func() bool { return strings.Count(out.String(), "\n") >= 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var e store.StoredEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, e.Object+" "+e.Message+" "+string(rune('0'+e.Count)))
	}
	want := []string{"Service/web before 1", "Service/web stopped 1", "Service/web before 2"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("watched %q, want %q", got, want)
	}
}

// events filters as an operator types them: --type in any case, --object
// by unit name too (QA: `--type warning` refused, `--object crash.service`
// found nothing).
func TestEventsFiltersAsTyped(t *testing.T) {
	state := t.TempDir()
	w, err := store.Open(filepath.Join(state, store.FileName), store.Options{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	w.Record(reconcile.Event{Type: reconcile.Warning, Reason: reconcile.ReasonFailed, Object: "Service/crash", Unit: "crash.service", Message: "crash.service failed"})
	w.Record(reconcile.Event{Type: reconcile.Normal, Reason: reconcile.ReasonApplied, Object: "Service/web", Unit: "web.service", Message: "start web.service"})
	w.Close()
	for _, args := range [][]string{{"--type", "warning"}, {"--object", "crash.service"}, {"--reason", "failed"}} {
		out, code := runCLI(t, append([]string{"events", "--state-dir", state}, args...)...)
		if code != 0 || !strings.Contains(out, "crash.service failed") || strings.Contains(out, "start web.service") {
			t.Errorf("events %v: exit %d\n%s", args, code, out)
		}
	}
	if out, code := runCLI(t, "events", "--state-dir", state, "--type", "warn"); code != 2 {
		t.Errorf("events --type warn: exit %d, want 2\n%s", code, out)
	}
}

// events --object UNIT lists the unit's events and those of the object
// that owns it: its object-level events (unit "") and, for a timer, its
// job's (QA: `--object web.service` left out LastGoodRetained, Paused and
// ManifestValid; `--object job.timer` every TimerFailed, stored under
// job.service).
func TestEventsObjectUnitIncludesItsObject(t *testing.T) {
	state := t.TempDir()
	w, err := store.Open(filepath.Join(state, store.FileName), store.Options{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	if err := w.PutStatus(ctx, []store.ObjectStatus{
		{Object: "Service/web", Kind: "Service", Name: "web", Unit: "web.service", State: "Converged", Updated: now},
		{Object: "Timer/job", Kind: "Timer", Name: "job", Unit: "job.timer", State: "Failed", Updated: now},
	}, store.Agent{LastPass: now, PID: 1, Backend: "process"}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []reconcile.Event{
		{Type: reconcile.Warning, Reason: reconcile.ReasonLastGoodRetained, Object: "Service/web", Message: "web kept"},
		{Type: reconcile.Normal, Reason: reconcile.ReasonPaused, Object: "Service/web", Message: "web paused"},
		{Type: reconcile.Normal, Reason: reconcile.ReasonApplied, Object: "Service/web", Unit: "web.service", Message: "start web.service"},
		{Type: reconcile.Normal, Reason: reconcile.ReasonManifestValid, Object: "Timer/job", Message: "job valid"},
		{Type: reconcile.Warning, Reason: reconcile.ReasonTimerFailed, Object: "Timer/job", Unit: "job.service", Message: "job run failed"},
		{Type: reconcile.Normal, Reason: reconcile.ReasonApplied, Object: "Timer/job", Unit: "job.timer", Message: "start job.timer"},
		{Type: reconcile.Normal, Reason: reconcile.ReasonApplied, Object: "Service/db", Unit: "db.service", Message: "start db.service"},
	} {
		if err := w.Add(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	all := []string{"web kept", "web paused", "start web.service", "job valid", "job run failed", "start job.timer", "start db.service"}
	for _, tc := range []struct {
		object string
		want   []string
	}{
		{"web.service", []string{"web kept", "web paused", "start web.service"}},
		{"job.timer", []string{"job valid", "job run failed", "start job.timer"}},
		{"job.service", []string{"job valid", "job run failed", "start job.timer"}}, // the timer's inline job
		{"db.service", []string{"start db.service"}},                                // gone from the last pass
		{"Service/web", []string{"web kept", "web paused", "start web.service"}},
	} {
		out, code := runCLI(t, "events", "--state-dir", state, "--object", tc.object)
		if code != 0 {
			t.Errorf("events --object %s: exit %d\n%s", tc.object, code, out)
			continue
		}
		for _, m := range all {
			if slices.Contains(tc.want, m) != strings.Contains(out, m) {
				t.Errorf("events --object %s: %q listed %v, want %v\n%s", tc.object, m, strings.Contains(out, m), slices.Contains(tc.want, m), out)
			}
		}
	}
}

// The reasons are a closed set: an unknown --reason is refused with the
// valid ones (QA: `--reason Nonsense` printed "No events found.", exit 0),
// any case still matches, and a negative --since is refused.
func TestEventsRefusesUnknownReasonAndNegativeSince(t *testing.T) {
	state := t.TempDir()
	w, err := store.Open(filepath.Join(state, store.FileName), store.Options{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	w.Record(reconcile.Event{Type: reconcile.Warning, Reason: reconcile.ReasonRestartStorm, Object: "Service/web", Message: "storm"})
	w.Close()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--reason", "Nonsense"}, 2, `--reason "Nonsense" is no event reason; one of (any case): `},
		{[]string{"--reason", "Nonsense"}, 2, "RestartStorm"},
		{[]string{"--reason", "restartstorm"}, 0, "storm"},
		{[]string{"--since", "-5m"}, 2, "--since must be a positive duration"},
		{[]string{"--since", "5m"}, 0, "storm"},
	} {
		out, code := runCLIErr(t, append([]string{"events", "--state-dir", state}, tc.args...)...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("events %v: exit %d, want %d and %q\n%s", tc.args, code, tc.code, tc.want, out)
		}
	}
}

// diff of a plan with nothing to do while a manifest is invalid does not
// say "No changes: N objects converged" (QA): it names the invalid
// manifests on stdout too.
func TestDiffNoChangesNamesInvalidManifests(t *testing.T) {
	e := newProcEnv(t)
	e.write("fresh.yaml", "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: fresh}\nspec:\n  command: [\"relative\"]\n")
	out, code, _ := execCLI("diff", "--backend", "process", "--manifests", e.manifests, "--state-dir", e.state, "--owner-check", "off")
	if code != 2 || strings.Contains(out, "No changes:") || !strings.Contains(out, "No changes to apply; 1 invalid manifest (listed on stderr) is not applied") {
		t.Fatalf("diff: exit %d\n%s", code, out)
	}
}
