package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"resil.dev/resil/internal/syncbuf"
)

// procAgent is `reconciler run --backend process` on the host (no systemd
// needed): the built-in supervisor, as on a container or CI machine.
type procAgent struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan error
}

func startProcAgent(t *testing.T, manifests, state string, extra ...string) *procAgent {
	t.Helper()
	args := append([]string{"run", "--backend", "process", "--manifests", manifests, "--state-dir", state,
		"--owner-check", "off", "--settle", "20ms", "--resync", "1s", "--log-format", "console"}, extra...)
	cmd := exec.Command(filepath.Join(agentDir, "reconciler"), args...)
	out := new(syncbuf.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &procAgent{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { a.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-a.done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-a.done
			}
		}
		if t.Failed() {
			t.Logf("agent output:\n%s", out.String())
		}
	})
	return a
}

// procDirs makes a test's directory with an empty manifests dir m and
// the path of a state dir for a process-backend agent.
func procDirs(t *testing.T) (dir, m, state string) {
	t.Helper()
	dir = t.TempDir()
	m, state = filepath.Join(dir, "m"), filepath.Join(dir, "state")
	if err := os.MkdirAll(m, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, m, state
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// Crash-only agent: kill -9 the agent, restart it: the workload's PID is
// unchanged and nothing runs twice; then SIGTERM with --stop-on-exit stops it.
func TestProcessBackendAdoptsAfterKill9(t *testing.T) {
	dir := t.TempDir()
	m, state, runs := filepath.Join(dir, "m"), filepath.Join(dir, "state"), filepath.Join(dir, "runs")
	if err := os.MkdirAll(m, 0o755); err != nil {
		t.Fatal(err)
	}
	manifest := fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: sleeper}
spec:
  command: ["/bin/sh", "-c", "echo $$ >> %s; exec sleep infinity"]
  restart: {policy: always, delay: 100ms}
`, runs)
	if err := os.WriteFile(filepath.Join(m, "sleeper.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	readRuns := func() []string {
		data, _ := os.ReadFile(runs)
		return strings.Fields(string(data))
	}
	a1 := startProcAgent(t, m, state)
	waitFor(t, "the service's first run", 30*time.Second, func() bool { return len(readRuns()) == 1 })
	pid, _ := strconv.Atoi(readRuns()[0])
	if err := a1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a1.done
	if !alive(pid) {
		t.Fatalf("workload %d died with the agent", pid)
	}
	a2 := startProcAgent(t, m, state, "--stop-on-exit")
	waitFor(t, "second agent's first pass", 30*time.Second, func() bool { return strings.Contains(a2.out.String(), "first pass done") })
	// A few passes later: still the same single process, and the new agent
	// never mistook the adopted process for a stopped one.
	time.Sleep(2 * time.Second)
	if strings.Contains(a2.out.String(), "StoppedOutOfBand") {
		t.Errorf("second agent saw the adopted service as stopped")
	}
	if got := readRuns(); len(got) != 1 || !alive(pid) {
		t.Fatalf("after restart: runs %v, pid %d alive %v", got, pid, alive(pid))
	}
	// diff against the running agent's state shows nothing to do.
	diff := exec.Command(filepath.Join(agentDir, "reconciler"), "diff", "--backend", "process", "--manifests", m, "--state-dir", state, "--owner-check", "off")
	if out, err := diff.CombinedOutput(); err != nil {
		t.Errorf("diff while the agent runs: %v\n%s", err, out)
	}
	if err := a2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a2.done:
		if err != nil {
			t.Errorf("agent exit on SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not exit on SIGTERM")
	}
	waitFor(t, "workload stopped by --stop-on-exit", 15*time.Second, func() bool { return !alive(pid) })
	// The next agent starts it as at boot: a start, not a restart (the
	// ledger continues from the state the stopping agent left).
	a3 := startProcAgent(t, m, state, "--stop-on-exit")
	waitFor(t, "third agent's first pass", 30*time.Second, func() bool { return strings.Contains(a3.out.String(), "first pass done") })
	waitFor(t, "the service's run under the third agent", 30*time.Second, func() bool { return len(readRuns()) == 2 })
	time.Sleep(time.Second)
	ev := exec.Command(filepath.Join(agentDir, "reconciler"), "events", "--state-dir", state, "--reason", "Restarted")
	out, err := ev.CombinedOutput()
	if err != nil || strings.Contains(string(out), "restarted") {
		t.Errorf("a start after --stop-on-exit counted as a restart (%v):\n%s", err, out)
	}
}
