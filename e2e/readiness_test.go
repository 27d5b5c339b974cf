package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
)

// A readiness probe under systemd: status READY and resil_object_ready
// follow it (no while the probe fails, yes once it passes), and a service
// without one is ready when active.
func TestReadinessStatusAndMetricSystemd(t *testing.T) {
	sandbox.RequireProgram(t, "curl", "curl") // scrapes /metrics inside the sandbox
	e := newEnv(t)
	e.write("web.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: web}
spec:
  command: ["/bin/sleep", "infinity"]
  health:
    readiness: {exec: ["/usr/bin/test", "-e", "/run/web-ready"], interval: 300ms, failures: 2}
---
apiVersion: resil.dev/v1
kind: Service
metadata: {name: plain}
spec:
  command: ["/bin/sleep", "infinity"]
`)
	e.startAgent()
	ready := func(name string) string {
		out, _, _ := e.reconciler("status", "-o", "json", name)
		var rep struct {
			Objects []struct {
				Ready string `json:"ready"`
			} `json:"objects"`
		}
		if json.Unmarshal([]byte(out), &rep) != nil || len(rep.Objects) != 1 {
			return ""
		}
		return rep.Objects[0].Ready
	}
	e.eventually("web not ready (probe failing)", 30*time.Second, func() bool { return ready("web") == "no" })
	e.eventually("plain ready", 30*time.Second, func() bool { return ready("plain") == "yes" })
	if v := metric(e.metrics(), "resil_object_ready", map[string]string{"object": "Service/web"}); v != 0 {
		t.Errorf("resil_object_ready{web} = %g while its probe fails, want 0", v)
	}
	if _, err := e.sb.Run(e.ctx, "touch", "/run/web-ready"); err != nil {
		t.Fatal(err)
	}
	e.eventually("web ready", 30*time.Second, func() bool { return ready("web") == "yes" })
	out, _, _ := e.reconciler("status")
	if !strings.Contains(strings.Split(out, "\n")[0], "READY") {
		t.Errorf("status header lacks READY:\n%s", out)
	}
	fams := e.metrics()
	for _, o := range []string{"Service/web", "Service/plain"} {
		if v := metric(fams, "resil_object_ready", map[string]string{"object": o}); v != 1 {
			t.Errorf("resil_object_ready{%s} = %g, want 1", o, v)
		}
	}
	t.Logf("status:\n%s", out)
}

// The agent is killed (-9) while a service runs with a liveness probe;
// the service hangs while no agent runs. The next agent starts the probes
// again with its first pass and restarts the service once (cause
// liveness), not more.
func TestLivenessAfterAgentKill9Process(t *testing.T) {
	_, m, state := procDirs(t)
	port := freeTCPPort(t)
	if err := os.WriteFile(filepath.Join(m, "web.yaml"), []byte(livenessManifest(port)), 0o644); err != nil {
		t.Fatal(err)
	}
	a1 := startProcAgent(t, m, state, "--log-format", "json", "--metrics-addr", "")
	waitFor(t, "liveness probe passing", 30*time.Second, func() bool { return strings.Contains(a1.out.String(), "probe passing") })
	pid := serverPID(t, a1.out.String())
	if err := a1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a1.done
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	a2 := startProcAgent(t, m, state, "--stop-on-exit", "--log-format", "json", "--metrics-addr", "")
	waitFor(t, "Restarted with cause liveness", 60*time.Second, func() bool { return strings.Contains(a2.out.String(), "restarted (cause liveness)") })
	waitFor(t, "new process passing", 30*time.Second, func() bool { return strings.Count(a2.out.String(), "probe passing") >= 1 })
	time.Sleep(3 * liveInterval)
	out := a2.out.String()
	applied, _ := logMatch(out, map[string]string{"msg": "event", "reason": "Applied", "step": "restart web.service (liveness probe failed"})
	if n := len(applied); n != 1 {
		t.Errorf("%d liveness restarts by the second agent, want 1", n)
	}
	if alive(pid) {
		t.Errorf("the hung process %d is still there", pid)
	}
}
