package gitsource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/desired"
)

// A signed head is deployed; an unsigned one, and one signed by a key the
// allowed-signers file does not list, are refused once each (one event,
// one count) and the deployed revision stays, files and all.
func TestSyncVerifiesSignatures(t *testing.T) {
	alice, mallory := sshKey(t, "alice"), sshKey(t, "mallory")
	r := newRepo(t)
	c1 := r.Commit("web v1", alice, map[string]string{"web.yaml": service("web", "1")})
	s, ev, m := newSource(t, r, func(c *Config) { c.VerifySigners = allowedSigners(t, map[string]string{"alice@example.com": alice}) })

	sync1(t, s, OutcomeDeployed)
	if d := s.Deployed(); d == nil || d.Commit != c1 || d.Signer != "alice@example.com" || d.Subject != "web v1" {
		t.Fatalf("deployed %+v, want %s signed by alice", d, c1)
	}
	sync1(t, s, OutcomeUnchanged)

	for _, tc := range []struct{ name, key, why string }{
		{"unsigned", "", "not signed"},
		{"foreign key", mallory, "not in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := m.rejected
			r.Commit("web "+tc.name, tc.key, map[string]string{"web.yaml": service("web", tc.name)})
			a := sync1(t, s, OutcomeRejected)
			if !strings.Contains(a.Error, tc.why) {
				t.Errorf("error %q, want it to say %q", a.Error, tc.why)
			}
			// Again (as the agent's loop does, recording last.json): no
			// new event or count, and the same reason.
			again, err := s.attempt(context.Background())
			if err != nil || again.Outcome != OutcomeRejected || again.Error != a.Error {
				t.Errorf("again: %s %q %v, want rejected %q", again.Outcome, again.Error, err, a.Error)
			}
			if last, err := LastAttempt(s.cfg.Dir); err != nil || last == nil || last.Error != a.Error {
				t.Errorf("last.json: %+v %v, want the reason %q", last, err, a.Error)
			}
			if m.rejected != n+1 {
				t.Errorf("rejected counted %d times, want once", m.rejected-n)
			}
			if e := ev.last(); e.Reason != "RevisionRejected" || !strings.Contains(e.Message, "deployed revision "+c1[:12]+" stays") {
				t.Errorf("last event %+v", e)
			}
			if got := manifests(t, s)["web.yaml"]; got != service("web", "1") {
				t.Errorf("deployed web.yaml changed:\n%s", got)
			}
			if d, _ := Deployed(s.cfg.Dir); d == nil || d.Commit != c1 {
				t.Errorf("recorded revision %+v, want %s", d, c1)
			}
		})
	}
	// Signed by alice again: deployed (it descends from c1).
	c4 := r.Commit("web v4", alice, map[string]string{"web.yaml": service("web", "4")})
	sync1(t, s, OutcomeDeployed)
	if s.Deployed().Commit != c4 || manifests(t, s)["web.yaml"] != service("web", "4") {
		t.Fatalf("deployed %s, want %s", s.Deployed().Commit, c4)
	}
	want := "RevisionDeployed RevisionRejected RevisionRejected RevisionDeployed"
	if got := strings.Join(ev.reasons(), " "); got != want {
		t.Errorf("events %s, want %s", got, want)
	}
}

// A head that does not descend from the deployed commit (a force-push) is
// refused, unless AllowForcePush.
func TestSyncRefusesForcePush(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(map[bool]string{false: "refused", true: "allowed"}[allow], func(t *testing.T) {
			r := newRepo(t)
			c1 := r.Commit("one", "", map[string]string{"web.yaml": service("web", "1")})
			r.Commit("two", "", map[string]string{"web.yaml": service("web", "2")})
			s, ev, _ := newSource(t, r, func(c *Config) { c.AllowForcePush = allow })
			sync1(t, s, OutcomeDeployed)
			r.Git("reset", "--quiet", "--hard", c1)
			c3 := r.Commit("rewritten", "", map[string]string{"web.yaml": service("web", "3")})
			if !allow {
				a := sync1(t, s, OutcomeRejected)
				if !strings.Contains(a.Error, "does not descend") {
					t.Errorf("error %q", a.Error)
				}
				if manifests(t, s)["web.yaml"] != service("web", "2") {
					t.Error("deployed revision changed")
				}
				if e := ev.last(); e.Reason != "RevisionRejected" {
					t.Errorf("last event %+v", e)
				}
				return
			}
			sync1(t, s, OutcomeDeployed)
			if s.Deployed().Commit != c3 {
				t.Errorf("deployed %s, want %s", s.Deployed().Commit, c3)
			}
		})
	}
}

// A revision with one invalid manifest is not deployed at all, not even
// its valid files: the previous revision stays as one unit, and the event
// names the file by its repository path and line.
func TestSyncInvalidRevisionKeepsPreviousWhole(t *testing.T) {
	r := newRepo(t)
	r.Commit("one", "", map[string]string{"hosts/common/web.yaml": service("web", "1"), "hosts/common/db.yaml": service("db", "1")})
	s, ev, m := newSource(t, r, func(c *Config) { c.Paths = []string{"hosts/common"} })
	sync1(t, s, OutcomeDeployed)
	before := manifests(t, s)

	r.Commit("half broken", "", map[string]string{
		"hosts/common/web.yaml": service("web", "2"),
		"hosts/common/db.yaml":  "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: db}\nspec:\n  command: [\"relative\"]\n",
	})
	a := sync1(t, s, OutcomeInvalid)
	if !strings.Contains(a.Error, "hosts/common/db.yaml:5:") {
		t.Errorf("error does not name hosts/common/db.yaml:5: %s", a.Error)
	}
	if got := manifests(t, s); got["web.yaml"] != before["web.yaml"] || got["db.yaml"] != before["db.yaml"] {
		t.Errorf("deployed manifests changed: %v", got)
	}
	if e := ev.last(); e.Reason != "RevisionInvalid" || !strings.Contains(e.Message, "hosts/common/db.yaml:5:") {
		t.Errorf("last event %+v", e)
	}
	if m.rejected != 1 {
		t.Errorf("rejected %d, want 1", m.rejected)
	}
	// An empty manifest is invalid too (it would prune what it held).
	r.Commit("emptied", "", map[string]string{"hosts/common/db.yaml": "# nothing\n"})
	if a := sync1(t, s, OutcomeInvalid); !strings.Contains(a.Error, "hosts/common/db.yaml: holds no document") {
		t.Errorf("error %q", a.Error)
	}
	// Fixed: deployed.
	r.Commit("fixed", "", map[string]string{"hosts/common/db.yaml": service("db", "3")})
	sync1(t, s, OutcomeDeployed)
	if got := manifests(t, s); got["web.yaml"] != service("web", "2") || got["db.yaml"] != service("db", "3") {
		t.Errorf("deployed %v", got)
	}
}

// The paths are composed into one directory: a host's own path beside the
// common one, drop-in folders merged; a file given by two paths, a path
// missing from the revision and a symlink are errors of the revision.
func TestCompose(t *testing.T) {
	common := map[string]string{
		"hosts/common/web.yaml":        service("web", "c"),
		"hosts/common/web.d/10-a.yaml": "spec: {environment: {A: \"1\"}}\n",
		"hosts/h1/worker.yaml":         service("worker", "h1"),
		"hosts/h1/web.d/20-b.yaml":     "spec: {environment: {B: \"1\"}}\n",
		"hosts/h2/other.yaml":          service("other", "h2"),
		"README.md":                    "not a manifest path\n",
	}
	cases := []struct {
		name    string
		paths   []string
		extra   map[string]string
		symlink bool
		want    string // sorted files, or the error's substring
		invalid bool
	}{
		{name: "common and host", paths: []string{"hosts/common", "hosts/h1"}, want: "web.d/10-a.yaml web.d/20-b.yaml web.yaml worker.yaml"},
		{name: "trailing slash", paths: []string{"/hosts/common/", "hosts/h2"}, want: "other.yaml web.d/10-a.yaml web.yaml"},
		{name: "duplicate name", paths: []string{"hosts/common", "hosts/h1"}, extra: map[string]string{"hosts/h1/web.yaml": service("web", "h1")},
			invalid: true, want: "two files named web.yaml"},
		{name: "missing path", paths: []string{"hosts/common", "hosts/h9"}, invalid: true, want: "hosts/h9"},
		{name: "symlink", paths: []string{"hosts/common"}, symlink: true, invalid: true, want: "symlinks are not deployed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRepo(t)
			r.Write(common)
			r.Write(tc.extra)
			if tc.symlink {
				if err := os.Symlink("/etc/passwd", filepath.Join(r.Dir, "hosts/common/pw.yaml")); err != nil {
					t.Fatal(err)
				}
			}
			r.Commit("c", "", nil)
			s, _, _ := newSource(t, r, func(c *Config) { c.Paths = tc.paths })
			a, err := s.Sync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tc.invalid {
				if a.Outcome != OutcomeInvalid || !strings.Contains(a.Error, tc.want) {
					t.Fatalf("outcome %s %q, want invalid with %q", a.Outcome, a.Error, tc.want)
				}
				if _, err := os.Lstat(s.ManifestsDir()); !os.IsNotExist(err) {
					t.Errorf("manifests link exists after an invalid first revision: %v", err)
				}
				return
			}
			if a.Outcome != OutcomeDeployed {
				t.Fatalf("outcome %s %q", a.Outcome, a.Error)
			}
			var files []string
			for f := range manifests(t, s) {
				files = append(files, f)
			}
			if got := strings.Join(sorted(files), " "); got != tc.want {
				t.Errorf("files %s, want %s", got, tc.want)
			}
			// No directory but those the files are in (a path's own
			// directory is the top, not a folder of its name).
			ents, err := os.ReadDir(s.ManifestsDir() + "/")
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if e.IsDir() && !strings.HasSuffix(e.Name(), ".d") {
					t.Errorf("directory %s/ in the composed manifests", e.Name())
				}
			}
		})
	}
}

// A revision over the size cap is refused while git writes it: the agent
// never holds the archive whole (an archive of a 100 MiB file allocated
// ~100 MiB before the change).
func TestOversizedRevisionStreamed(t *testing.T) {
	r := newRepo(t)
	r.Write(map[string]string{"web.yaml": service("web", "1")})
	f, err := os.Create(filepath.Join(r.Dir, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(100 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.Commit("big", "", nil)
	s, _, _ := newSource(t, r, nil)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a, err := s.Sync(context.Background())
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if a.Outcome != OutcomeInvalid || !strings.Contains(a.Error, "more than") {
		t.Fatalf("outcome %s %q, want invalid: over the cap", a.Outcome, a.Error)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > maxRevisionBytes/2 {
		t.Errorf("the refused revision allocated %d MiB in the agent, want well under the %d MiB cap", alloc>>20, maxRevisionBytes>>20)
	}
}

func sorted(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// Only the current and the previous revision directories are kept; the
// link is always relative and names a complete revision.
func TestGarbageCollection(t *testing.T) {
	r := newRepo(t)
	s, _, _ := newSource(t, r, nil)
	var commits []string
	for i := range 4 {
		commits = append(commits, r.Commit("c", "", map[string]string{"web.yaml": service("web", string(rune('a'+i)))}))
		sync1(t, s, OutcomeDeployed)
	}
	ents, err := os.ReadDir(filepath.Join(s.cfg.Dir, revsDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || !strings.HasPrefix(strings.Join(names, " "), "") {
		t.Fatalf("revision dirs %v, want 2", names)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n[:12]] = true
	}
	if !have[commits[3][:12]] || !have[commits[2][:12]] {
		t.Errorf("kept %v, want %s and %s", names, commits[3][:12], commits[2][:12])
	}
	target, _ := os.Readlink(s.ManifestsDir())
	if filepath.IsAbs(target) || !strings.HasPrefix(target, revsDir+"/"+commits[3][:12]) {
		t.Errorf("link target %q", target)
	}
}

// A crash between materialising and the swap (the hook panics here, as a
// kill -9 would stop there) leaves the link on the previous revision; the
// next agent deploys the new one and clears the leftovers.
func TestCrashBeforeSwap(t *testing.T) {
	r := newRepo(t)
	r.Commit("one", "", map[string]string{"web.yaml": service("web", "1")})
	dir := filepath.Join(t.TempDir(), "git")
	s, _, _ := newSource(t, r, func(c *Config) { c.Dir = dir })
	sync1(t, s, OutcomeDeployed)
	c2 := r.Commit("two", "", map[string]string{"web.yaml": service("web", "2"), "db.yaml": service("db", "2")})
	crashing, _, _ := newSource(t, r, func(c *Config) { c.Dir = dir; c.BeforeSwap = func() { panic("crash") } })
	func() {
		defer func() { _ = recover() }()
		_, _ = crashing.Sync(context.Background())
		t.Fatal("hook did not run")
	}()
	// Also a stray temp dir and temp link, as a crash mid-materialise leaves.
	if err := os.MkdirAll(filepath.Join(dir, revsDir, tmpPrefix+"x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("revs/nowhere", filepath.Join(dir, tmpPrefix+ManifestsLink)); err != nil {
		t.Fatal(err)
	}
	again, _, _ := newSource(t, r, func(c *Config) { c.Dir = dir })
	if got := manifests(t, again); len(got) != 1 || got["web.yaml"] != service("web", "1") {
		t.Fatalf("after the crash: %v, want revision one whole", got)
	}
	sync1(t, again, OutcomeDeployed)
	if again.Deployed().Commit != c2 || len(manifests(t, again)) != 2 {
		t.Fatalf("deployed %s %v", again.Deployed().Commit, manifests(t, again))
	}
	if _, err := os.Stat(filepath.Join(dir, revsDir, tmpPrefix+"x")); !os.IsNotExist(err) {
		t.Errorf("leftover temp dir not removed: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, tmpPrefix+ManifestsLink)); !os.IsNotExist(err) {
		t.Errorf("leftover temp link not removed: %v", err)
	}
}

// A failed fetch keeps the deployed revision and counts an error.
func TestFetchErrorKeepsRevision(t *testing.T) {
	r := newRepo(t)
	r.Commit("one", "", map[string]string{"web.yaml": service("web", "1")})
	s, ev, m := newSource(t, r, nil)
	sync1(t, s, OutcomeDeployed)
	if err := os.Rename(r.Dir, r.Dir+".gone"); err != nil {
		t.Fatal(err)
	}
	defer os.Rename(r.Dir+".gone", r.Dir)
	sync1(t, s, OutcomeError)
	if m.errors != 1 || m.fetches != 2 {
		t.Errorf("fetches %d errors %d", m.fetches, m.errors)
	}
	if got := strings.Join(ev.reasons(), " "); got != "RevisionDeployed FetchFailed" {
		t.Errorf("events %s, want RevisionDeployed FetchFailed", got)
	}
	if manifests(t, s)["web.yaml"] != service("web", "1") {
		t.Error("deployed revision lost")
	}
}

// Local drop-in folders are copied into each composed revision, and a
// local edit composes the revision again.
func TestLocalDropIns(t *testing.T) {
	r := newRepo(t)
	r.Commit("one", "", map[string]string{"web.yaml": service("web", "1")})
	local := t.TempDir()
	if err := os.MkdirAll(filepath.Join(local, "web.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	drop := filepath.Join(local, "web.d", "50-local.yaml")
	if err := os.WriteFile(drop, []byte("spec: {environment: {LOCAL: \"1\"}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _, _ := newSource(t, r, func(c *Config) { c.LocalDropIns = local })
	sync1(t, s, OutcomeDeployed)
	if got := manifests(t, s)["web.d/50-local.yaml"]; !strings.Contains(got, "LOCAL") {
		t.Fatalf("local drop-in not composed: %q", got)
	}
	sync1(t, s, OutcomeUnchanged)
	if err := os.WriteFile(drop, []byte("spec: {environment: {LOCAL: \"2\"}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sync1(t, s, OutcomeDeployed)
	if got := manifests(t, s)["web.d/50-local.yaml"]; !strings.Contains(got, `"2"`) {
		t.Fatalf("local edit not composed: %q", got)
	}
	// A broken local drop-in makes the composed revision invalid.
	if err := os.WriteFile(drop, []byte("spec: {nope: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if a := sync1(t, s, OutcomeInvalid); !strings.Contains(a.Error, drop) {
		t.Errorf("error %q does not name %s", a.Error, drop)
	}
}

// Local drop-ins are read as Load reads a drop-in, with the agent's load
// options: a file or folder group or others may write fails the
// composition (the copy would be root's, passing the composed revision's
// own checks), naming the file, and the deployed revision stays. It is a
// failed fetch: counted, and a FetchFailed event names it.
func TestLocalDropInsChecked(t *testing.T) {
	r := newRepo(t)
	r.Commit("one", "", map[string]string{"web.yaml": service("web", "1")})
	local := t.TempDir()
	folder := filepath.Join(local, "web.d")
	if err := os.MkdirAll(folder, 0o755); err != nil {
		t.Fatal(err)
	}
	drop := filepath.Join(folder, "50-local.yaml")
	if err := os.WriteFile(drop, []byte("spec: {environment: {LOCAL: \"1\"}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, ev, m := newSource(t, r, func(c *Config) {
		c.LocalDropIns = local
		c.Load = desired.Options{OwnerUID: os.Geteuid(), Host: desired.Host{Name: "h1"}}
	})
	sync1(t, s, OutcomeDeployed)
	for _, tc := range []struct {
		name string
		path string
		mode os.FileMode
		ok   os.FileMode
		want string
	}{
		{"file writable by others", drop, 0o666, 0o644, "writable by group or others"},
		{"folder writable by others", folder, 0o777, 0o755, "writable by group or others"},
		{"top folder writable by group", local, 0o775, 0o755, "writable by group or others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(drop, []byte("spec: {command: [/bin/sh, -c, 'id > /tmp/pwned']}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(tc.path, tc.mode); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(tc.path, tc.ok)
			errs := m.errors
			a, err := s.Sync(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("Sync: outcome %s, error %v; want an error naming %s: %s", a.Outcome, err, tc.path, tc.want)
			}
			if m.errors != errs+1 {
				t.Errorf("fetch errors %d, want %d", m.errors, errs+1)
			}
			if e := ev.last(); e.Reason != "FetchFailed" || !strings.Contains(e.Message, tc.path) || !strings.Contains(e.Message, tc.want) {
				t.Errorf("last event %+v, want FetchFailed naming %s", e, tc.path)
			}
			if got := manifests(t, s)["web.d/50-local.yaml"]; !strings.Contains(got, "LOCAL") {
				t.Errorf("deployed drop-in replaced: %q", got)
			}
		})
	}
	// Trusted again: composed.
	sync1(t, s, OutcomeDeployed)
	if got := manifests(t, s)["web.d/50-local.yaml"]; !strings.Contains(got, "/bin/sh") {
		t.Errorf("trusted drop-in not composed: %q", got)
	}
}

func TestNextDelay(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		failures int
		j        float64
		want     time.Duration
	}{
		{30 * time.Second, 0, 0.5, 30 * time.Second},
		{30 * time.Second, 0, 0, 27 * time.Second},
		{30 * time.Second, 1, 0.5, time.Minute},
		{30 * time.Second, 3, 0.5, 4 * time.Minute},
		{30 * time.Second, 5, 0.5, MaxBackoff},
		{30 * time.Second, 60, 0.5, MaxBackoff},
		{time.Hour, 2, 0.5, time.Hour},
	} {
		if got := NextDelay(tc.interval, tc.failures, tc.j); got != tc.want {
			t.Errorf("NextDelay(%s, %d, %v) = %s, want %s", tc.interval, tc.failures, tc.j, got, tc.want)
		}
	}
}

// Run fetches at start and on a sync request, and wakes the loop after a
// deployment.
func TestRunSyncRequest(t *testing.T) {
	r := newRepo(t)
	r.Commit("one", "", map[string]string{"web.yaml": service("web", "1")})
	s, _, _ := newSource(t, r, func(c *Config) { c.Interval = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	woke := make(chan struct{}, 8)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func() { woke <- struct{}{} }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitWake := func() {
		t.Helper()
		select {
		case <-woke:
		case <-time.After(30 * time.Second):
			t.Fatal("no deployment")
		}
	}
	waitWake()
	c2 := r.Commit("two", "", map[string]string{"web.yaml": service("web", "2")})
	req, err := RequestSync(s.cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	waitWake()
	if d, _ := Deployed(s.cfg.Dir); d == nil || d.Commit != c2 {
		t.Fatalf("deployed %+v, want %s", d, c2)
	}
	if _, err := os.Stat(req); !os.IsNotExist(err) {
		t.Errorf("request file still there: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, _ := LastAttempt(s.cfg.Dir)
		if a != nil && a.Head == c2 && a.Outcome == OutcomeDeployed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("last.json %+v", a)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Checkout composes a commit the agent has not deployed, as it would.
func TestCheckout(t *testing.T) {
	alice := sshKey(t, "alice")
	r := newRepo(t)
	r.Commit("one", alice, map[string]string{"m/web.yaml": service("web", "1")})
	s, _, _ := newSource(t, r, func(c *Config) {
		c.Paths = []string{"m"}
		c.VerifySigners = allowedSigners(t, map[string]string{"alice@example.com": alice})
	})
	sync1(t, s, OutcomeDeployed)
	r.Git("checkout", "--quiet", "-b", "feature")
	c2 := r.Commit("unsigned feature", "", map[string]string{"m/db.yaml": service("db", "2")})
	rec, err := ReadRecord(s.cfg.Dir)
	if err != nil || rec == nil {
		t.Fatalf("record %v %v", rec, err)
	}
	into := filepath.Join(t.TempDir(), "rev")
	rev, verr, err := Checkout(context.Background(), s.cfg.Dir, rec, "feature", into, s.cfg.Load)
	if err != nil {
		t.Fatal(err)
	}
	if rev.Commit != c2 || verr == nil || !strings.Contains(verr.Error(), "not signed") {
		t.Errorf("rev %+v verr %v", rev, verr)
	}
	if _, err := os.Stat(filepath.Join(into, "db.yaml")); err != nil {
		t.Error(err)
	}
	// Nothing written to the mirror: the feature branch was fetched into
	// a temporary repository.
	g := &git{bin: "git", dir: filepath.Join(s.cfg.Dir, repoDir)}
	if _, err := g.run(context.Background(), "cat-file", "-e", c2); err == nil {
		t.Error("diff's checkout fetched into the agent's mirror")
	}
	// A commit the mirror has is found there.
	into2 := filepath.Join(t.TempDir(), "rev")
	if rev, _, err := Checkout(context.Background(), s.cfg.Dir, rec, "HEAD", into2, s.cfg.Load); err != nil || rev.Subject != "one" {
		t.Errorf("HEAD: %+v %v", rev, err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(into2), "fetch.git")); !os.IsNotExist(err) {
		t.Errorf("a temporary repository for a commit the mirror has: %v", err)
	}
	// What the agent would refuse is said, by repository path: an invalid
	// manifest (the whole revision), a history that does not descend from
	// the deployed commit.
	r.Commit("bad manifest", "", map[string]string{"m/bad.yaml": service("bad", "3") + "  bogus: 1\n"})
	_, verr, err = Checkout(context.Background(), s.cfg.Dir, rec, "feature", filepath.Join(t.TempDir(), "rev"), s.cfg.Load)
	if err != nil || verr == nil || !strings.Contains(verr.Error(), "m/bad.yaml") || !strings.Contains(verr.Error(), "bogus") || strings.Contains(verr.Error(), "does not descend") {
		t.Errorf("invalid manifest: verr %v, err %v", verr, err)
	}
	r.Git("checkout", "--quiet", "--orphan", "rewritten")
	r.Commit("rewritten", "", map[string]string{"m/web.yaml": service("web", "9")})
	_, verr, err = Checkout(context.Background(), s.cfg.Dir, rec, "rewritten", filepath.Join(t.TempDir(), "rev"), s.cfg.Load)
	if err != nil || verr == nil || !strings.Contains(verr.Error(), "does not descend from the deployed commit") {
		t.Errorf("rewritten history: verr %v, err %v", verr, err)
	}
}

// The token helper hands git the token from its file, and nothing else
// shows it: it is not in the helper's argv.
func TestTokenHelper(t *testing.T) {
	for _, tc := range []struct{ file, user, pass string }{
		{"s3cret\n", "x-access-token", "s3cret"},
		{"deploy:s3cret", "deploy", "s3cret"},
	} {
		f := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(f, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		g := &git{bin: "git", dir: t.TempDir(), creds: Credentials{TokenFile: f}}
		cmd := exec.Command("git", "credential", "fill")
		cmd.Env = g.env()
		cmd.Stdin = strings.NewReader("protocol=https\nhost=git.example.com\n\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git credential fill: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "username="+tc.user+"\n") || !strings.Contains(string(out), "password="+tc.pass+"\n") {
			t.Errorf("credential fill:\n%s", out)
		}
		for _, e := range g.env() {
			if strings.Contains(e, "s3cret") {
				t.Errorf("token in git's environment: %s", e)
			}
		}
	}
}

// A missing allowed-signers file is a local error, retried: the head is
// not refused for it, and is deployed once the file is there.
func TestMissingSignersFileIsAnError(t *testing.T) {
	alice := sshKey(t, "alice")
	r := newRepo(t)
	r.Commit("one", alice, map[string]string{"web.yaml": service("web", "1")})
	good := allowedSigners(t, map[string]string{"alice@example.com": alice})
	missing := filepath.Join(t.TempDir(), "allowed_signers")
	s, ev, m := newSource(t, r, func(c *Config) { c.VerifySigners = missing })
	a := sync1(t, s, OutcomeError)
	if m.rejected != 0 || strings.Join(ev.reasons(), " ") != "FetchFailed" || m.errors != 1 {
		t.Errorf("refused for a missing signers file: %d %v, %d fetch errors", m.rejected, ev.reasons(), m.errors)
	}
	if a.Head != "" {
		t.Errorf("head %s judged without the signers file", a.Head)
	}
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(missing, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sync1(t, s, OutcomeDeployed)
}

// Prime deploys the first revision (and records the attempt) before the
// loop's first pass; with a revision deployed it does nothing.
func TestPrime(t *testing.T) {
	r := newRepo(t)
	c1 := r.Commit("one", "", map[string]string{"web.yaml": service("web", "1")})
	s, _, m := newSource(t, r, nil)
	s.Prime(context.Background(), 30*time.Second)
	if d := s.Deployed(); d == nil || d.Commit != c1 || !s.primed {
		t.Fatalf("after Prime: %+v primed=%v", d, s.primed)
	}
	if a, _ := LastAttempt(s.cfg.Dir); a == nil || a.Outcome != OutcomeDeployed {
		t.Errorf("last attempt %+v", a)
	}
	s.Prime(context.Background(), 30*time.Second)
	if m.fetches != 1 {
		t.Errorf("%d fetches, want 1 (Prime with a revision deployed fetches nothing)", m.fetches)
	}
}

// A revision with an object the backend cannot honour (Config.Render
// refuses it: a setting the process backend cannot apply) is invalid on
// this host as a whole: no commit is deployed in part.
func TestSyncRevisionUnsupportedByBackendKeepsPreviousWhole(t *testing.T) {
	r := newRepo(t)
	r.Commit("one", "", map[string]string{"web.yaml": service("web", "1"), "db.yaml": service("db", "1")})
	render := func(o *desired.Object) ([]desired.UnitFile, error) {
		if o.Service != nil && o.Service.Environment["REV"] == "unsupported" {
			return nil, fmt.Errorf("%s: resources.memoryMax: %w", o.ID(), errUnsupportedForTest)
		}
		return desired.Render(o)
	}
	s, ev, _ := newSource(t, r, func(c *Config) { c.Render = render })
	sync1(t, s, OutcomeDeployed)
	before := manifests(t, s)
	r.Commit("half unsupported", "", map[string]string{"web.yaml": service("web", "2"), "db.yaml": service("db", "unsupported")})
	a := sync1(t, s, OutcomeInvalid)
	if !strings.Contains(a.Error, "db.yaml: Service/db: ") || !strings.Contains(a.Error, "not supported here") {
		t.Errorf("error %q", a.Error)
	}
	if got := manifests(t, s); got["web.yaml"] != before["web.yaml"] {
		t.Errorf("web deployed from a half-unsupported commit: %v", got)
	}
	if e := ev.last(); e.Reason != "RevisionInvalid" {
		t.Errorf("last event %+v", e)
	}
}

var errUnsupportedForTest = errors.New("not supported here")
