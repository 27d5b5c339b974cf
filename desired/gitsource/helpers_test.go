package gitsource

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile"
)

// repo is a working repository in a temp dir that tests commit to.
type repo struct {
	t   *testing.T
	dir string
}

func gitEnv() []string {
	return append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C",
		"GIT_AUTHOR_NAME=Alice", "GIT_AUTHOR_EMAIL=alice@example.com", "GIT_COMMITTER_NAME=Alice", "GIT_COMMITTER_EMAIL=alice@example.com")
}

func newRepo(t *testing.T) *repo {
	t.Helper()
	r := &repo{t: t, dir: t.TempDir()}
	r.git("init", "--quiet", "--initial-branch=main")
	return r
}

func (r *repo) git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = r.dir, gitEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// write sets files (path → content; "" removes the file).
func (r *repo) write(files map[string]string) {
	r.t.Helper()
	for p, c := range files {
		full := filepath.Join(r.dir, p)
		if c == "" {
			if err := os.Remove(full); err != nil {
				r.t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
}

// commit commits files, signed with key (a private key file) unless "".
func (r *repo) commit(msg, key string, files map[string]string) string {
	r.t.Helper()
	r.write(files)
	r.git("add", "-A")
	if key == "" {
		r.git("commit", "--quiet", "--allow-empty", "-m", msg)
	} else {
		r.git("-c", "gpg.format=ssh", "-c", "user.signingkey="+key+".pub", "commit", "--quiet", "--allow-empty", "-S", "-m", msg)
	}
	return r.git("rev-parse", "HEAD")
}

// sshKey makes an ed25519 key pair and returns the private key's path.
func sshKey(t *testing.T, name string) string {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Fatalf("ssh-keygen (Debian package openssh-client) is needed: %v", err)
	}
	key := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return key
}

// allowedSigners writes an allowed-signers file listing principal → key.
func allowedSigners(t *testing.T, keys map[string]string) string {
	t.Helper()
	var b strings.Builder
	for principal, key := range keys {
		pub, err := os.ReadFile(key + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(principal + " " + string(pub))
	}
	f := filepath.Join(t.TempDir(), "allowed_signers")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

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
	cfg := Config{Repo: "file://" + r.dir, Ref: "main", Dir: filepath.Join(t.TempDir(), "git"),
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
