package gitsource

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"resil.dev/resil/desired"
)

// The allowed-signers file and the credential files are read as a
// manifest is (the agent's load options): one that group or others may
// write, or in a folder they may write, fails the fetch with an error
// naming it (counted, a FetchFailed event) and the deployed revision
// stays. git is handed the agent's 0600 copy, never the original.
func TestSourceFilesChecked(t *testing.T) {
	alice := sshKey(t, "alice")
	r := newRepo(t)
	c1 := r.Commit("one", alice, map[string]string{"web.yaml": service("web", "1")})
	files := map[string]string{}
	for _, name := range []string{"allowed_signers", "deploy_key", "known_hosts", "token"} {
		dir := t.TempDir()
		files[name] = filepath.Join(dir, name)
		body := "x\n"
		if name == "allowed_signers" {
			b, err := os.ReadFile(allowedSigners(t, map[string]string{"alice@example.com": alice}))
			if err != nil {
				t.Fatal(err)
			}
			body = string(b)
		}
		if err := os.WriteFile(files[name], []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, ev, m := newSource(t, r, func(c *Config) {
		c.VerifySigners = files["allowed_signers"]
		// file:// never uses them, but they are read and copied all the same.
		c.Credentials = Credentials{SSHKey: files["deploy_key"], SSHKnownHosts: files["known_hosts"], TokenFile: files["token"]}
		c.Load = desired.Options{OwnerUID: os.Geteuid(), Host: desired.Host{Name: "h1"}}
	})
	sync1(t, s, OutcomeDeployed)
	priv := filepath.Join(s.cfg.Dir, privateDir)
	for got, want := range map[string]string{
		s.git.creds.SSHKey:        filepath.Join(priv, privSSHKey),
		s.git.creds.SSHKnownHosts: filepath.Join(priv, privKnownHosts),
		s.git.creds.TokenFile:     filepath.Join(priv, privToken),
	} {
		if got != want {
			t.Errorf("git is given %s, want the private copy %s", got, want)
		}
	}
	for _, name := range []string{privSigners, privSSHKey, privKnownHosts, privToken} {
		if st, err := os.Stat(filepath.Join(priv, name)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("private copy %s: %v %v", name, st, err)
		}
	}
	if st, err := os.Stat(priv); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("private directory: %v %v", st, err)
	}
	mallory := sshKey(t, "mallory")
	for _, tc := range []struct {
		name, file string
		folder     bool
	}{
		{"allowed signers writable by others", "allowed_signers", false},
		{"allowed signers' folder writable by others", "allowed_signers", true},
		{"ssh key writable by others", "deploy_key", false},
		{"known_hosts writable by others", "known_hosts", false},
		{"token writable by others", "token", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, ok := files[tc.file], os.FileMode(0o644)
			if tc.folder {
				path, ok = filepath.Dir(path), 0o755
			}
			if err := os.Chmod(path, 0o777); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(path, ok)
			// What a local user would do through the open file: add their
			// key, then commit as themselves.
			if tc.file == "allowed_signers" {
				orig, err := os.ReadFile(files[tc.file])
				if err != nil {
					t.Fatal(err)
				}
				defer os.WriteFile(files[tc.file], orig, 0o644)
				pub, err := os.ReadFile(mallory + ".pub")
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(files[tc.file], append(orig, "mallory@example.com "+string(pub)...), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r.Commit("mallory's", mallory, map[string]string{"web.yaml": service("web", "pwned")})
			errs, n := m.errors, len(ev.reasons())
			a, err := s.Sync(context.Background())
			if a.Outcome != OutcomeError || err == nil || !strings.Contains(err.Error(), files[tc.file]) ||
				!strings.Contains(err.Error(), "writable by group or others") {
				t.Fatalf("Sync: outcome %s, error %v; want an error naming %s: writable by group or others", a.Outcome, err, files[tc.file])
			}
			if m.errors != errs+1 {
				t.Errorf("fetch errors %d, want %d", m.errors, errs+1)
			}
			if got := ev.reasons(); len(got) != n+1 || got[n] != "FetchFailed" || !strings.Contains(ev.last().Message, "deployed revision "+c1[:12]+" stays") {
				t.Errorf("events %v, last %+v; want one FetchFailed", got[n:], ev.last())
			}
			if d := s.Deployed(); d == nil || d.Commit != c1 || manifests(t, s)["web.yaml"] != service("web", "1") {
				t.Errorf("deployed revision changed: %+v", d)
			}
			r.Git("reset", "--quiet", "--hard", "HEAD~1")
		})
	}
	// Trusted again: fetched, unchanged; the FetchFailed streak ends.
	sync1(t, s, OutcomeUnchanged)
	if s.failed != "" {
		t.Errorf("failure kept after a good attempt: %q", s.failed)
	}
	// A credential no longer configured loses its copy.
	s.cfg.Credentials.TokenFile = ""
	sync1(t, s, OutcomeUnchanged)
	if _, err := os.Stat(filepath.Join(priv, privToken)); !os.IsNotExist(err) {
		t.Errorf("token copy kept: %v", err)
	}
}

// The same failure again is counted on every attempt but recorded as an
// event once; a new failure is recorded again.
func TestFetchFailedEventOncePerFailure(t *testing.T) {
	r := newRepo(t)
	r.Commit("one", "", map[string]string{"web.yaml": service("web", "1")})
	missing := filepath.Join(t.TempDir(), "known_hosts")
	s, ev, m := newSource(t, r, func(c *Config) { c.Credentials.SSHKnownHosts = missing })
	sync1(t, s, OutcomeError)
	sync1(t, s, OutcomeError)
	if m.errors != 2 || strings.Join(ev.reasons(), " ") != "FetchFailed" {
		t.Fatalf("errors %d, events %v; want 2 and one FetchFailed", m.errors, ev.reasons())
	}
	if e := ev.last(); !strings.Contains(e.Message, missing) || !strings.Contains(e.Message, "no revision deployed yet") {
		t.Errorf("event %+v", e)
	}
	if err := os.WriteFile(missing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sync1(t, s, OutcomeDeployed)
	if err := os.Remove(missing); err != nil {
		t.Fatal(err)
	}
	sync1(t, s, OutcomeError)
	if got := strings.Join(ev.reasons(), " "); got != "FetchFailed RevisionDeployed FetchFailed" {
		t.Errorf("events %s", got)
	}
}
