package gitsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// Credentials name files, never values: a deploy key for ssh URLs and a
// token for https URLs.
type Credentials struct {
	// SSHKey is a private key file (GIT_SSH_COMMAND ssh -i FILE).
	SSHKey string
	// SSHKnownHosts is a known_hosts file (default: ssh's own).
	SSHKnownHosts string
	// TokenFile holds a token (first line), sent as the password of HTTP
	// basic auth by a credential helper; the user name is
	// "x-access-token" unless the line is USER:TOKEN.
	TokenFile string
}

// tokenHelper is the credential helper git runs for https: it reads the
// token file named by RESIL_GIT_TOKEN_FILE (the token never appears in an
// argv or in git's environment). It answers only "get".
const tokenHelper = `!f() { test "$1" = get || exit 0; IFS= read -r t < "$RESIL_GIT_TOKEN_FILE" || test -n "$t" || exit 1; ` +
	`case "$t" in *:*) u="${t%%:*}"; t="${t#*:}";; *) u=x-access-token;; esac; ` +
	`printf 'username=%s\npassword=%s\n' "$u" "$t"; }; f`

// git runs the git binary on one repository with a fixed environment.
type git struct {
	bin   string
	dir   string // GIT_DIR
	creds Credentials
}

func (g *git) env() []string {
	env := []string{
		"GIT_DIR=" + g.dir,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ASKPASS=/bin/false",
		"SSH_ASKPASS=/bin/false",
		"LC_ALL=C",
		"PATH=" + os.Getenv("PATH"),
	}
	if h := os.Getenv("HOME"); h != "" {
		env = append(env, "HOME="+h)
	}
	ssh := "ssh -o BatchMode=yes"
	if g.creds.SSHKey != "" {
		ssh += " -o IdentitiesOnly=yes -i " + shellQuote(g.creds.SSHKey)
	}
	if g.creds.SSHKnownHosts != "" {
		ssh += " -o UserKnownHostsFile=" + shellQuote(g.creds.SSHKnownHosts) + " -o StrictHostKeyChecking=yes"
	}
	env = append(env, "GIT_SSH_COMMAND="+ssh)
	// Config through the environment, never argv: git's automatic gc runs
	// in the foreground (a detached one would outlive the command), and
	// the token's credential helper.
	cfg := [][2]string{{"gc.autoDetach", "false"}, {"maintenance.autoDetach", "false"}}
	if g.creds.TokenFile != "" {
		env = append(env, "RESIL_GIT_TOKEN_FILE="+g.creds.TokenFile)
		cfg = append(cfg, [2]string{"credential.helper", tokenHelper})
	}
	env = append(env, fmt.Sprintf("GIT_CONFIG_COUNT=%d", len(cfg)))
	for i, kv := range cfg {
		env = append(env, fmt.Sprintf("GIT_CONFIG_KEY_%d=%s", i, kv[0]), fmt.Sprintf("GIT_CONFIG_VALUE_%d=%s", i, kv[1]))
	}
	return env
}

// shellQuote quotes s for sh (GIT_SSH_COMMAND is run by a shell).
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// gitError is a failed git command: its arguments (never a credential) and
// its standard error.
type gitError struct {
	args   []string
	stderr string
	err    error
}

func (e *gitError) Error() string {
	msg := strings.TrimSpace(e.stderr)
	if msg == "" {
		msg = e.err.Error()
	}
	return fmt.Sprintf("git %s: %s", strings.Join(e.args, " "), msg)
}

func (e *gitError) Unwrap() error { return e.err }

// run runs git with args and returns its standard output.
func (g *git) run(ctx context.Context, args ...string) ([]byte, error) {
	out, _, err := g.run2(ctx, args...)
	return out, err
}

// run2 runs git with args and returns its standard output and error.
func (g *git) run2(ctx context.Context, args ...string) ([]byte, string, error) {
	cmd := exec.CommandContext(ctx, g.bin, args...)
	cmd.Env = g.env()
	cmd.Dir = g.dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("git %s: %w", args[0], ctx.Err())
		}
		return out.Bytes(), errb.String(), &gitError{args: args, stderr: errb.String(), err: err}
	}
	return out.Bytes(), errb.String(), nil
}

// stream runs git with args and hands its standard output to read as it
// comes, so a large output is never held whole. An error from read stops
// git (killed) and is returned as it is; otherwise git's own failure is
// returned (a *gitError with its standard error), then read's. Standard
// error is kept up to 64 KiB.
func (g *git) stream(ctx context.Context, read func(io.Reader) error, args ...string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.bin, args...)
	cmd.Env = g.env()
	cmd.Dir = g.dir
	errb := &limitedBuffer{max: 64 << 10}
	cmd.Stderr = errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("git %s: %w", args[0], err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("git %s: %w", args[0], err)
	}
	rerr := read(out)
	if rerr != nil {
		cancel() // git may be blocked writing what read no longer takes
	} else {
		// Drain what read left (trailing padding), so git is not stopped
		// by a closed pipe before it exits.
		_, _ = io.Copy(io.Discard, out)
	}
	werr := cmd.Wait()
	switch {
	case rerr != nil:
		return rerr
	case werr != nil && ctx.Err() != nil:
		return fmt.Errorf("git %s: %w", args[0], ctx.Err())
	case werr != nil:
		return &gitError{args: args, stderr: errb.String(), err: werr}
	}
	return nil
}

// limitedBuffer keeps the first max bytes written to it and drops the rest.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// exitCode is git's exit status in err, or -1.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// ensure creates the bare repository if it does not exist yet.
func (g *git) ensure(ctx context.Context) error {
	if st, err := os.Stat(g.dir + "/HEAD"); err == nil && st.Mode().IsRegular() {
		return nil
	}
	if err := os.MkdirAll(g.dir, 0o700); err != nil {
		return fmt.Errorf("git repository: %w", err)
	}
	cmd := exec.CommandContext(ctx, g.bin, "init", "--bare", "--quiet", g.dir)
	cmd.Env = g.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git init %s: %w: %s", g.dir, err, bytes.TrimSpace(out))
	}
	return nil
}
