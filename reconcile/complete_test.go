package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/desired"
)

// Red-team cases of issue 9 item 1: only complete files are acted on. A
// file that is truncated, holds only a comment or a "---", or is still
// open for writing never stops, prunes or rewrites what it held; a fresh
// agent (no memory) does not either.

const apiManifest = `apiVersion: resil.dev/v1
kind: Service
metadata: {name: api}
spec:
  command: ["/bin/sleep", "infinity"]
`

const nobodyManifest = `apiVersion: resil.dev/v1
kind: Service
metadata: {name: web}
spec:
  command: ["/bin/sleep", "infinity"]
  user: nobody
`

// converge runs passes until the fake backend is converged.
func converge(t *testing.T, r *Reconciler) {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	res, err := r.Reconcile(context.Background(), Options{})
	if err != nil || !res.Plan.Empty() {
		t.Fatalf("not converged: %v %v", err, res.Plan.Steps)
	}
}

// expectNoChange runs a pass with r and one with a fresh agent (no last
// good memory): neither may plan a step, and the backend keeps want.
func expectNoChange(t *testing.T, dir string, f *fakeBackend, r *Reconciler, want map[string][]byte) {
	t.Helper()
	f.applied = nil
	res, err := r.Reconcile(context.Background(), Options{})
	if err != nil || !res.Plan.Empty() {
		t.Fatalf("pass planned %v (%v)", res.Plan.Steps, err)
	}
	fresh, _ := newTestReconciler(t, dir, f, nil)
	res, err = fresh.Reconcile(context.Background(), Options{})
	if err != nil || !res.Plan.Empty() {
		t.Fatalf("fresh agent planned %v (%v)", res.Plan.Steps, err)
	}
	for unit, data := range want {
		if string(f.files[unit]) != string(data) || !f.active[unit] {
			t.Fatalf("%s changed: active %v, file\n%s", unit, f.active[unit], f.files[unit])
		}
	}
	if len(f.applied) != 0 {
		t.Fatalf("steps applied: %v", f.applied)
	}
}

func snapshot(f *fakeBackend) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range f.files {
		out[k] = v
	}
	return out
}

func hasEvent(ring *Ring, reason Reason, contains string) bool {
	for _, e := range ring.Events() {
		if e.Reason == reason && strings.Contains(e.Message, contains) {
			return true
		}
	}
	return false
}

// emptiedKeepsService: web.yaml rewritten as body (no documents) keeps the
// service; deleting the file then really prunes it.
func emptiedKeepsService(t *testing.T, body string) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	r, ring := newTestReconciler(t, dir, f, nil)
	converge(t, r)
	want := snapshot(f)
	writeManifest(t, dir, "web.yaml", body)
	expectNoChange(t, dir, f, r, want)
	// It is a manifest problem, as apply, diff and status report them.
	res, _ := r.Reconcile(context.Background(), Options{DryRun: true})
	if fes := desired.FieldErrors(res.LoadErr); len(fes) != 1 || !strings.HasSuffix(fes[0].File, "web.yaml") {
		t.Fatalf("LoadErr = %v", res.LoadErr)
	}
	if !hasEvent(ring, ReasonInvalid, "web.yaml: holds no objects") || !hasEvent(ring, ReasonLastGoodRetained, "holds no objects") {
		t.Fatalf("events: %+v", ring.Events())
	}
	// The last good version stays across passes, not just the first.
	expectNoChange(t, dir, f, r, want)
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if f.files["web.service"] != nil || f.active["web.service"] {
		t.Fatalf("removed manifest not pruned: %v", f.applied)
	}
}

// `: > web.yaml` (the first instant of any `cat > web.yaml`) keeps web.
func TestTruncatedManifestKeepsService(t *testing.T) { emptiedKeepsService(t, "") }

// A file holding only a comment keeps what it held.
func TestCommentOnlyManifestKeepsService(t *testing.T) {
	emptiedKeepsService(t, "# web is being rewritten\n")
}

// A file holding only "---" (and blank lines) keeps what it held.
func TestSeparatorOnlyManifestKeepsService(t *testing.T) { emptiedKeepsService(t, "---\n\n---\n") }

// holdOpen truncates dir/name and writes part while keeping it open for
// writing; the returned func writes rest and closes it.
func holdOpen(t *testing.T, dir, name, part string) func(rest string) {
	t.Helper()
	w, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_TRUNC|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString(part); err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			w.Close()
		}
	})
	return func(rest string) {
		if _, err := w.WriteString(rest); err != nil {
			t.Fatal(err)
		}
		closed = true
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A multi-document file cut right after "---" while the writer still holds
// it: the second object is not pruned, nothing changes, and once the writer
// finishes the same content nothing changes either.
func TestMultiDocCutAfterSeparatorWhileHeldOpen(t *testing.T) {
	dir := t.TempDir()
	full := webManifest + "---\n" + apiManifest
	writeManifest(t, dir, "all.yaml", full)
	f := newFake()
	r, ring := newTestReconciler(t, dir, f, nil)
	converge(t, r)
	want := snapshot(f)
	finish := holdOpen(t, dir, "all.yaml", webManifest+"---\n")
	expectNoChange(t, dir, f, r, want)
	if !hasEvent(ring, ReasonBusy, "all.yaml") || !hasEvent(ring, ReasonLastGoodRetained, "open for writing") {
		t.Fatalf("events: %+v", ring.Events())
	}
	// diff shows it as findings (the file busy, each object it holds at
	// its last good version, which Classify reads as Invalid); it is not a
	// manifest error.
	res, _ := r.Reconcile(context.Background(), Options{DryRun: true})
	var reasons []string
	for _, f := range res.Plan.Findings {
		reasons = append(reasons, string(f.Reason)+" "+f.Object)
	}
	if got := strings.Join(reasons, ", "); got != "LastGoodRetained Service/api, LastGoodRetained Service/web, ManifestBusy " || res.LoadErr != nil {
		t.Fatalf("findings %s, load error %v", got, res.LoadErr)
	}
	for id, st := range Classify(res) {
		if st.State != StateInvalid {
			t.Errorf("%s: %s, want Invalid while its file is busy", id, st.State)
		}
	}
	finish(apiManifest)
	expectNoChange(t, dir, f, r, want)
}

// A file cut just before its last line (`user: nobody` missing) while the
// writer holds it: the service is not rewritten or restarted without its
// user (it would run as root).
func TestCutBeforeLastLineWhileHeldOpen(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", nobodyManifest)
	f := newFake()
	r, _ := newTestReconciler(t, dir, f, nil)
	converge(t, r)
	if !strings.Contains(string(f.files["web.service"]), "User=nobody") {
		t.Fatalf("unit without User=nobody:\n%s", f.files["web.service"])
	}
	want := snapshot(f)
	cut := strings.TrimSuffix(nobodyManifest, "  user: nobody\n")
	finish := holdOpen(t, dir, "web.yaml", cut)
	expectNoChange(t, dir, f, r, want)
	finish("  user: nobody\n")
	expectNoChange(t, dir, f, r, want)
}

// The same for a drop-in: a drop-in held open, or emptied, does not apply
// the object without it; removing the drop-in does.
func TestDropInHeldOpenOrEmptiedKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	if err := os.Mkdir(filepath.Join(dir, "web.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "web.d/50-user.yaml", "spec:\n  description: web\n  user: nobody\n")
	f := newFake()
	r, _ := newTestReconciler(t, dir, f, nil)
	converge(t, r)
	want := snapshot(f)
	if !strings.Contains(string(want["web.service"]), "User=nobody") {
		t.Fatalf("drop-in not applied:\n%s", want["web.service"])
	}
	// The part written so far is a valid drop-in without the user.
	finish := holdOpen(t, dir, "web.d/50-user.yaml", "spec:\n  description: web\n")
	expectNoChange(t, dir, f, r, want)
	finish("  user: nobody\n")
	expectNoChange(t, dir, f, r, want)
	writeManifest(t, dir, "web.d/50-user.yaml", "# later\n")
	expectNoChange(t, dir, f, r, want)
	if err := os.Remove(filepath.Join(dir, "web.d/50-user.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(f.files["web.service"]), "User=") {
		t.Fatalf("removed drop-in still applied:\n%s", f.files["web.service"])
	}
}

// A subfolder of the manifests directory is not read: every pass says so
// (a FolderNotRead warning, recorded once as a condition), nothing in it
// is applied, and it makes no object Invalid.
func TestFolderNotReadFinding(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	if err := os.Mkdir(filepath.Join(dir, "team"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, filepath.Join(dir, "team"), "api.yaml", apiManifest)
	f := newFake()
	r, ring := newTestReconciler(t, dir, f, nil)
	converge(t, r)
	res, _ := r.Reconcile(context.Background(), Options{DryRun: true})
	var found bool
	for _, fd := range res.Plan.Findings {
		if fd.Reason == ReasonFolderNotRead && strings.Contains(fd.Message, filepath.Join(dir, "team")+"/") && fd.Warning {
			found = true
		}
	}
	if !found || !hasEvent(ring, ReasonFolderNotRead, "team/") {
		t.Fatalf("no FolderNotRead finding and event: %+v", res.Plan.Findings)
	}
	if res.Objects != 1 || res.LoadErr != nil {
		t.Fatalf("objects %d, load error %v", res.Objects, res.LoadErr)
	}
	for id, st := range Classify(res) {
		if st.State != StateConverged {
			t.Errorf("%s: %s", id, st.State)
		}
	}
}

// A held object whose manifest is fixed gets one ManifestValid event, also
// when the fix changes nothing to apply (QA: LAST EVENT kept saying
// LastGoodRetained after the fix); a dry run records none.
func TestManifestValidAfterFix(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	r, ring := newTestReconciler(t, dir, f, nil)
	converge(t, r)
	want := snapshot(f)
	count := func() int {
		n := 0
		for _, e := range ring.Events() {
			if e.Reason == ReasonManifestValid {
				n++
				if e.Object != "Service/web" || e.Type != Normal {
					t.Errorf("event %+v", e)
				}
			}
		}
		return n
	}
	writeManifest(t, dir, "web.yaml", strings.Replace(webManifest, "command:", "comand:", 1))
	expectNoChange(t, dir, f, r, want)
	if !hasEvent(ring, ReasonLastGoodRetained, "invalid") || count() != 0 {
		t.Fatalf("broken: events %+v", ring.Events())
	}
	writeManifest(t, dir, "web.yaml", webManifest)
	if _, err := r.Reconcile(context.Background(), Options{DryRun: true}); err != nil || count() != 0 {
		t.Fatalf("dry run: %v, %d ManifestValid", err, count())
	}
	expectNoChange(t, dir, f, r, want)
	if n := count(); n != 1 {
		t.Fatalf("%d ManifestValid events after the fix, want 1: %+v", n, ring.Events())
	}
	expectNoChange(t, dir, f, r, want)
	if n := count(); n != 1 {
		t.Fatalf("%d ManifestValid events a pass later, want 1", n)
	}
}

// Occurrences of a repeating finding (a timer job's failed runs) are each
// an event onset, once however many passes see one, and the event log
// counts them in one row: a job failing every 2 s no longer adds a row per
// run (43,200 a day), pushing other history out.
func TestFindingOccurrencesFoldIntoOneRow(t *testing.T) {
	r, ring := newTestReconciler(t, t.TempDir(), newFake(), nil)
	f := func(run string) Finding {
		return Finding{Object: "Timer/backup", Unit: "backup.service", Reason: ReasonTimerFailed, Message: "last run failed: exit status 3",
			Warning: true, Occurrence: run}
	}
	passes := [][]Finding{{f("09:00:02")}, {f("09:00:02")}, {f("09:00:04")}, {f("09:00:04")}, {f("09:00:06")}}
	for _, fs := range passes {
		r.condNext = map[string]time.Time{}
		r.recordFindings(fs)
		r.conditions, r.condNext = r.condNext, nil
	}
	var rows []Event
	for _, e := range ring.Events() {
		if e.Reason == ReasonTimerFailed {
			rows = append(rows, e)
		}
	}
	if len(rows) != 1 || rows[0].Count != 3 {
		t.Fatalf("TimerFailed rows %+v, want one with count 3 (three failed runs, five passes)", rows)
	}
}

// An object whose manifest was never valid gets ManifestValid "valid now"
// once fixed, not "valid again" (QA: it had no version to come back to).
func TestManifestValidNeverValidBefore(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", strings.Replace(webManifest, "command:", "comand:", 1))
	f := newFake()
	r, ring := newTestReconciler(t, dir, f, nil)
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "web.yaml", webManifest)
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if !hasEvent(ring, ReasonManifestValid, "its manifest is valid now") || hasEvent(ring, ReasonManifestValid, "again") {
		t.Fatalf("events %+v", ring.Events())
	}
}
