package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Liveness probe under test: interval 1s, failures 3, restart delay 100ms:
// a hung server is restarted within about interval × failures + restart
// delay + one pass.
const (
	liveInterval = time.Second
	liveFailures = 3
)

func livenessManifest(port int) string {
	return fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: web}
spec:
  command: ["/usr/bin/python3", "-m", "http.server", "%d", "--bind", "127.0.0.1"]
  restart: {policy: always, delay: 100ms}
  health:
    liveness: {http: {url: "http://127.0.0.1:%d/"}, interval: %s, timeout: 500ms, failures: %d}
`, port, port, liveInterval, liveFailures)
}

// A liveness probe restarts a hung HTTP server (SIGSTOP) under systemd:
// an Unhealthy event, a restart step, and the ledger's Restarted with
// cause liveness. The time from the hang to the new process is logged.
func TestLivenessRestartsHungServerSystemd(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", livenessManifest(18081))
	a := e.startAgent()
	e.eventually("web active", 30*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	e.eventually("liveness probe passing", 30*time.Second, func() bool { return a.countLogs("probe passing") > 0 })
	pid := e.prop("web.service", "MainPID")
	hung := time.Now()
	if _, err := e.sb.Run(e.ctx, "kill", "-STOP", pid); err != nil {
		t.Fatal(err)
	}
	var newPID string
	e.eventually("web restarted", 30*time.Second, func() bool {
		p := e.show("web.service", "MainPID", "ActiveState")
		newPID = p["MainPID"]
		return p["ActiveState"] == "active" && newPID != pid && newPID != "0"
	})
	took := time.Since(hung)
	t.Logf("liveness: hung at SIGSTOP, new process %s after %s (interval %s × failures %d + restart delay 100ms = %s)",
		newPID, took.Round(10*time.Millisecond), liveInterval, liveFailures, liveInterval*liveFailures+100*time.Millisecond)
	e.eventually("Restarted event with cause liveness", 20*time.Second, func() bool { return a.hasEvent("Restarted", "cause liveness") })
	if !a.hasEvent("Unhealthy", "failed its liveness probe 3 times in a row") {
		t.Errorf("no Unhealthy event")
	}
	if !a.hasEvent("Applied", "restart web.service (liveness probe failed 3 times") {
		t.Errorf("no applied liveness restart step")
	}
	// The restarted server passes again and is not restarted once more.
	e.eventually("probe of the new process passing", 30*time.Second, func() bool { return a.countLogs("probe passing") > 1 })
	time.Sleep(2 * liveInterval)
	if p := e.prop("web.service", "MainPID"); p != newPID {
		t.Fatalf("web restarted again (pid %s → %s)", newPID, p)
	}
}

// The same on the process backend: the supervisor's restart of the
// stopped server (SIGTERM then SIGCONT).
func TestLivenessRestartsHungServerProcess(t *testing.T) {
	_, m, state := procDirs(t)
	port := freeTCPPort(t)
	if err := os.WriteFile(filepath.Join(m, "web.yaml"), []byte(livenessManifest(port)), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startProcAgent(t, m, state, "--stop-on-exit", "--log-format", "json", "--metrics-addr", "")
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	client := &http.Client{Timeout: 500 * time.Millisecond}
	up := func() bool {
		r, err := client.Get(url)
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	}
	waitFor(t, "web answers", 30*time.Second, up)
	waitFor(t, "liveness probe passing", 30*time.Second, func() bool { return strings.Contains(a.out.String(), "probe passing") })
	pid := serverPID(t, a.out.String())
	hung := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new web process", 30*time.Second, func() bool {
		idx, _ := logMatch(a.out.String(), map[string]string{"msg": "process started"})
		return len(idx) >= 2
	})
	waitFor(t, "web answers again", 30*time.Second, up)
	took := time.Since(hung)
	t.Logf("liveness (process backend): hung at SIGSTOP, answering again after %s (interval %s × failures %d + restart delay 100ms = %s)",
		took.Round(10*time.Millisecond), liveInterval, liveFailures, liveInterval*liveFailures+100*time.Millisecond)
	waitFor(t, "Restarted with cause liveness", 20*time.Second, func() bool { return strings.Contains(a.out.String(), "restarted (cause liveness)") })
	out := a.out.String()
	for _, want := range []string{"failed its liveness probe 3 times in a row", "restart web.service (liveness probe failed 3 times"} {
		if !strings.Contains(out, want) {
			t.Errorf("agent output lacks %q", want)
		}
	}
	if alive(pid) {
		t.Errorf("the hung process %d is still there", pid)
	}
}

// serverPID is the pid of the first "process started" line of web (a
// JSON log).
func serverPID(t *testing.T, out string) int {
	t.Helper()
	_, lines := logMatch(out, map[string]string{"msg": "process started", "unit": "web.service"})
	if len(lines) == 0 {
		t.Fatal("no process started line")
	}
	pid, ok := lines[0]["pid"].(float64)
	if !ok {
		t.Fatalf("process started line without a pid: %v", lines[0])
	}
	return int(pid)
}

// logLines parses an agent's JSON log (--log-format json).
func logLines(out string) []map[string]any {
	var lines []map[string]any
	for _, l := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			lines = append(lines, m)
		}
	}
	return lines
}

// logMatch returns the index (in logLines order) and the lines whose
// fields contain every key=substring of want.
func logMatch(out string, want map[string]string) (idx []int, lines []map[string]any) {
	for i, m := range logLines(out) {
		ok := true
		for k, v := range want {
			if !strings.Contains(fmt.Sprint(m[k]), v) {
				ok = false
				break
			}
		}
		if ok {
			idx, lines = append(idx, i), append(lines, m)
		}
	}
	return idx, lines
}

// Under the hardened unit `reconciler install` writes (no capabilities, a
// system-call filter without setuid), an exec liveness probe still runs as
// the service's user: the systemd backend runs it as a transient unit. It
// passes while the service's user may read a file that only it can, and
// restarts the service once it fails.
func TestExecLivenessProbeAsUserUnderInstalledAgent(t *testing.T) {
	e := newEnv(t)
	if out, errOut, code := e.reconciler("install", "--binary", agentBin, "--manifests", "/etc/resil.d", "--resync", "1m"); code != 0 {
		t.Fatalf("install exit %d:\n%s\n%s", code, out, errOut)
	}
	// Readable by nobody only: the probe passes only as nobody.
	if err := e.sb.WriteFile("/run/web-ok", []byte("ok\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sb.Run(e.ctx, "chown", "nobody", "/run/web-ok"); err != nil {
		t.Fatal(err)
	}
	manifest := `apiVersion: resil.dev/v1
kind: Service
metadata: {name: web}
spec:
  command: ["/bin/sleep", "infinity"]
  user: nobody
  restart: {policy: always, delay: 100ms}
  health:
    liveness:
      exec: ["/bin/sh", "-c", "test \"$(id -un)\" = nobody && cat /run/web-ok"]
      interval: 1s
      timeout: 5s
      failures: 2
`
	if err := e.sb.WriteFile("/etc/resil.d/web.yaml", []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	e.eventually("web active", 30*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	pid := e.prop("web.service", "MainPID")
	// Several passing attempts: the service is left alone.
	time.Sleep(4 * time.Second)
	if p := e.prop("web.service", "MainPID"); p != pid {
		j, _ := e.sb.Journal(e.ctx, "-u", "resil-agent.service", "-o", "cat")
		t.Fatalf("web restarted while its probe should pass (pid %s → %s); agent journal:\n%s", pid, p, j)
	}
	// The file goes: the probe fails as nobody, and the agent restarts web.
	if err := e.sb.Remove("/run/web-ok"); err != nil {
		t.Fatal(err)
	}
	restarted := false
	deadline := time.Now().Add(60 * time.Second)
	for !restarted && time.Now().Before(deadline) {
		p := e.show("web.service", "MainPID", "ActiveState")
		restarted = p["ActiveState"] == "active" && p["MainPID"] != pid && p["MainPID"] != "0"
		time.Sleep(200 * time.Millisecond)
	}
	j, _ := e.sb.Journal(e.ctx, "-u", "resil-agent.service", "-o", "cat")
	if !restarted {
		all, _ := e.sb.Journal(e.ctx, "-o", "cat", "-n", "200")
		t.Fatalf("web not restarted by its liveness probe; agent journal:\n%s\nlast journal lines:\n%s", j, all)
	}
	if !strings.Contains(j, "liveness probe failed") || strings.Contains(j, "ProbeError") {
		t.Errorf("agent journal lacks the liveness restart or has a ProbeError:\n%s", j)
	}
	// No transient probe unit is left behind.
	if out, _ := e.sb.Systemctl(e.ctx, "list-units", "--all", "--no-legend", "resil-probe-*"); strings.TrimSpace(out) != "" {
		t.Errorf("probe units left: %s", out)
	}
}
