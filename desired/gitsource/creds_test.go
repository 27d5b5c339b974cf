package gitsource

import (
	"context"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An https-style fetch with --token-file: git's smart HTTP server
// (git http-backend behind Go's CGI handler) demands basic auth; the token
// from the file gets in, a wrong one does not (a fetch error, nothing
// deployed).
func TestFetchWithTokenFile(t *testing.T) {
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git http-backend (Debian package git): %v", err)
	}
	r := newRepo(t)
	r.Commit("one", "", map[string]string{"web.yaml": service("web", "1")})
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(r.Dir), "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		user, pass, ok := req.BasicAuth()
		if !ok || user != "x-access-token" || pass != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, req)
	}))
	defer srv.Close()
	url := srv.URL + "/" + filepath.Base(r.Dir)
	for _, tc := range []struct {
		token string
		want  Outcome
	}{
		{"wrong\n", OutcomeError},
		{"s3cret\n", OutcomeDeployed},
	} {
		f := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(f, []byte(tc.token), 0o600); err != nil {
			t.Fatal(err)
		}
		s, _, _ := newSource(t, r, func(c *Config) { c.Repo = url; c.Credentials.TokenFile = f })
		a, err := s.Sync(context.Background())
		if a.Outcome != tc.want {
			t.Fatalf("token %q: outcome %s (%v), want %s", tc.token, a.Outcome, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), strings.TrimSpace(tc.token)) {
			t.Errorf("the token shows in the error: %v", err)
		}
	}
}

// --ssh-key reaches ssh through GIT_SSH_COMMAND (a fake ssh on PATH
// records its arguments) as the path of the agent's private copy of it,
// and a path is all that is passed.
func TestSSHKeyCommand(t *testing.T) {
	bin := t.TempDir()
	log := filepath.Join(t.TempDir(), "argv")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + log + "\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "ssh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	key := filepath.Join(t.TempDir(), "deploy key")
	known := filepath.Join(t.TempDir(), "known_hosts")
	for _, f := range []string{key, known} {
		if err := os.WriteFile(f, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := newRepo(t)
	s, _, m := newSource(t, r, func(c *Config) {
		c.Repo = "ssh://git@git.example.com/fleet.git"
		c.Credentials = Credentials{SSHKey: key, SSHKnownHosts: known}
	})
	// ssh is given the agent's checked copies (privateCopies).
	priv := filepath.Join(s.cfg.Dir, privateDir)
	if a, err := s.Sync(context.Background()); a.Outcome != OutcomeError || err == nil {
		t.Fatalf("outcome %s %v, want a fetch error", a.Outcome, err)
	}
	argv, err := os.ReadFile(log)
	if err != nil {
		t.Fatalf("ssh not run: %v", err)
	}
	for _, want := range []string{"-i\n" + filepath.Join(priv, privSSHKey) + "\n", "IdentitiesOnly=yes", "BatchMode=yes",
		"UserKnownHostsFile=" + filepath.Join(priv, privKnownHosts), "git@git.example.com"} {
		if !strings.Contains(string(argv), want) {
			t.Errorf("ssh argv lacks %q:\n%s", want, argv)
		}
	}
	if m.errors != 1 {
		t.Errorf("fetch errors %d, want 1", m.errors)
	}
}
