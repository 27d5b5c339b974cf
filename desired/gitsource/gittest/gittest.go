// Package gittest is test support for the git source: a working
// repository in a temp dir that tests commit to (signed or not), SSH
// signing keys and allowed-signers files. The gitsource unit tests and the
// e2e tests share it.
package gittest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"resil.dev/resil/e2e/sandbox"
)

// Repo is a working repository in a temp dir.
type Repo struct {
	t   testing.TB
	Dir string
}

// Env is the environment git runs with in tests: no user or system
// config, a fixed author and committer.
func Env() []string {
	return append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C",
		"GIT_AUTHOR_NAME=Alice", "GIT_AUTHOR_EMAIL=alice@example.com", "GIT_COMMITTER_NAME=Alice", "GIT_COMMITTER_EMAIL=alice@example.com")
}

// New makes an empty repository on branch main. A missing git or
// ssh-keygen goes through sandbox.Missing.
func New(t testing.TB) *Repo {
	t.Helper()
	for _, bin := range []string{"git", "ssh-keygen"} {
		if _, err := exec.LookPath(bin); err != nil {
			sandbox.Missing(t, "%s (Debian packages git, openssh-client; scripts/test-deps.sh installs them)", bin)
		}
	}
	r := &Repo{t: t, Dir: t.TempDir()}
	r.Git("init", "--quiet", "--initial-branch=main")
	return r
}

// Git runs git in the repository and returns its trimmed output.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = r.Dir, Env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// URL is the repository's file:// URL.
func (r *Repo) URL() string { return "file://" + r.Dir }

// Write sets files (path → content; "" removes the file, if there).
func (r *Repo) Write(files map[string]string) {
	r.t.Helper()
	for p, c := range files {
		full := filepath.Join(r.Dir, p)
		if c == "" {
			if err := os.Remove(full); err != nil && !os.IsNotExist(err) {
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

// Commit writes files and commits everything, signed with key (a private
// key file) unless key is "", and returns the commit's hash.
func (r *Repo) Commit(msg, key string, files map[string]string) string {
	r.t.Helper()
	r.Write(files)
	r.Git("add", "-A")
	if key == "" {
		r.Git("commit", "--quiet", "--allow-empty", "-m", msg)
	} else {
		r.Git("-c", "gpg.format=ssh", "-c", "user.signingkey="+key+".pub", "commit", "--quiet", "--allow-empty", "-S", "-m", msg)
	}
	return r.Git("rev-parse", "HEAD")
}

// SSHKey makes an ed25519 key pair and returns the private key's path.
func SSHKey(t testing.TB, name string) string {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		sandbox.Missing(t, "ssh-keygen (Debian package openssh-client; scripts/test-deps.sh installs it)")
	}
	key := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return key
}

// AllowedSigners writes an allowed-signers file listing principal → key
// (a private key file; its .pub is listed).
func AllowedSigners(t testing.TB, keys map[string]string) string {
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
