package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDropInEmptyNameKeepsBase is issue 9 item 5 at the reconciler: a
// drop-in whose metadata.name is "" used to create an object "Service/",
// prune the base service and fail on every pass. Now the drop-in is
// invalid, nothing is created or pruned, the base keeps its last good
// version, and fixing the drop-in applies it.
func TestDropInEmptyNameKeepsBase(t *testing.T) {
	dir, f, r, ring := appliedWeb(t)
	if err := os.Mkdir(filepath.Join(dir, "web.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "web.d/10-local.yaml", "metadata: {name: \"\"}\nspec: {restart: {delay: 10s}}\n")
	for pass := range 2 {
		f.applied = nil
		res, err := r.Reconcile(context.Background(), Options{})
		if err != nil || !res.Plan.Empty() || res.LoadErr == nil {
			t.Fatalf("pass %d with the broken drop-in: err %v, steps %v, load %v", pass, err, res.Plan.Steps, res.LoadErr)
		}
		if !strings.Contains(res.LoadErr.Error(), "web.d/10-local.yaml:1:12: metadata.name: ") {
			t.Errorf("load error does not name the drop-in's metadata.name: %v", res.LoadErr)
		}
		if !f.active["web.service"] || f.files["web.service"] == nil || f.files[".service"] != nil {
			t.Fatalf("the broken drop-in disturbed web.service or created .service: applied %v", f.applied)
		}
	}
	retained := false
	for _, e := range ring.Events() {
		if e.Object == "Service/" {
			t.Errorf("event about an object Service/: %+v", e)
		}
		retained = retained || (e.Reason == ReasonLastGoodRetained && e.Object == "Service/web")
	}
	if !retained {
		t.Errorf("no %s event for Service/web", ReasonLastGoodRetained)
	}
	// A fresh agent (no memory of the last good version) prunes nothing either.
	r2, _ := newTestReconciler(t, dir, f, nil)
	if res, err := r2.Reconcile(context.Background(), Options{}); err != nil || !res.Plan.Empty() {
		t.Fatalf("fresh agent with the broken drop-in planned %v (%v)", res.Plan.Steps, err)
	}
	// Fixed, the drop-in applies: one write and a restart, no prune.
	writeManifest(t, dir, "web.d/10-local.yaml", "metadata: {name: web}\nspec: {restart: {delay: 10s}}\n")
	f.applied = nil
	res, err := r.Reconcile(context.Background(), Options{})
	if err != nil || res.LoadErr != nil {
		t.Fatalf("fixed drop-in: %v, %v", err, res.LoadErr)
	}
	if !strings.Contains(string(f.files["web.service"]), "RestartSec=10s") || !f.active["web.service"] {
		t.Fatalf("fixed drop-in not applied: %v\n%s", f.applied, f.files["web.service"])
	}
	for _, s := range f.applied {
		if strings.HasPrefix(s, "remove") || strings.HasPrefix(s, "stop") {
			t.Errorf("fixing the drop-in ran %q", s)
		}
	}
}

// A manifest removed while its drop-in folder stays: the object is kept
// (its drop-in names no manifest, an invalid set), and the event says
// what holds it, not that the removed file is invalid.
func TestRemovedManifestWithDropInLeft(t *testing.T) {
	dir, f, r, ring := appliedWeb(t)
	if err := os.Mkdir(filepath.Join(dir, "web.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "web.d/10-local.yaml", "spec: {restart: {delay: 10s}}\n")
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	res, err := r.Reconcile(context.Background(), Options{})
	if err != nil || !res.Plan.Empty() || !f.active["web.service"] {
		t.Fatalf("manifest removed, drop-in left: err %v, steps %v, active %v", err, res.Plan.Steps, f.active["web.service"])
	}
	checkRetained(t, ring, "in web.d/ is invalid, or left without a manifest declaring it", "web.yaml is invalid")
}

// checkRetained checks that Service/web has a LastGoodRetained event
// saying want, and none saying not.
func checkRetained(t *testing.T, ring *Ring, want, not string) {
	t.Helper()
	found := false
	for _, e := range ring.Events() {
		if e.Reason != ReasonLastGoodRetained || e.Object != "Service/web" {
			continue
		}
		if strings.Contains(e.Message, not) {
			t.Errorf("event says %q: %s", not, e.Message)
		}
		found = found || strings.Contains(e.Message, want)
	}
	if !found {
		t.Errorf("no %s event saying %q: %+v", ReasonLastGoodRetained, want, ring.Events())
	}
}

// An object moved into a file with an error in it (its old file gone): the
// event names the new file, not a drop-in folder there is none of.
func TestObjectMovedIntoInvalidFile(t *testing.T) {
	dir, _, r, ring := appliedWeb(t)
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "services.yaml", strings.Replace(webManifest, "spec:\n", "spec:\n  restart: {policy: sometimes}\n", 1))
	if res, err := r.Reconcile(context.Background(), Options{}); err != nil || !res.Plan.Empty() {
		t.Fatalf("moved into an invalid file: err %v, plan %v", err, res.Plan.Steps)
	}
	checkRetained(t, ring, "services.yaml declares it now and is invalid", "drop-in")
}

// A valid manifest whose drop-in is broken: the event names the drop-in
// folder, not the manifest.
func TestBrokenDropInNamedNotItsManifest(t *testing.T) {
	dir, _, r, ring := appliedWeb(t)
	if err := os.Mkdir(filepath.Join(dir, "web.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "web.d/60-more.yaml", "spec: {environment: [oops]}\n")
	if res, err := r.Reconcile(context.Background(), Options{}); err != nil || !res.Plan.Empty() {
		t.Fatalf("broken drop-in: err %v, plan %v", err, res.Plan.Steps)
	}
	for _, e := range ring.Events() {
		if e.Reason == ReasonLastGoodRetained && strings.Contains(e.Message, "web.yaml declares it now and is invalid") {
			t.Errorf("event blames the valid manifest: %s", e.Message)
		}
	}
}
