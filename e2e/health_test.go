package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startupManifests are a web server that listens only 2 s after it
// starts, with a startup probe of its port, and a client ordered after it
// (systemd: requires + after) that records whether the port answered when
// it started.
func startupManifests(port int, seen string, requires bool) string {
	dep := "after: [web.service]"
	if requires {
		dep = "after: [web.service]\n  requires: [web.service]"
	}
	return fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: web}
spec:
  command: ["/bin/sh", "-c", "sleep 2; exec /usr/bin/python3 -m http.server %[1]d --bind 127.0.0.1"]
  restart: {policy: always, delay: 100ms}
  health:
    startup: {http: {url: "http://127.0.0.1:%[1]d/"}, interval: 200ms, timeout: 30s}
---
apiVersion: resil.dev/v1
kind: Service
metadata: {name: client}
spec:
  command: ["/bin/sh", "-c", "if /usr/bin/nc -z 127.0.0.1 %[1]d; then echo up; else echo down; fi >> %[2]s; exec sleep infinity"]
  %[3]s
`, port, seen, dep)
}

// Under systemd a startup probe is an ExecStartPost= running the agent's
// probe command: web becomes active only once its port answers, and the
// client, ordered after it, starts only then: on the agent's apply, and
// again on a plain `systemctl start client` with no agent involved.
func TestStartupProbeDelaysDependentSystemd(t *testing.T) {
	e := newEnv(t)
	const seen = "/run/client-saw"
	e.write("web.yaml", startupManifests(18080, seen, true))
	t.Cleanup(func() {
		if t.Failed() {
			j, _ := e.sb.Journal(e.ctx, "-u", "web.service", "-u", "client.service", "-o", "short-precise")
			t.Logf("journal:\n%s", j)
		}
	})
	e.apply(0)
	p := e.show("web.service", "ActiveState", "ExecStartPost", "TimeoutStartUSec")
	if p["ActiveState"] != "active" || !strings.Contains(p["ExecStartPost"], agentBin+" probe") || p["TimeoutStartUSec"] != "2min" {
		t.Fatalf("web after apply: %v", p)
	}
	if got := readSeen(t, e, seen, 1); got != "up" {
		t.Fatalf("client saw the port %q when it started, want up", got)
	}
	// Without the agent: systemd alone orders client after web's probe.
	e.systemctl("stop", "client.service", "web.service")
	e.systemctl("start", "client.service")
	if got := readSeen(t, e, seen, 2); got != "up\nup" {
		t.Fatalf("client saw %q over its two starts, want up twice", got)
	}
	w := e.show("web.service", "ActiveState", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
	c := e.show("client.service", "ExecMainStartTimestampMonotonic")
	if w["ActiveState"] != "active" || monoDelta(w["ActiveEnterTimestampMonotonic"], c["ExecMainStartTimestampMonotonic"]) < 0 {
		t.Fatalf("web %v, client %v: client started before web was active", w, c)
	}
	t.Logf("web: process start to active %s", monoDelta(w["ExecMainStartTimestampMonotonic"], w["ActiveEnterTimestampMonotonic"]))
}

// A startup probe that never passes fails the start under systemd (the
// probe's exit status), bounded by the probe timeout, not systemd's.
func TestStartupProbeFailsStartSystemd(t *testing.T) {
	e := newEnv(t)
	e.write("dead.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: dead}
spec:
  command: ["/bin/sleep", "infinity"]
  restart: {policy: never}
  health:
    startup: {tcp: "127.0.0.1:1", interval: 100ms, timeout: 1s}
`)
	e.apply(1)
	p := e.show("dead.service", "ActiveState", "Result", "MainPID")
	if p["ActiveState"] != "failed" || p["Result"] != "exit-code" || p["MainPID"] != "0" {
		t.Fatalf("dead.service: %v, want failed with exit-code and no process", p)
	}
}

// readSeen waits until path has n lines and returns them.
func readSeen(t *testing.T, e *env, path string, n int) string {
	t.Helper()
	var data []byte
	e.eventually(path, 30*time.Second, func() bool {
		var err error
		data, err = e.sb.ReadFile(path)
		return err == nil && strings.Count(string(data), "\n") >= n
	})
	return strings.TrimSpace(string(data))
}

func monoDelta(a, b string) time.Duration {
	var x, y int64
	fmt.Sscan(a, &x)
	fmt.Sscan(b, &y)
	return time.Duration(y-x) * time.Microsecond
}

// On the process backend the supervisor runs the startup probe in the
// start phase: the agent's start step of web is done only once the port
// answers (what the steps after it wait for; this backend has no
// requires, and after= orders nothing), and web is activating until then.
func TestStartupProbeProcessBackend(t *testing.T) {
	dir, m, state := procDirs(t)
	port := freeTCPPort(t)
	web := startupManifests(port, filepath.Join(dir, "seen"), false)
	web = web[:strings.Index(web, "---")]
	if err := os.WriteFile(filepath.Join(m, "web.yaml"), []byte(web), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startProcAgent(t, m, state, "--stop-on-exit", "--log-format", "json", "--metrics-addr", "")
	startApplied := map[string]string{"msg": "event", "reason": "Applied", "step": "start web.service"}
	waitFor(t, "web started", 60*time.Second, func() bool { idx, _ := logMatch(a.out.String(), startApplied); return len(idx) > 0 })
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err != nil {
		t.Fatalf("web's start is done but its port does not answer: %v", err)
	} else {
		c.Close()
	}
	out := a.out.String()
	first := func(want map[string]string) (int, time.Time) {
		idx, lines := logMatch(out, want)
		if len(idx) == 0 {
			return -1, time.Time{}
		}
		ts, _ := time.Parse("2006-01-02T15:04:05.000Z0700", fmt.Sprint(lines[0]["time"]))
		return idx[0], ts
	}
	begin, t0 := first(map[string]string{"msg": "startup probe begins"})
	passed, t1 := first(map[string]string{"msg": "startup probe passed"})
	applied, _ := first(startApplied)
	if begin < 0 || passed < begin || applied < passed {
		t.Fatalf("want probe begins < probe passed < start applied in the log, got %d, %d, %d", begin, passed, applied)
	}
	t.Logf("process start to probe passed: %s", t1.Sub(t0))
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// An exec startup probe under systemd runs as the service's user (the
// ExecStartPost= inherits User=): here nobody, who can read a file the
// service created only for itself.
func TestStartupExecProbeAsServiceUserSystemd(t *testing.T) {
	e := newEnv(t)
	e.write("own.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: own}
spec:
  command: ["/bin/sh", "-c", "sleep 1; umask 077; id -u > /tmp/own-ready.$(id -u); exec sleep infinity"]
  user: nobody
  restart: {policy: never}
  health:
    startup: {exec: ["/bin/sh", "-c", "test -r /tmp/own-ready.$(id -u)"], interval: 200ms, timeout: 20s}
`)
	e.apply(0)
	if p := e.show("own.service", "ActiveState", "ExecStartPost"); p["ActiveState"] != "active" || !strings.Contains(p["ExecStartPost"], "test -r") {
		t.Fatalf("own.service: %v", p)
	}
}
