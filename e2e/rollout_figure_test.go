package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// figureService is service i at version v for the rollout figure: ready
// (its port answers) 1 s after it starts.
func figureService(i int, v string) string {
	port := 19000 + i
	return fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: f%03d}
spec:
  command: ["/bin/sh", "-c", "sleep 1; exec /usr/bin/nc -lk 127.0.0.1 %d"]
  environment: {VERSION: "%s"}
  restart: {policy: always}
  health:
    readiness: {tcp: "127.0.0.1:%d", interval: 200ms, failures: 1}
`, i, port, v, port)
}

// TestRolloutFigureSystemd measures, against real systemd, the rollout of
// 10 and 100 services that are ready 1 s after they start, at
// --max-parallel-restarts 2 and all at once (0): the time from the
// manifest change until every service runs its new process and is ready,
// and the most services down (their port not listening) at any poll. A figure for the
// README, run by `make bench` (RESIL_BENCH=1); no timing assertion.
func TestRolloutFigureSystemd(t *testing.T) {
	if os.Getenv(benchEnv) != "1" {
		t.Skip("a benchmark figure: RESIL_BENCH=1 (make bench)") // not a prerequisite: an opt-in benchmark
	}
	if _, err := os.Stat("/usr/bin/nc"); err != nil {
		t.Fatal("needs /usr/bin/nc (netcat-openbsd; make bench installs it)")
	}
	for _, n := range []int{10, 100} {
		for _, maxPar := range []int{2, 0} {
			t.Run(fmt.Sprintf("n%d_max%d", n, maxPar), func(t *testing.T) {
				e := newEnv(t)
				for i := 0; i < n; i++ {
					e.write(fmt.Sprintf("f%03d.yaml", i), figureService(i, "1"))
				}
				e.startAgent("--max-parallel-restarts", fmt.Sprint(maxPar), "--resync", "30s")
				ready := func() int {
					out, _, _ := e.reconciler("status")
					return strings.Count(out, " yes ")
				}
				e.eventually("version 1 ready", 3*time.Minute, func() bool { return ready() == n })
				v1 := e.mainPIDs("f*.service")
				began := time.Now()
				for i := 0; i < n; i++ {
					e.write(fmt.Sprintf("f%03d.yaml", i), figureService(i, "2"))
				}
				maxDown := 0
				e.eventually("version 2 everywhere, ready", 3*time.Minute, func() bool {
					cur := e.mainPIDs("f*.service")
					changed := 0
					for u, p := range cur {
						if p != "0" && p != v1[u] {
							changed++
						}
					}
					up := e.listening(19000, 19000+n)
					maxDown = max(maxDown, n-up)
					return changed == n && up == n
				})
				t.Logf("rollout of %d services (ready 1 s after start), --max-parallel-restarts %d: %s; at most %d down at a poll",
					n, maxPar, time.Since(began).Round(10*time.Millisecond), maxDown)
			})
		}
	}
}

// listening counts the TCP ports in [lo, hi) listening in the sandbox.
func (e *env) listening(lo, hi int) int {
	e.t.Helper()
	out, err := e.sb.Run(e.ctx, "ss", "-ltnH")
	if err != nil {
		e.t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		addr := f[3]
		var port int
		if _, err := fmt.Sscanf(addr[strings.LastIndex(addr, ":")+1:], "%d", &port); err == nil && port >= lo && port < hi {
			seen[port] = true
		}
	}
	return len(seen)
}

// mainPIDs are the MainPID of the units matching pattern, by unit, in
// one systemctl call.
func (e *env) mainPIDs(pattern string) map[string]string {
	e.t.Helper()
	out := e.systemctl("show", "-p", "Id,MainPID", pattern)
	m := map[string]string{}
	for _, block := range strings.Split(out, "\n\n") {
		var id, pid string
		for _, l := range strings.Split(block, "\n") {
			if v, ok := strings.CutPrefix(l, "Id="); ok {
				id = v
			}
			if v, ok := strings.CutPrefix(l, "MainPID="); ok {
				pid = v
			}
		}
		if id != "" {
			m[id] = pid
		}
	}
	return m
}
