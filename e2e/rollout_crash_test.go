package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// crashService is service i of TestRolloutCrashLoopHaltsSystemd at
// version v: version 1 runs; version 2 crashes 0.3 s after it starts,
// and its restart delay keeps it far from its start limit (3 starts in
// 10 s at most, burst 5), so it never reads failed, and between crashes
// it reads active: ready, as a service without a probe is.
func crashService(i int, v string) string {
	cmd := `["/bin/sleep", "1000"]`
	if v == "2" {
		cmd = `["/bin/sh", "-c", "sleep 0.3; exit 3"]`
	}
	return fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: c%02d}
spec:
  command: %s
  environment: {VERSION: "%s"}
  restart: {policy: always, delay: 2s, limit: {burst: 5, interval: 10s}}
`, i, cmd, v)
}

// A new version that crash-loops halts the rollout after its first wave.
// It halted only at the start limit, which a long restart delay never
// reaches, or at the ready timeout, which each crash's new process starts
// again: here (--min-ready 1s, a crash after 0.3 s) the rollout stalled
// for good, neither halted nor alerting; without --min-ready or a probe the
// crashing service reads ready between crashes and freed its slot for
// the next wave.
func TestRolloutCrashLoopHaltsSystemd(t *testing.T) {
	e := newEnv(t)
	const n = 4
	for i := 0; i < n; i++ {
		e.write(fmt.Sprintf("c%02d.yaml", i), crashService(i, "1"))
	}
	a := e.startAgent("--max-parallel-restarts", "1", "--min-ready", "1s")
	e.eventually("all running", 60*time.Second, func() bool {
		for i := 0; i < n; i++ {
			if e.prop(fmt.Sprintf("c%02d.service", i), "SubState") != "running" {
				return false
			}
		}
		return true
	})
	v1 := map[string]string{}
	for i := 0; i < n; i++ {
		u := fmt.Sprintf("c%02d.service", i)
		v1[u] = e.prop(u, "InvocationID")
	}
	// One pass sees every change (as from a git source's swap): with the
	// agent running, the first write would form a wave of its own.
	e.stopAgent(a, 10*time.Second)
	for i := 0; i < n; i++ {
		e.write(fmt.Sprintf("c%02d.yaml", i), crashService(i, "2"))
	}
	a = e.startAgent("--max-parallel-restarts", "1", "--min-ready", "1s")
	e.eventually("RolloutHalted", 60*time.Second, func() bool { return a.hasEvent("RolloutHalted", "") })
	time.Sleep(8 * time.Second) // several crash cycles of the first wave: nothing more is restarted
	same := 0
	for u, inv := range v1 {
		if e.prop(u, "InvocationID") == inv {
			same++
		}
	}
	if same != n-1 {
		t.Errorf("%d of %d services still on version 1 after the first wave crashed, want %d", same, n, n-1)
		evs, _, _ := e.reconciler("events")
		t.Logf("events:\n%s", evs)
	}
	out, _, code := e.reconciler("rollout", "status")
	if code != 1 || !strings.Contains(out, "Rollout HALTED") || !strings.Contains(out, "(crashed since its restart)") {
		t.Errorf("rollout status: exit %d\n%s", code, out)
	}
}
