package gitsource

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/desired"
	"resil.dev/resil/desired/gitsource/gittest"
	"resil.dev/resil/reconcile"
)

// repo is the shared test repository (gittest.Repo).
type repo = gittest.Repo

func newRepo(t *testing.T) *repo { return gittest.New(t) }

var (
	sshKey         = gittest.SSHKey
	allowedSigners = gittest.AllowedSigners
)

func service(name, marker string) string {
	return "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: " + name + "}\nspec:\n  command: [\"/bin/sleep\", \"infinity\"]\n  environment: {REV: \"" + marker + "\"}\n"
}

// events records events for tests.
type events struct {
	mu  sync.Mutex
	evs []reconcile.Event
}

func (e *events) Record(ev reconcile.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}

func (e *events) reasons() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.evs {
		out = append(out, string(ev.Reason))
	}
	return out
}

func (e *events) last() reconcile.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.evs) == 0 {
		return reconcile.Event{}
	}
	return e.evs[len(e.evs)-1]
}

// counting is a Metrics that counts.
type counting struct {
	mu                        sync.Mutex
	fetches, errors, rejected int
	revision                  string
}

func (c *counting) Fetched(_ time.Time, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fetches++
	if err != nil {
		c.errors++
	}
}

func (c *counting) Deployed(_ string, r Revision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.revision = r.Commit
}

func (c *counting) Rejected(string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rejected++
}

// newSource returns a source on r with a fresh state directory.
func newSource(t *testing.T, r *repo, mod func(*Config)) (*Source, *events, *counting) {
	t.Helper()
	ev, m := &events{}, &counting{}
	cfg := Config{Repo: "file://" + r.Dir, Ref: "main", Dir: filepath.Join(t.TempDir(), "git"),
		Load: desired.Options{Insecure: true, Host: desired.Host{Name: "h1"}}, Events: ev, Metrics: m, Log: zaptest.NewLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, ev, m
}

func sync1(t *testing.T, s *Source, want Outcome) Attempt {
	t.Helper()
	a, err := s.Sync(context.Background())
	if err != nil && want != OutcomeError {
		t.Fatalf("Sync: %v", err)
	}
	if a.Outcome != want {
		t.Fatalf("Sync: outcome %s (%s), want %s", a.Outcome, a.Error, want)
	}
	return a
}

// manifests reads the deployed manifests directory: relative file → content.
func manifests(t *testing.T, s *Source) map[string]string {
	t.Helper()
	out := map[string]string{}
	root := s.ManifestsDir()
	err := filepath.WalkDir(root+"/", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root+"/", p)
		out[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
