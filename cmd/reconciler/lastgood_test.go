package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"resil.dev/resil/reconcile"
)

// agentArgsEnv makes TestHelperAgentProcess run the CLI with the arguments
// after "--" (the test binary re-executed as the agent, so a test can
// kill -9 it without killing itself).
const agentArgsEnv = "RESIL_TEST_RUN_AGENT"

func TestHelperAgentProcess(t *testing.T) {
	if os.Getenv(agentArgsEnv) != "1" {
		return // a helper: it does something only as a re-executed agent
	}
	for i, a := range os.Args {
		if a == "--" {
			os.Args = append([]string{"reconciler"}, os.Args[i+1:]...)
			main()
			os.Exit(0)
		}
	}
	os.Exit(2)
}

// agent runs the CLI in a child process with extra environment; it returns
// the combined output and how the child ended.
func (e *procEnv) agent(env []string, cmd string, extra ...string) (string, error) {
	e.t.Helper()
	args := append([]string{"-test.run=^TestHelperAgentProcess$", "--", cmd, "--backend", "process",
		"--manifests", e.manifests, "--state-dir", e.state, "--owner-check", "off"}, extra...)
	c := exec.Command(os.Args[0], args...)
	c.Env = append(append(os.Environ(), agentArgsEnv+"=1"), env...)
	out, err := c.CombinedOutput()
	return string(out), err
}

// applyKilledAt runs `apply` as a child agent that kills itself (kill -9)
// right after the last planned step whose text starts with prefix (with
// after), or right after the step before it.
func (e *procEnv) applyKilledAt(prefix string, after bool) {
	e.t.Helper()
	out, code := e.cli("diff", "-o", "json")
	var plan diffJSON
	if code != 1 || json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &plan) != nil {
		e.t.Fatalf("diff: exit %d\n%s", code, out)
	}
	k := -1
	for i, s := range plan.Steps {
		if strings.HasPrefix(s.Text, prefix) {
			k = i
			if after {
				k++
			}
		}
	}
	if k < 1 {
		e.t.Fatalf("no step to kill the agent after (%q, after %t):\n%s", prefix, after, out)
	}
	out, err := e.agent([]string{crashAfterStepEnv + "=" + itoa(int64(k))}, "apply")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		e.t.Fatalf("agent not killed after step %d: %v\n%s", k, err, out)
	}
}

// dirListing names every entry below dir with its size and inode, to tell
// whether anything was written.
func dirListing(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		out = append(out, p+" "+fi.Mode().String()+" "+itoa(fi.Size())+" "+itoa(int64(st.Ino))+" "+fi.ModTime().String())
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// An agent killed (kill -9) after it wrote and enabled a new unit, before
// the start; the object's drop-in is broken when the agent comes back. The
// last good version, persisted in <state-dir>/lastgood.json, stays in
// force: diff shows the start, apply starts it with the drop-in's settings
// as they were when they were good. diff writes nothing.
func TestKilledBeforeStartBrokenDropInStarts(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	if err := os.Mkdir(filepath.Join(e.manifests, "web.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.write("web.d/10-mode.yaml", "spec:\n  environment: {MODE: dropin}\n")
	// Killed right after the step before the start.
	e.applyKilledAt("start web.service", false)
	if e.pid("web.service") != 0 {
		t.Fatal("web started although the agent was killed before the start")
	}
	e.write("web.d/10-mode.yaml", "spec:\n  environment: {MODE: dro\n") // cut mid-line

	before := dirListing(t, e.state)
	out, code := e.cli("diff")
	if code == 0 || !strings.Contains(out, "start web.service") || strings.Contains(out, "stop web.service") ||
		strings.Contains(out, "write ") || !strings.Contains(out, "10-mode.yaml") {
		t.Fatalf("diff after the kill with a broken drop-in: exit %d\n%s", code, out)
	}
	if after := dirListing(t, e.state); after != before {
		t.Fatalf("diff wrote to the state dir:\nbefore\n%s\nafter\n%s", before, after)
	}
	if _, err := os.Stat(filepath.Join(e.state, reconcile.LastGoodFileName)); err != nil {
		t.Fatalf("last good objects not persisted before the steps: %v", err)
	}
	out, code = e.cli("apply")
	pid := e.pid("web.service")
	if code != 1 || pid == 0 {
		t.Fatalf("apply after the kill with a broken drop-in: exit %d, pid %d\n%s", code, pid, out)
	}
	if env := environOf(t, pid); !strings.Contains("\n"+env, "\nMODE=dropin\n") {
		t.Fatalf("web does not run its last good version:\n%s", env)
	}
	if out, code := e.cli("apply"); code != 1 || e.pid("web.service") != pid || strings.Contains(out, "start web") {
		t.Fatalf("second apply: exit %d, pid %d (was %d)\n%s", code, e.pid("web.service"), pid, out)
	}
}

// diff with a state dir that does not exist creates nothing, also with
// the last good objects it would read there.
func TestDiffCreatesNoStateDir(t *testing.T) {
	e := newProcEnv(t)
	e.state = filepath.Join(e.state, "missing")
	e.write("web.yaml", procWeb)
	if out, code := e.cli("diff"); code != 1 || !strings.Contains(out, "start web.service") {
		t.Fatalf("diff: exit %d\n%s", code, out)
	}
	if _, err := os.Lstat(e.state); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("diff created the state dir: %v", err)
	}
}
