package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"resil.dev/resil/reconcile/store"
)

// startAgent starts `run` as a child process (the test binary re-executed,
// see TestHelperAgentProcess); stop sends SIGTERM and waits for it.
func (e *procEnv) startAgent(extra ...string) (stop func() string) {
	e.t.Helper()
	args := append([]string{"-test.run=^TestHelperAgentProcess$", "--", "run", "--backend", "process",
		"--manifests", e.manifests, "--state-dir", e.state, "--owner-check", "off", "--metrics-addr", ""}, extra...)
	c := exec.Command(os.Args[0], args...)
	c.Env = append(os.Environ(), agentArgsEnv+"=1")
	var out strings.Builder
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		e.t.Fatal(err)
	}
	stopped := false
	stop = func() string {
		if !stopped {
			stopped = true
			_ = c.Process.Signal(syscall.SIGTERM)
			_ = c.Wait()
		}
		return out.String()
	}
	e.t.Cleanup(func() { stop() })
	return stop
}

// restartRows are the restart ledger's rows of object, as "cause" strings.
func (e *procEnv) restartRows(object string) []string {
	e.t.Helper()
	s, err := store.OpenReader(filepath.Join(e.state, "events.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer s.Close()
	rows, err := s.Restarts(context.Background(), object, time.Time{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		out = append(out, r.Cause)
	}
	return out
}

// Process backend: the agent's own restart (a manifest edit under run) is
// in the restart ledger as the agent's, once, across agents, and status
// shows a service switched to stopped as stopped. (Its supervisor's own
// events wake a pass anyway; e2e TestOwnRestartCountedAtOnce is the
// systemd case, where the agent's own jobs wake none and only
// Loop.AfterSteps observes what they did.)
func TestRunCountsOwnRestartAtOnce(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	stop := e.startAgent("--resync", "1h")
	waitFor(t, "web started", func() bool { return e.pid("web.service") != 0 })
	old := e.pid("web.service")
	e.write("web.yaml", strings.Replace(procWeb, "MODE: one", "MODE: two", 1))
	waitFor(t, "web restarted", func() bool { p := e.pid("web.service"); return p != 0 && p != old })
	waitFor(t, "the restart in the ledger", func() bool { return len(e.restartRows("Service/web")) > 0 })
	log := stop()
	if got := e.restartRows("Service/web"); strings.Join(got, ",") != "agent" {
		t.Fatalf("ledger after the agent stopped: %v, want [agent]\n%s", got, log)
	}
	// The next agent continues from the state after the restart: nothing
	// more to count.
	stop = e.startAgent("--resync", "1h")
	waitFor(t, "the next agent's first pass", func() bool {
		out, _ := e.cli("status", "-o", "json")
		return strings.Contains(out, `"command": "run"`) && !strings.Contains(out, `"agentGone": true`)
	})
	time.Sleep(300 * time.Millisecond)
	// status shows what a pass's steps left: a service switched to
	// stopped reads stopped once it is, not running until the next pass.
	e.write("web.yaml", strings.Replace(procWeb, "MODE: one", "MODE: two", 1)+"  state: stopped\n")
	waitFor(t, "web stopped", func() bool { return e.pid("web.service") == 0 })
	waitFor(t, "status showing web stopped", func() bool {
		out, _ := e.cli("status", "-o", "json")
		return strings.Contains(out, `"desired": "stopped"`) && !strings.Contains(out, "running")
	})
	log = stop()
	if got := e.restartRows("Service/web"); strings.Join(got, ",") != "agent" {
		t.Fatalf("ledger after the next agent: %v, want [agent]\n%s", got, log)
	}
}
