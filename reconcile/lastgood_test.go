package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// staleObserver reports the named units as running a process older than
// their unit file (a restart lost to a kill -9).
type staleObserver struct {
	Observer
	stale map[string]bool
}

func (s staleObserver) Observe(ctx context.Context, names []string) (*observed.State, error) {
	st, err := s.Observer.Observe(ctx, names)
	if err != nil {
		return nil, err
	}
	for n, u := range st.Units {
		u.StaleProcess = s.stale[n] && u.Active()
	}
	return st, nil
}

func newStoreReconciler(t *testing.T, dir string, obs Observer, f *fakeBackend, store LastGoodStore) *Reconciler {
	log := zaptest.NewLogger(t)
	return New(Config{Manifests: dir, Load: desired.Options{Insecure: true}, UnitDir: "/units", Observer: obs, Applier: f,
		Events: NewRing(100, log), Log: log, LastGood: store})
}

const (
	webDropIn    = "spec:\n  environment:\n    MODE: fast\n"
	brokenDropIn = "spec:\n  environment: {MODE: fa\n" // cut mid-line
)

// TestPersistedLastGoodAfterRestart: an agent killed after it converged
// web (manifest plus a drop-in) restarts with web's drop-in broken. With
// the persisted last good objects it keeps web's last good version in
// force exactly (no file rewritten) and finishes what the kill cut short;
// with no memory it would leave the host as it is.
func TestPersistedLastGoodAfterRestart(t *testing.T) {
	for _, c := range []struct {
		name string
		// crash leaves the host as the killed agent left it.
		crash func(f *fakeBackend)
		stale bool
		want  string // the restarted agent's plan
	}{
		{name: "unit enabled, start lost",
			crash: func(f *fakeBackend) { f.active["web.service"] = false },
			want:  "start web.service (inactive, want active)"},
		{name: "restart lost", crash: func(*fakeBackend) {}, stale: true,
			want: "restart web.service (running process started from an older unit file)"},
		{name: "converged", crash: func(*fakeBackend) {}, want: ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, state := t.TempDir(), filepath.Join(t.TempDir(), "state")
			writeManifest(t, dir, "web.yaml", webManifest)
			if err := os.Mkdir(filepath.Join(dir, "web.d"), 0o755); err != nil {
				t.Fatal(err)
			}
			writeManifest(t, dir, "web.d/10-env.yaml", webDropIn)
			f := newFake()
			r1 := newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, false))
			if _, err := r1.Reconcile(context.Background(), Options{}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(state, LastGoodFileName)); err != nil {
				t.Fatalf("no last good file after an applying pass: %v", err)
			}
			c.crash(f)
			writeManifest(t, dir, "web.d/10-env.yaml", brokenDropIn)
			obs := staleObserver{Observer: f, stale: map[string]bool{"web.service": c.stale}}

			// Control: with no memory, web is protected and nothing happens.
			r0 := newStoreReconciler(t, dir, obs, f, nil)
			res, err := r0.Reconcile(context.Background(), Options{DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := planSteps(res); c.want != "" && got != "" {
				t.Fatalf("without memory the plan is %q; the test no longer shows the gap", got)
			}

			r2 := newStoreReconciler(t, dir, obs, f, NewLastGoodFile(state, false))
			res, err = r2.Reconcile(context.Background(), Options{DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := planSteps(res); !strings.HasPrefix(got, c.want) || (c.want == "" && got != "") {
				t.Fatalf("restarted agent plans %q, want %q", got, c.want)
			}
			if res.LoadErr == nil {
				t.Fatal("the broken drop-in is not reported")
			}
			if res.Objects != 1 || res.Desired[0].Source.DropIns[0] != "web.d/10-env.yaml" {
				t.Fatalf("effective objects: %v", res.Desired)
			}
		})
	}
}

func planSteps(res Result) string {
	var s []string
	for _, st := range res.Plan.Steps {
		s = append(s, st.String())
	}
	return strings.Join(s, "\n")
}

// TestPersistedLastGoodRemovedFilePrunes: a file removed while the agent
// was down still prunes what it held.
func TestPersistedLastGoodRemovedFilePrunes(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	if _, err := newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, false)).Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, false)).Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if f.files["web.service"] != nil || f.active["web.service"] {
		t.Fatalf("removed manifest not pruned: %v", f.applied)
	}
	objs, err := NewLastGoodFile(state, true).Load()
	if err != nil || len(objs) != 0 {
		t.Fatalf("last good file after the prune: %v, %v", objs, err)
	}
}

// TestLastGoodFileIgnoresBadContent: a file that does not parse, or an
// entry that fails validation, is ignored with an error, never fatal; the
// valid entries are kept.
func TestLastGoodFileIgnoresBadContent(t *testing.T) {
	good := `{"id":"Service/web","source":{"file":"web.yaml","doc":0},"document":{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"web"},"spec":{"command":["/bin/sleep","infinity"]}}}`
	for _, c := range []struct {
		name, content string
		want          []string // IDs kept
		wantErr       string
	}{
		{"garbage", "{not json", nil, "lastgood.json"},
		{"truncated", `{"version":1,"objects":[` + good[:40], nil, "lastgood.json"},
		{"other version", `{"version":2,"objects":[` + good + `]}`, nil, "version 2"},
		{"unknown field", `{"version":1,"objects":[` + good + `,` + strings.NewReplacer("web", "db", "command", "comand").Replace(good) + `]}`, []string{"Service/web"}, "unknown field"},
		{"id mismatch", `{"version":1,"objects":[` + strings.Replace(good, `"id":"Service/web"`, `"id":"Service/db"`, 1) + `]}`, nil, "the document is Service/web"},
		{"valid", `{"version":1,"objects":[` + good + `]}`, []string{"Service/web"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			state := t.TempDir()
			if err := os.WriteFile(filepath.Join(state, LastGoodFileName), []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			objs, err := NewLastGoodFile(state, true).Load()
			if (err == nil) != (c.wantErr == "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("error %v, want one with %q", err, c.wantErr)
			}
			if len(objs) != len(c.want) {
				t.Fatalf("kept %v, want %v", objs, c.want)
			}
			for _, id := range c.want {
				if objs[id] == nil {
					t.Fatalf("kept %v, want %v", objs, c.want)
				}
			}
			// A reconciler starts with what is usable.
			dir := t.TempDir()
			f := newFake()
			if _, err := newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, false)).Reconcile(context.Background(), Options{}); err != nil {
				t.Fatalf("pass: %v", err)
			}
		})
	}
}

// TestLastGoodFileWrites: a dry run (diff) and a read-only store write
// nothing, not even the directory; an unchanged set is not rewritten;
// temporary files of a killed save are removed by the next agent.
func TestLastGoodFileWrites(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	state := filepath.Join(t.TempDir(), "state")
	f := newFake()
	if _, err := newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, false)).Reconcile(context.Background(), Options{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, true)).Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(state); !os.IsNotExist(err) {
		t.Fatalf("dry run or read-only store created the state dir: %v", err)
	}
	r := newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, false))
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(state, LastGoodFileName)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, false)).Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("unchanged last good objects rewritten (%v)", err)
	}
	leftover := filepath.Join(state, "."+LastGoodFileName+"8417293561")
	if err := os.WriteFile(leftover, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	NewLastGoodFile(state, true).Load()
	if _, err := os.Stat(leftover); err != nil {
		t.Fatal("a read-only store removed a file")
	}
	if _, err := NewLastGoodFile(state, false).Load(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("temporary file of a killed save left: %v", err)
	}
}

var _ LastGoodStore = (*LastGoodFile)(nil)

// countingLastGood counts the loads of a LastGoodFile.
type countingLastGood struct {
	*LastGoodFile
	loads int
}

func (c *countingLastGood) Load() (map[string]*desired.Object, error) {
	c.loads++
	return c.LastGoodFile.Load()
}

// TestLastGoodLoadedOnlyWhenNeeded: a restarted agent whose first pass
// loads every manifest cleanly never decodes the persisted objects (and
// rewrites nothing when they are the same); one whose first pass finds a
// broken file loads them once, and a later pass never again.
func TestLastGoodLoadedOnlyWhenNeeded(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	if err := os.Mkdir(filepath.Join(dir, "web.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "web.d/10-env.yaml", webDropIn)
	f := newFake()
	ctx := context.Background()
	if _, err := newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, false)).Reconcile(ctx, Options{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(state, LastGoodFileName)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	clean := &countingLastGood{LastGoodFile: NewLastGoodFile(state, false)}
	if _, err := newStoreReconciler(t, dir, f, f, clean).Reconcile(ctx, Options{}); err != nil {
		t.Fatal(err)
	}
	if clean.loads != 0 {
		t.Errorf("a clean first pass loaded the persisted objects %d times", clean.loads)
	}
	if after, err := os.Stat(path); err != nil || !os.SameFile(before, after) {
		t.Errorf("the unchanged last good file was rewritten (%v)", err)
	}

	writeManifest(t, dir, "web.d/10-env.yaml", brokenDropIn)
	broken := &countingLastGood{LastGoodFile: NewLastGoodFile(state, false)}
	r := newStoreReconciler(t, dir, f, f, broken)
	for range 2 {
		res, err := r.Reconcile(ctx, Options{DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.Objects != 1 || len(res.Desired[0].Source.DropIns) != 1 {
			t.Fatalf("the last good version is not in force: %v", res.Desired)
		}
	}
	if broken.loads != 1 {
		t.Errorf("with a broken drop-in the persisted objects were loaded %d times, want once", broken.loads)
	}
}

// The hand-built encoding is JSON that Load reads back to the same
// objects, with drop-ins, names that need quoting, and a document with
// surrounding space.
func TestEncodeLastGoodRoundTrip(t *testing.T) {
	doc := func(name, cmd string) []byte {
		return []byte(`{"apiVersion":"resil.dev/v1","kind":"Service","metadata":{"name":"` + name + `"},"spec":{"command":["` + cmd + `"]}}`)
	}
	var objs []*desired.Object
	for i, c := range []struct {
		name, file string
		dropIns    []string
		doc        []byte
	}{
		{"a", "a.yaml", nil, doc("a", "/bin/a")},
		{"b", `we"ird\file.yaml`, []string{"b.d/10.yaml", "b.d/20.yaml"}, doc("b", `/bin/\"quoted\"`)},
		{"c", "c.yaml", nil, append(append([]byte("\n  "), doc("c", "/bin/c")...), " \n"...)},
	} {
		o, err := desired.DecodeObject(c.doc, desired.Source{File: c.file, Doc: i, DropIns: c.dropIns})
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	data, n, err := encodeLastGood(objs)
	if err != nil || n != 3 || !json.Valid(data) {
		t.Fatalf("encode: %d objects, %v, valid %v:\n%s", n, err, json.Valid(data), data)
	}
	state := t.TempDir()
	if err := NewLastGoodFile(state, false).Save(objs); err != nil {
		t.Fatal(err)
	}
	back, err := NewLastGoodFile(state, true).Load()
	if err != nil || len(back) != 3 {
		t.Fatalf("load: %d objects, %v", len(back), err)
	}
	for _, o := range objs {
		got := back[o.ID()]
		if got == nil || !reflect.DeepEqual(got.Service, o.Service) || !reflect.DeepEqual(got.Source, o.Source) {
			t.Errorf("%s: got %+v, want %+v", o.ID(), got, o)
		}
	}
}

// A file of two objects one of which turns invalid holds both: the valid
// one's change is not applied either (the file may be half edited), its
// last good version stays in force, with an event saying why.
func TestBrokenSiblingDocumentHoldsTheFile(t *testing.T) {
	dir := t.TempDir()
	db := strings.Replace(webManifest, "name: web", "name: db", 1)
	writeManifest(t, dir, "both.yaml", webManifest+"---\n"+db)
	f := newFake()
	r := newStoreReconciler(t, dir, f, f, nil)
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	web2 := strings.Replace(webManifest, `["/bin/sleep", "infinity"]`, `["/bin/sleep", "1000"]`, 1)
	writeManifest(t, dir, "both.yaml", web2+"---\n"+db+"  stopTimeout: forever\n")
	res, err := r.Reconcile(context.Background(), Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := planSteps(res); got != "" {
		t.Fatalf("plan with an invalid sibling document: %q, want none", got)
	}
	if res.LoadErr == nil || !strings.Contains(res.LoadErr.Error(), "stopTimeout") {
		t.Fatalf("load error: %v", res.LoadErr)
	}
}

// The last good objects are programs the agent will run as root: a file
// others could write, or a symlink, is refused like a manifest would be.
func TestLastGoodFileMustBeTrusted(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	state := filepath.Join(t.TempDir(), "state")
	f := newFake()
	if _, err := newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, false)).Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(state, LastGoodFileName)
	if objs, err := NewLastGoodFile(state, true).Load(); err != nil || len(objs) != 1 {
		t.Fatalf("load: %v %v", objs, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if objs, err := NewLastGoodFile(state, true).Load(); err == nil || len(objs) != 0 {
		t.Fatalf("a group/other-writable last good file loaded: %v %v", objs, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".real"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(path+".real", path); err != nil {
		t.Fatal(err)
	}
	if objs, err := NewLastGoodFile(state, true).Load(); err == nil || len(objs) != 0 {
		t.Fatalf("a symlinked last good file loaded: %v %v", objs, err)
	}
}

// An object moved to another file with an error in it keeps its last good
// version: its old file is gone, so only its name says it is broken (it
// was pruned).
func TestMovedObjectWithErrorNotPruned(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "a.yaml", webManifest)
	f := newFake()
	r := newStoreReconciler(t, dir, f, f, nil)
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "b.yaml", webManifest+"  stopTimeout: forever\n")
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	res, err := r.Reconcile(context.Background(), Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := planSteps(res); got != "" {
		t.Fatalf("plan after web moved to an invalid file: %q, want none", got)
	}
}

// drift: report leaves out-of-band changes as found, but a manifest that
// changes state or enabled (which its unit file does not carry) is applied:
// in the same agent (its memory) and in a new one (the persisted last good
// objects, as `apply` and `diff` read them).
func TestReportAppliesManifestStateChange(t *testing.T) {
	stopped := webManifest + "  drift: report\n  state: stopped\n  enabled: false\n"
	running := webManifest + "  drift: report\n"
	for _, fresh := range []bool{false, true} {
		t.Run(fmt.Sprintf("fresh agent %v", fresh), func(t *testing.T) {
			dir, state := t.TempDir(), filepath.Join(t.TempDir(), "state")
			writeManifest(t, dir, "web.yaml", stopped)
			f := newFake()
			r := newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, false))
			if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
				t.Fatal(err)
			}
			if f.active["web.service"] {
				t.Fatal("web started although stopped")
			}
			writeManifest(t, dir, "web.yaml", running)
			if fresh {
				r = newStoreReconciler(t, dir, f, f, NewLastGoodFile(state, false))
			}
			res, err := r.Reconcile(context.Background(), Options{DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			got := planSteps(res)
			if !strings.Contains(got, "enable web.service") || !strings.Contains(got, "start web.service (manifest changed: state running)") {
				t.Fatalf("plan after the manifest asked for running and enabled: %q", got)
			}
		})
	}
	// Control: with no manifest change, a unit found stopped is reported.
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", running)
	f := newFake()
	r := newStoreReconciler(t, dir, f, f, nil)
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	f.active["web.service"] = false
	res, err := r.Reconcile(context.Background(), Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := planSteps(res); got != "" {
		t.Fatalf("drift: report planned %q for a unit stopped out of band", got)
	}
}
