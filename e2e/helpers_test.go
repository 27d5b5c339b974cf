package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
)

var agentDir string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "resil-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		build := exec.Command("go", "build", "-o", filepath.Join(dir, "reconciler"), "resil.dev/resil/cmd/reconciler")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build reconciler:", err)
			return 1
		}
		// Readable by the unprivileged user of TestDiffAsNonRoot.
		if err := os.Chmod(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		agentDir = dir
		return m.Run()
	}()
	os.Exit(code)
}

const (
	agentBin     = "/opt/resil/reconciler"
	hostMount    = "/srv/resil"
	manifestsDir = "/srv/resil/m"
)

// env is one sandboxed systemd with the agent binary and a manifests
// directory that the test edits from the host side.
type env struct {
	t    *testing.T
	sb   *sandbox.Sandbox
	host string // host directory bound at /srv/resil
	ctx  context.Context
	// agentEnv is added to the environment of agents launched by
	// launchAgent (the benchmarks: RESIL_DEBUG_PPROF, GODEBUG).
	agentEnv []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	host := t.TempDir()
	if err := os.Mkdir(filepath.Join(host, "m"), 0o755); err != nil {
		t.Fatal(err)
	}
	sb := sandbox.New(t, sandbox.Options{Binds: []sandbox.Bind{
		{Host: agentDir, Target: "/opt/resil", ReadOnly: true},
		{Host: host, Target: hostMount},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	return &env{t: t, sb: sb, host: host, ctx: ctx}
}

// write puts a manifest (relative to the manifests dir) in place atomically.
func (e *env) write(rel, content string) {
	e.t.Helper()
	p := filepath.Join(e.host, "m", rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(p), ".tmp-"+filepath.Base(p))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) remove(rel string) {
	e.t.Helper()
	if err := os.Remove(filepath.Join(e.host, "m", rel)); err != nil {
		e.t.Fatal(err)
	}
}

// reconciler runs the CLI inside the sandbox and returns its stdout, stderr
// and exit code.
func (e *env) reconciler(args ...string) (string, string, int) {
	e.t.Helper()
	full := append(args, "--backend", "systemd", "--state-dir", "/var/lib/resil", "--log-format", "console")
	if !hasFlag(args, "--manifests") {
		full = append(full, "--manifests", manifestsDir)
	}
	return runCLI(e.t, e.sb.Command(e.ctx, agentBin, full...))
}

// runCLI runs cmd (a one-shot reconciler command) and returns its stdout,
// stderr and exit code; it fails t only when cmd could not run at all.
func runCLI(t *testing.T, cmd *exec.Cmd) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return out.String(), errb.String(), code
}

func hasFlag(args []string, f string) bool {
	for _, a := range args {
		if a == f || strings.HasPrefix(a, f+"=") {
			return true
		}
	}
	return false
}

// apply runs one pass and fails the test unless it exits with want.
func (e *env) apply(want int) string {
	e.t.Helper()
	out, errOut, code := e.reconciler("apply")
	if code != want {
		e.t.Fatalf("apply exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, want, out, errOut)
	}
	return out
}

func (e *env) show(unit string, props ...string) map[string]string {
	e.t.Helper()
	m, err := e.sb.Show(e.ctx, unit, props...)
	if err != nil {
		e.t.Fatalf("show %s: %v", unit, err)
	}
	return m
}

func (e *env) prop(unit, prop string) string { return e.show(unit, prop)[prop] }

func (e *env) systemctl(args ...string) string {
	e.t.Helper()
	out, err := e.sb.Systemctl(e.ctx, args...)
	if err != nil {
		e.t.Fatalf("systemctl %v: %v", args, err)
	}
	return out
}

// eventually polls cond until it holds or the deadline passes.
func (e *env) eventually(what string, timeout time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// agent is a background `reconciler run` inside the sandbox.
type agent struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []map[string]any
	raw  bytes.Buffer
	done chan struct{}
}

func (e *env) startAgent(extra ...string) *agent {
	e.t.Helper()
	args := append([]string{"run", "--backend", "systemd", "--state-dir", "/var/lib/resil", "--resync", "2s", "--settle", "50ms",
		"--log-level", "debug"}, extra...)
	if !hasFlag(extra, "--manifests") {
		args = append(args, "--manifests", manifestsDir)
	}
	a := e.launchAgent(e.ctx, args)
	e.t.Cleanup(func() {
		e.stopAgent(a, 10*time.Second)
		if e.t.Failed() {
			e.t.Logf("agent output:\n%s", a.output())
		}
	})
	return a
}

// launchAgent starts the agent binary in the sandbox with args under ctx;
// until it exits, its output goes to a.raw and its JSON log lines to
// a.logs. The caller stops it (stopAgent).
func (e *env) launchAgent(ctx context.Context, args []string) *agent {
	e.t.Helper()
	cmd := e.sb.Command(ctx, agentBin, args...)
	cmd.Env = append(cmd.Env, e.agentEnv...)
	pr, pw, err := os.Pipe()
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stderr = pw
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	pw.Close()
	a := &agent{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			var m map[string]any
			a.mu.Lock()
			a.raw.Write(line)
			a.raw.WriteByte('\n')
			if json.Unmarshal(line, &m) == nil {
				a.logs = append(a.logs, m)
			}
			a.mu.Unlock()
		}
	}()
	return a
}

// agentPID reads the agent's PID (in the sandbox's PID namespace) from its
// single-instance lock file.
func (e *env) agentPID() string {
	data, err := e.sb.ReadFile("/var/lib/resil/agent.lock")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// stopAgent sends SIGTERM to the agent inside the sandbox (nsenter does not
// forward signals to its child), then SIGKILL after timeout.
func (e *env) stopAgent(a *agent, timeout time.Duration) {
	select {
	case <-a.done:
		_ = a.cmd.Wait()
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if pid := e.agentPID(); pid != "" {
		_, _ = e.sb.Run(ctx, "/bin/kill", "-TERM", pid)
		select {
		case <-a.done:
		case <-time.After(timeout):
			_, _ = e.sb.Run(ctx, "/bin/kill", "-KILL", pid)
		}
	}
	select {
	case <-a.done:
	case <-time.After(timeout):
		_ = a.cmd.Process.Kill()
	}
	_ = a.cmd.Wait()
}

func (a *agent) output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.raw.String()
}

// events returns the agent's recorded events (log lines with msg "event").
func (a *agent) events() []map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []map[string]any
	for _, m := range a.logs {
		if m["msg"] == "event" {
			out = append(out, m)
		}
	}
	return out
}

// hasEvent reports whether an event with the reason exists whose message
// contains substr.
func (a *agent) hasEvent(reason, substr string) bool {
	for _, ev := range a.events() {
		if ev["reason"] == reason && strings.Contains(fmt.Sprint(ev["message"]), substr) {
			return true
		}
	}
	return false
}

func (a *agent) countLogs(msg string) int { return a.countLogsBy("", msg) }

// countLogsBy counts log lines with msg from logger ("" for any logger).
func (a *agent) countLogsBy(logger, msg string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, m := range a.logs {
		if m["msg"] == msg && (logger == "" || m["logger"] == logger) {
			n++
		}
	}
	return n
}

// countLines counts output lines starting with prefix.
func countLines(out, substr string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}
