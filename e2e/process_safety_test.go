package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The safety rails with a running process-backend agent whose resync is
// long: a lease's expiry and a resume wake it, the prune deadline too.
// (One-shot CLI cases: cmd/reconciler/safety_test.go; systemd:
// safety_test.go.)
func TestProcessAgentSafetyRails(t *testing.T) {
	_, m, state := procDirs(t)
	write := func(name, mode string) {
		t.Helper()
		body := fmt.Sprintf("apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: %s}\nspec:\n  command: [\"/bin/sleep\", \"infinity\"]\n  environment: {MODE: %s}\n", name, mode)
		tmp := filepath.Join(m, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(m, name+".yaml")); err != nil {
			t.Fatal(err)
		}
	}
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(agentDir, "reconciler"), append(args, "--state-dir", state)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	pid := func(unit string) int {
		if p := supervised(t, state, unit); len(p) == 1 {
			return p[0]
		}
		return 0
	}
	mode := func(unit string) string {
		p := pid(unit)
		if p == 0 {
			return ""
		}
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p))
		for _, kv := range strings.Split(string(env), "\x00") {
			if v, ok := strings.CutPrefix(kv, "MODE="); ok {
				return v
			}
		}
		return ""
	}
	t.Cleanup(func() {
		for _, u := range []string{"web.service", "db.service"} {
			for _, p := range supervised(t, state, u) {
				_ = syscall.Kill(-p, syscall.SIGKILL)
			}
		}
	})
	write("web", "one")
	write("db", "one")
	a := startProcAgent(t, m, state, "--resync", "10m", "--prune-grace", "8s", "--metrics-addr", "")
	waitFor(t, "web and db running", 30*time.Second, func() bool { return mode("web.service") == "one" && mode("db.service") == "one" })
	web := pid("web.service")

	// a lease that expires: the manifest change waits for it
	if out := cli("pause", "web", "--for", "1h", "--reason", "hotfix INC-123"); !strings.Contains(out, "web paused until") {
		t.Fatal(out)
	}
	write("web", "two")
	write("db", "two")
	waitFor(t, "db converged", 30*time.Second, func() bool { return mode("db.service") == "two" })
	if p := pid("web.service"); p != web {
		t.Fatalf("paused web restarted: %d → %d\n%s", web, p, a.out.String())
	}
	cli("pause", "web", "--for", "2s", "--reason", "hotfix INC-123") // shortened: expires soon
	waitFor(t, "web converged at the lease's expiry", 30*time.Second, func() bool { return mode("web.service") == "two" })
	if !strings.Contains(a.out.String(), "LeaseExpired") {
		t.Errorf("no LeaseExpired in the agent's log")
	}

	// resume: at once
	cli("pause", "web", "--for", "1h", "--reason", "second")
	web = pid("web.service")
	write("web", "three")
	write("db", "three")
	waitFor(t, "db converged", 30*time.Second, func() bool { return mode("db.service") == "three" })
	if p := pid("web.service"); p != web {
		t.Fatalf("paused web restarted: %d → %d", web, p)
	}
	cli("resume", "web")
	waitFor(t, "web converged after resume", 30*time.Second, func() bool { return mode("web.service") == "three" })

	// prune grace: same process while the manifest is gone, pruned after it
	web = pid("web.service")
	if err := os.Remove(filepath.Join(m, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "PrunePending", 30*time.Second, func() bool { return strings.Contains(a.out.String(), "PrunePending") })
	if p := pid("web.service"); p != web {
		t.Fatalf("web touched within the grace: %d → %d", web, p)
	}
	waitFor(t, "web pruned after the grace", 30*time.Second, func() bool { return pid("web.service") == 0 })
	if mode("db.service") != "three" {
		t.Error("db touched")
	}
}
