package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rolloutService is service i of the rollout tests at version v: it
// listens on its port 1 s after it starts, and its readiness probe is that
// port. bad: the version fails at once.
func rolloutService(i int, v string, bad bool) string {
	cmd := fmt.Sprintf(`["/bin/sh", "-c", "echo $VERSION >> /tmp/starts-%02d; sleep 1; exec /usr/bin/python3 -m http.server %d --bind 127.0.0.1"]`, i, 18200+i)
	if bad {
		cmd = `["/bin/sh", "-c", "exit 3"]`
	}
	return fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: r%02d}
spec:
  command: %s
  environment: {VERSION: "%s"}
  restart: {policy: never}
  health:
    readiness: {tcp: "127.0.0.1:%d", interval: 200ms, failures: 1}
`, i, cmd, v, 18200+i)
}

// Readiness gates a rollout of 10 services with --max-parallel-restarts 2
// (never more than 2 restarting: any 3 consecutive new processes span at
// least the 1 s each takes to become ready); then a bad version halts the
// rollout after its first wave, the other 8 still running the previous
// version.
func TestRolloutWavesSystemd(t *testing.T) {
	e := newEnv(t)
	const n = 10
	for i := 0; i < n; i++ {
		e.write(fmt.Sprintf("r%02d.yaml", i), rolloutService(i, "1", false))
	}
	a := e.startAgent("--max-parallel-restarts", "2")
	pids := func() map[string]string {
		out := map[string]string{}
		for i := 0; i < n; i++ {
			u := fmt.Sprintf("r%02d.service", i)
			p := e.show(u, "MainPID", "ActiveState")
			if p["ActiveState"] == "active" {
				out[u] = p["MainPID"]
			} else {
				out[u] = p["ActiveState"]
			}
		}
		return out
	}
	e.eventually("all ready", 60*time.Second, func() bool {
		out, _, code := e.reconciler("status")
		return code == 0 && strings.Count(out, " yes ") == n
	})
	v1 := pids()
	began := time.Now()
	for i := 0; i < n; i++ {
		e.write(fmt.Sprintf("r%02d.yaml", i), rolloutService(i, "2", false))
	}
	e.eventually("all restarted and ready", 120*time.Second, func() bool {
		cur := pids()
		for u, p := range cur {
			if p == v1[u] || p == "0" || strings.ContainsAny(p, "abcdefghijklmnopqrstuvwxyz") {
				return false
			}
		}
		out, _, code := e.reconciler("status")
		return code == 0 && strings.Count(out, " yes ") == n
	})
	took := time.Since(began)
	var starts []int64
	for i := 0; i < n; i++ {
		v, _ := strconv.ParseInt(e.prop(fmt.Sprintf("r%02d.service", i), "ExecMainStartTimestampMonotonic"), 10, 64)
		starts = append(starts, v)
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	for i := 0; i+2 < n; i++ {
		if d := time.Duration(starts[i+2]-starts[i]) * time.Microsecond; d < time.Second {
			t.Errorf("3 services started within %s (starts %v): more than 2 restarting at once", d, starts)
		}
	}
	t.Logf("rollout of %d services, 2 at a time, each ready 1 s after its start: %s", n, took.Round(10*time.Millisecond))
	if !a.hasEvent("RolloutPending", "keeps its previous version until a wave slot frees") {
		t.Errorf("no RolloutPending event")
	}

	e.eventually("rollout complete", 30*time.Second, func() bool {
		out, _, code := e.reconciler("rollout", "status")
		return code == 0 && strings.Contains(out, "Rollout complete: 10 of 10 services restarted")
	})

	// A bad version: the first wave fails, the rollout halts.
	v2 := pids()
	for i := 0; i < n; i++ {
		e.write(fmt.Sprintf("r%02d.yaml", i), rolloutService(i, "3", true))
	}
	e.eventually("RolloutHalted", 60*time.Second, func() bool { return a.hasEvent("RolloutHalted", "8 pending") })
	time.Sleep(3 * time.Second) // passes keep coming (resync 2s): nothing more is restarted
	// held counts the failed services and those still on version 2.
	held := func() (failed, same int) {
		for u, p := range pids() {
			switch {
			case p == "failed":
				failed++
			case p == v2[u]:
				same++
			}
		}
		return failed, same
	}
	failed, same := held()
	if failed != 2 || same != n-2 {
		t.Fatalf("after the bad version: %d failed, %d still on the previous version (want 2, %d): %v", failed, same, n-2, pids())
	}

	// The halted rollout, as the operator sees it.
	out, serr, code := e.reconciler("rollout", "status")
	if code != 1 || !strings.Contains(out, "Rollout HALTED: 2 of 10 services restarted") || !strings.Contains(out, "pending wave 4: r08.service, r09.service") {
		rec, _ := e.sb.ReadFile("/var/lib/resil/rollout.json")
		t.Errorf("rollout status (exit %d):\n%s%s\nrecord: %s", code, out, serr, rec)
	}
	out, _, code = e.reconciler("status")
	if code != 1 || strings.Count(out, "[ROLLOUT HALTED: previous version]") != n-2 || !strings.Contains(out, "rollout HALTED: 2 of 10 restarted") {
		t.Errorf("status (exit %d) does not show the halted rollout:\n%s", code, out)
	}
	out, _, code = e.reconciler("diff", "--max-parallel-restarts", "2")
	if code != 0 || !strings.Contains(out, "wave 1: r02.service, r03.service") || !strings.Contains(out, "halted: r00.service, r01.service failed") || !strings.Contains(out, "the rollout holds 8 services") {
		t.Errorf("diff (exit %d) does not show the halted waves:\n%s", code, out)
	}

	// rollout resume goes on past r00 and r01: the next wave gets the bad
	// version too, fails, and halts the rollout again.
	if out, _, code := e.reconciler("rollout", "resume"); code != 0 || !strings.Contains(out, "past r00.service, r01.service; 8 pending") {
		t.Fatalf("rollout resume (exit %d): %s", code, out)
	}
	e.eventually("the next wave failed", 60*time.Second, func() bool { f, _ := held(); return f == 4 })
	time.Sleep(3 * time.Second)
	if failed, same = held(); failed != 4 || same != n-4 {
		t.Fatalf("after resume: %d failed, %d on the previous version (want 4, %d): %v", failed, same, n-4, pids())
	}
	if out, _, _ := e.reconciler("events"); !strings.Contains(out, "RolloutResumed") {
		t.Errorf("no RolloutResumed event:\n%s", out)
	}

	// A fixed version: the failed ones restart at once, the rest in waves;
	// the rollout completes.
	for i := 0; i < n; i++ {
		e.write(fmt.Sprintf("r%02d.yaml", i), rolloutService(i, "4", false))
	}
	e.eventually("version 4 everywhere, ready", 180*time.Second, func() bool {
		out, _, code := e.reconciler("status")
		return code == 0 && strings.Count(out, " yes ") == n
	})
	e.eventually("rollout complete", 30*time.Second, func() bool {
		out, _, code := e.reconciler("rollout", "status")
		return code == 0 && strings.Contains(out, "Rollout complete")
	})
	if !a.hasEvent("RolloutComplete", "services restarted") {
		t.Errorf("no RolloutComplete event")
	}
}

// The agent is killed (-9) in the middle of a rollout; the next one
// resumes it where the host is, and no service is restarted twice.
func TestRolloutResumesAfterAgentKill9Systemd(t *testing.T) {
	e := newEnv(t)
	const n = 10
	for i := 0; i < n; i++ {
		e.write(fmt.Sprintf("r%02d.yaml", i), rolloutService(i, "1", false))
	}
	a := e.startAgent("--max-parallel-restarts", "2")
	ready := func() int {
		out, _, _ := e.reconciler("status")
		return strings.Count(out, " yes ")
	}
	e.eventually("all ready", 60*time.Second, func() bool { return ready() == n })
	starts := func() (v2 int) {
		for i := 0; i < n; i++ {
			data, _ := e.sb.ReadFile(fmt.Sprintf("/tmp/starts-%02d", i))
			v2 += strings.Count(string(data), "2")
		}
		return v2
	}
	for i := 0; i < n; i++ {
		e.write(fmt.Sprintf("r%02d.yaml", i), rolloutService(i, "2", false))
	}
	e.eventually("two waves begun", 60*time.Second, func() bool { return starts() >= 3 })
	if _, err := e.sb.Run(e.ctx, "kill", "-9", e.agentPID()); err != nil {
		t.Fatal(err)
	}
	<-a.done
	killedAt := starts()
	e.startAgent("--max-parallel-restarts", "2")
	e.eventually("rollout done", 120*time.Second, func() bool { return starts() == n && ready() == n })
	time.Sleep(3 * time.Second)
	for i := 0; i < n; i++ {
		data, _ := e.sb.ReadFile(fmt.Sprintf("/tmp/starts-%02d", i))
		if got := strings.Fields(string(data)); strings.Join(got, " ") != "1 2" {
			t.Errorf("r%02d started as versions %v, want 1 then 2 once", i, got)
		}
	}
	t.Logf("agent killed with %d of %d services restarted; the next agent finished the rollout", killedAt, n)
}

// The same pacing on the process backend: 4 services, one at a time; an
// agent kill -9 in the middle; then a bad version halts after one.
func TestRolloutWavesProcess(t *testing.T) {
	r := newProcRollout(t)
	const n = 4
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freeTCPPort(t)
	}
	write := func(v string) {
		for i := 0; i < n; i++ {
			r.write(fmt.Sprintf("p%d", i), fmt.Sprintf(`  command: ["/bin/sh", "-c", "echo $VERSION $(date +%%s%%N) >> %s; sleep 1; exec /usr/bin/python3 -m http.server %d --bind 127.0.0.1"]
  environment: {VERSION: "%s"}
  health:
    readiness: {tcp: "127.0.0.1:%d", interval: 200ms, failures: 1}
`, r.log, ports[i], v, ports[i]))
		}
	}
	write("1")
	a := startProcAgent(t, r.m, r.state, "--max-parallel-restarts", "1")
	waitFor(t, "version 1 up", 60*time.Second, func() bool { return len(r.starts("1")) == n })
	time.Sleep(2 * time.Second) // all ready
	write("2")
	// kill -9 the agent after the second restart; its successor (which
	// adopts the running processes) finishes the rollout, restarting no
	// service twice.
	waitFor(t, "two restarts", 60*time.Second, func() bool { return len(r.starts("2")) >= 2 })
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.done
	startProcAgent(t, r.m, r.state, "--stop-on-exit", "--max-parallel-restarts", "1")
	waitFor(t, "version 2 everywhere", 90*time.Second, func() bool { return len(r.starts("2")) == n })
	s := r.starts("2")
	for i := 0; i+1 < n; i++ {
		if d := time.Duration(s[i+1] - s[i]); d < time.Second {
			t.Errorf("2 services started within %s: more than 1 restarting at once (%v)", d, s)
		}
	}
	t.Logf("process backend: %d services one at a time, agent kill -9 after 2, in %s", n, time.Duration(s[n-1]-s[0]).Round(10*time.Millisecond))
	waitFor(t, "rollout complete", 30*time.Second, func() bool {
		out, code := r.cli("rollout", "status")
		return code == 0 && strings.Contains(out, "Rollout complete: 4 of 4")
	})
	time.Sleep(time.Second)
	if got := len(r.starts("2")); got != n {
		t.Errorf("%d starts of version 2, want %d: a service restarted twice", got, n)
	}

	// A bad version: the first wave's service fails, the other 3 keep
	// version 2.
	for i := 0; i < n; i++ {
		r.write(fmt.Sprintf("p%d", i), fmt.Sprintf("  command: [\"/bin/sh\", \"-c\", \"echo 3 $(date +%%s%%N) >> %s; exit 3\"]\n  restart: {policy: never}\n", r.log))
	}
	waitFor(t, "rollout halted", 60*time.Second, func() bool {
		out, code := r.cli("rollout", "status")
		return code == 1 && strings.Contains(out, "Rollout HALTED: 1 of 4 services restarted") && strings.Contains(out, "failed:       p0.service")
	})
	time.Sleep(3 * time.Second) // passes go on (resync 1s): nothing more restarts
	if got := len(r.starts("3")); got != 1 {
		t.Errorf("%d services started the bad version, want 1 (the first wave)", got)
	}
	if out, code := r.cli("status"); code != 1 || strings.Count(out, "[ROLLOUT HALTED: previous version]") != n-1 {
		t.Errorf("status (exit %d) does not show 3 services held:\n%s", code, out)
	}
}

// --min-ready on the process backend, services without a readiness probe
// and with the run's default pacing given explicitly at 1: a restarted
// service counts as ready only once it ran 1.5 s, so consecutive new
// processes start at least 1.5 s apart; `rollout status` then reports the
// rollout complete.
func TestRolloutMinReadyProcess(t *testing.T) {
	r := newProcRollout(t)
	const n = 3
	write := func(v string) {
		for i := 0; i < n; i++ {
			r.write(fmt.Sprintf("q%d", i), fmt.Sprintf("  command: [\"/bin/sh\", \"-c\", \"echo $VERSION $(date +%%s%%N) >> %s; exec sleep infinity\"]\n  environment: {VERSION: \"%s\"}\n", r.log, v))
		}
	}
	write("1")
	startProcAgent(t, r.m, r.state, "--stop-on-exit", "--max-parallel-restarts", "1", "--min-ready", "1500ms")
	waitFor(t, "version 1 up", 60*time.Second, func() bool { return len(r.starts("1")) == n })
	time.Sleep(2 * time.Second) // older than --min-ready
	write("2")
	waitFor(t, "version 2 everywhere", 60*time.Second, func() bool { return len(r.starts("2")) == n })
	s := r.starts("2")
	// Each time is the shell's `date` in the new process, some ms after
	// the fork the agent counts --min-ready from (one run measured 1.4949
	// s between two shells): a margin for that, far below 1.5 s, so a
	// wave that did not wait still fails.
	const execMargin = 100 * time.Millisecond
	for i := 0; i+1 < n; i++ {
		if d := time.Duration(s[i+1] - s[i]); d < 1500*time.Millisecond-execMargin {
			t.Errorf("2 services started %s apart, under --min-ready 1.5s (%v)", d, s)
		}
	}
	waitFor(t, "rollout complete", 30*time.Second, func() bool {
		out, code := r.cli("rollout", "status")
		return code == 0 && strings.Contains(out, "Rollout complete: 3 of 3 services restarted in 3 waves")
	})
	t.Logf("process backend: %d services one at a time, --min-ready 1.5s: %s", n, time.Duration(s[n-1]-s[0]).Round(10*time.Millisecond))
}

// procRollout is a process-backend rollout fixture: a manifests dir, a
// state dir, and a log each service appends "VERSION start-ns" to.
type procRollout struct {
	t             *testing.T
	m, state, log string
}

func newProcRollout(t *testing.T) *procRollout {
	dir, m, state := procDirs(t)
	return &procRollout{t: t, m: m, state: state, log: filepath.Join(dir, "starts")}
}

// write puts name.yaml with a spec (indented under spec:) in place.
func (r *procRollout) write(name, spec string) {
	r.t.Helper()
	s := fmt.Sprintf("apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: %s}\nspec:\n%s", name, spec)
	if err := os.WriteFile(filepath.Join(r.m, name+".yaml"), []byte(s), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// starts are the start times (ns) logged for version v, in order.
func (r *procRollout) starts(v string) []int64 {
	data, _ := os.ReadFile(r.log)
	var out []int64
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == v {
			x, _ := strconv.ParseInt(f[1], 10, 64)
			out = append(out, x)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// cli runs a reconciler command on the fixture's dirs.
func (r *procRollout) cli(args ...string) (string, int) {
	out, err := exec.Command(filepath.Join(agentDir, "reconciler"), append(args, "--state-dir", r.state, "--backend", "process", "--manifests", r.m)...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return string(out), code
}
