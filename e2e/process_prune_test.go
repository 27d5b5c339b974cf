package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// One-shot `reconciler apply --backend process` runs, each a separate
// agent process with no memory: the second sees the processes the first
// left running as active (it adopts them before its pass: no start, no
// StoppedOutOfBand), and the one after the manifests were deleted stops
// every one of them before removing its unit file. Many services, and one
// CPU for the agent (GOMAXPROCS=1), so a unit adopted after the agent's
// first observation would show.
func TestProcessBackendApplyAdoptsThenPrunes(t *testing.T) {
	const n = 24
	_, m, state := procDirs(t)
	units := make([]string, n)
	for i := range units {
		name := fmt.Sprintf("p%02d", i)
		units[i] = name + ".service"
		manifest := fmt.Sprintf("apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: %s}\nspec:\n  command: [\"/bin/sleep\", \"infinity\"]\n", name)
		if err := os.WriteFile(filepath.Join(m, name+".yaml"), []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, u := range units {
			for _, pid := range supervised(t, state, u) {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	apply := func(what string, extra ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(agentDir, "reconciler"), append([]string{"apply", "--backend", "process",
			"--manifests", m, "--state-dir", state, "--owner-check", "off", "--log-format", "console"}, extra...)...)
		cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		return string(out)
	}
	apply("first apply")
	pids := map[string]int{}
	for _, u := range units {
		got := supervised(t, state, u)
		if len(got) != 1 {
			t.Fatalf("after the first apply: %s has main processes %v", u, got)
		}
		pids[u] = got[0]
	}
	for i := 0; i < 3; i++ {
		out := apply("apply with nothing changed")
		if strings.Contains(out, "StoppedOutOfBand") || strings.Contains(out, "start p") {
			t.Fatalf("a fresh agent took adopted processes for stopped:\n%s", out)
		}
		for _, u := range units {
			if got := supervised(t, state, u); len(got) != 1 || got[0] != pids[u] {
				t.Fatalf("after an apply with nothing changed: %s has main processes %v, was %d", u, got, pids[u])
			}
		}
	}
	for _, u := range units {
		if err := os.Remove(filepath.Join(m, strings.TrimSuffix(u, ".service")+".yaml")); err != nil {
			t.Fatal(err)
		}
	}
	// Every manifest deleted at once is what the mass-prune guard stops
	// (PruneBlocked): confirmed here, as an operator would.
	out := apply("apply after the manifests were deleted", "--allow-prune", fmt.Sprint(n))
	for _, u := range units {
		if got := supervised(t, state, u); len(got) != 0 {
			t.Errorf("pruned %s still runs %v", u, got)
		}
		if !strings.Contains(out, "stop "+u) {
			t.Errorf("no stop of pruned %s", u)
		}
		if _, err := os.Stat(filepath.Join(state, "units", u)); err == nil {
			t.Errorf("unit file of pruned %s kept", u)
		}
	}
	if t.Failed() {
		t.Logf("last apply:\n%s", out)
	}
}
