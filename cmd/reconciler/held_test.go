package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readLines returns the lines of path (none when it does not exist).
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// An `apply` after a timer's command was edited never runs the old
// command, and one after the timer's manifest was deleted runs its job no
// more: the supervisor's timers start from the unit files the pass
// rewrote or pruned, not from the ones the last command left (F7: each
// apply ran the previous version, and the deleted timer's job once more).
func TestProcessBackendApplyNeverRunsOldTimerJob(t *testing.T) {
	e := newProcEnv(t)
	out := filepath.Join(t.TempDir(), "aj.out")
	timer := func(v string) string {
		return fmt.Sprintf("apiVersion: resil.dev/v1\nkind: Timer\nmetadata: {name: aj}\nspec:\n  onBoot: 1s\n  onUnitActive: 2s\n  command: [/bin/sh, -c, \"echo %s >> %s\"]\n", v, out)
	}
	seen := 0
	// check waits for a job a command may have left running, then says
	// whether the runs since the last check are all of want.
	check := func(after, want string) {
		t.Helper()
		time.Sleep(500 * time.Millisecond)
		got := readLines(t, out)
		for _, l := range got[seen:] {
			if l != want {
				t.Fatalf("after %s: runs %q; want only %q since the edit", after, got, want)
			}
		}
		seen = len(got)
	}
	e.write("aj.yaml", timer("v1"))
	if o, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply v1: exit %d\n%s", code, o)
	}
	check("apply v1", "v1")
	for _, v := range []string{"v2", "v3"} {
		time.Sleep(2200 * time.Millisecond) // a run is due (onBoot, then onUnitActive)
		e.write("aj.yaml", timer(v))
		if o, code := e.cli("apply"); code != 0 {
			t.Fatalf("apply %s: exit %d\n%s", v, code, o)
		}
		check("apply "+v, v)
	}
	time.Sleep(2200 * time.Millisecond)
	if err := os.Remove(filepath.Join(e.manifests, "aj.yaml")); err != nil {
		t.Fatal(err)
	}
	if o, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply after the delete: exit %d\n%s", code, o)
	}
	check("apply after the delete", "(none)")
	t.Logf("runs: %q", readLines(t, out))
}

// An agent started after services' manifests were changed, deleted or set
// to state: stopped while no agent ran, their processes dead meanwhile,
// never runs their old commands: the restarts their processes' deaths owe
// are made (or not) once its first pass has written what the manifests
// say (F12: each ran once more from its old unit file).
func TestProcessBackendAgentRestartNeverRunsOldCommands(t *testing.T) {
	e := newProcEnv(t)
	out := filepath.Join(t.TempDir(), "runs")
	svc := func(name, v, extra string) string {
		return fmt.Sprintf("apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: %s}\nspec:\n  command: [/bin/sh, -c, \"echo %s-%s >> %s; exec sleep 1000\"]\n  restart: {policy: always, delay: 0s}\n%s",
			name, name, v, out, extra)
	}
	for _, n := range []string{"changed", "deleted", "stopped"} {
		e.write(n+".yaml", svc(n, "v1", ""))
	}
	if o, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, o)
	}
	for _, n := range []string{"changed", "deleted", "stopped"} {
		pid := e.pid(n + ".service")
		if pid == 0 {
			t.Fatalf("%s not running after apply", n)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL) // dies while no agent runs
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, 0, nil)
	}
	e.write("changed.yaml", svc("changed", "v2", ""))
	if err := os.Remove(filepath.Join(e.manifests, "deleted.yaml")); err != nil {
		t.Fatal(err)
	}
	e.write("stopped.yaml", svc("stopped", "v1", "  state: stopped\n"))

	stop := e.startAgent()
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(readLines(t, out), "changed-v2") {
		if time.Now().After(deadline) {
			t.Fatalf("changed-v2 never ran: %q", readLines(t, out))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // a late start of an old command would show
	log := stop()
	got := readLines(t, out)
	slices.Sort(got)
	if want := []string{"changed-v1", "changed-v2", "deleted-v1", "stopped-v1"}; !slices.Equal(got, want) {
		t.Fatalf("runs %q, want %q: an old command ran again\nagent log:\n%s", got, want, log)
	}
}
