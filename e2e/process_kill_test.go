package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// supervised lists the live main processes (group leaders) the process
// backend on state started for unit, found by the markers every child
// carries (RESIL_SUPERVISOR: the secret in state/supervisor-id; RESIL_UNIT).
func supervised(t *testing.T, state, unit string) []int {
	t.Helper()
	id, err := os.ReadFile(filepath.Join(state, "supervisor-id"))
	if err != nil {
		return nil // no agent has run yet
	}
	want := [][]byte{[]byte("RESIL_SUPERVISOR=" + strings.TrimSpace(string(id))), []byte("RESIL_UNIT=" + unit)}
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		vars := bytes.Split(env, []byte{0})
		if !hasVar(vars, want[0]) || !hasVar(vars, want[1]) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) > 2 && f[0] != "Z" && f[2] == e.Name() {
			pids = append(pids, pid)
		}
	}
	return pids
}

func hasVar(vars [][]byte, kv []byte) bool {
	for _, v := range vars {
		if bytes.Equal(v, kv) {
			return true
		}
	}
	return false
}

// kill -9 of `reconciler run --backend process` at many instants around
// manifest edits (before its first pass, between the unit file write and the
// restart, mid-restart, after it): never two processes of a service, the
// stable service keeps its PID and ran once, and after a last restart the
// edited one runs its latest version while diff is clean.
func TestProcessBackendKill9DuringEdits(t *testing.T) {
	dir, m, state := procDirs(t)
	stableRuns, editedRuns := filepath.Join(dir, "stable.runs"), filepath.Join(dir, "edited.runs")
	t.Cleanup(func() {
		for _, u := range []string{"stable.service", "edited.service"} {
			for _, pid := range supervised(t, state, u) {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	manifest := func(name, runs string, gen int) string {
		return fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: %s}
spec:
  command: ["/bin/sh", "-c", "echo \"$GEN $$\" >> %s; exec sleep infinity"]
  environment: {GEN: "%d"}
  stopTimeout: 5s
`, name, runs, gen)
	}
	write := func(name, body string) {
		// As an editor does: a new file renamed over the old one.
		tmp := filepath.Join(m, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(m, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("stable.yaml", manifest("stable", stableRuns, 0))
	write("edited.yaml", manifest("edited", editedRuns, 0))
	runs := func(path string) []string {
		b, _ := os.ReadFile(path)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}

	a := startProcAgent(t, m, state)
	waitFor(t, "both services' first run", 30*time.Second, func() bool {
		return len(supervised(t, state, "stable.service")) == 1 && len(supervised(t, state, "edited.service")) == 1
	})
	stable := supervised(t, state, "stable.service")[0]
	delays := []time.Duration{0, time.Millisecond, 3 * time.Millisecond, 7 * time.Millisecond, 12 * time.Millisecond,
		20 * time.Millisecond, 30 * time.Millisecond, 45 * time.Millisecond, 70 * time.Millisecond, 100 * time.Millisecond,
		150 * time.Millisecond, 250 * time.Millisecond, 400 * time.Millisecond}
	gen := 0
	for i := 0; i < 2*len(delays); i++ {
		if i > 0 {
			a = startProcAgent(t, m, state)
			// Odd rounds edit while the new agent is still starting up.
			if i%2 == 0 {
				waitFor(t, "first pass", 30*time.Second, func() bool { return strings.Contains(a.out.String(), "first pass done") })
			}
		}
		gen++
		write("edited.yaml", manifest("edited", editedRuns, gen))
		time.Sleep(delays[i%len(delays)])
		if err := a.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-a.done
		if got := supervised(t, state, "edited.service"); len(got) > 1 {
			t.Fatalf("round %d (kill %v after edit %d): edited runs %d processes %v", i, delays[i%len(delays)], gen, len(got), got)
		}
		if got := supervised(t, state, "stable.service"); len(got) != 1 || got[0] != stable {
			t.Fatalf("round %d: stable processes %v, want [%d]", i, got, stable)
		}
	}

	a = startProcAgent(t, m, state)
	want := strconv.Itoa(gen) + " "
	waitFor(t, "the latest version running and diff clean", 60*time.Second, func() bool {
		pids := supervised(t, state, "edited.service")
		if len(pids) != 1 {
			return false
		}
		last := runs(editedRuns)
		if !strings.HasPrefix(last[len(last)-1], want) || last[len(last)-1] != want+strconv.Itoa(pids[0]) {
			return false
		}
		diff := exec.Command(filepath.Join(agentDir, "reconciler"), "diff", "--backend", "process", "--manifests", m, "--state-dir", state, "--owner-check", "off")
		return diff.Run() == nil
	})
	if got := supervised(t, state, "stable.service"); len(got) != 1 || got[0] != stable || len(runs(stableRuns)) != 1 {
		t.Fatalf("stable service: processes %v (want [%d]), runs %v", got, stable, runs(stableRuns))
	}
	// Every start of the edited service was of a version at least as new
	// as the one before it: no older unit file was ever started again.
	prev := -1
	for _, l := range runs(editedRuns) {
		g, _ := strconv.Atoi(strings.Fields(l)[0])
		if g < prev {
			t.Fatalf("edited runs out of order at %q:\n%s", l, strings.Join(runs(editedRuns), "\n"))
		}
		prev = g
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-a.done
}
