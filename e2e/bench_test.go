package e2e

// TestBenchSystemd: the systemd benchmarks of `make bench`. It boots fresh
// sandboxes (see helpers_test.go), drives the real agent binary inside them
// and prints a table of figures, with systemd's own costs measured in the
// same sandbox beside them. It asserts no timing; it fails only when the
// agent does something wrong while being measured (a step fails, more than
// one daemon-reload, a unit not active). The table is also written to the
// file RESIL_BENCH_RESULTS names (make bench: e2e/bench/results-systemd.txt),
// else under $TMPDIR/resil-bench, with the profiles beside it (benchOutDir).
// Section 0 (resil vs the shell baseline) is in bench_compare_test.go;
// RESIL_BENCH_PARTS picks compare, calls and/or detail (sections 1-5).
// Skipped unless RESIL_BENCH=1.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/desired"
	"resil.dev/resil/internal/sdbus"
	sdobserve "resil.dev/resil/observed/systemd"
)

const (
	benchEnv       = "RESIL_BENCH"
	benchResults   = "RESIL_BENCH_RESULTS"
	benchEdits     = 50               // edits per settle value (p99 of 50 is the maximum)
	benchIdle      = 60 * time.Second // idle CPU window
	benchStrace    = 15 * time.Second // idle syscall window (separate, so ptrace does not touch the CPU figure)
	benchQuiet     = 400 * time.Millisecond
	benchReloads   = 5  // daemon-reloads timed per sandbox
	benchStarts    = 10 // unit starts / enables timed per sandbox
	benchDiffReps  = 3
	benchEdits1000 = 10 // each costs an observe and a reload of 1000 units
	timeLayout     = "2006-01-02T15:04:05.000Z0700"
)

// TestBenchSystemd measures cold converge (1, 100, 1000 services), edit →
// active latency, diff, idle CPU and D-Bus traffic, and RSS. Each sandbox
// runs alone (sequential subtests) so that the two cores are not shared.
func TestBenchSystemd(t *testing.T) {
	if os.Getenv(benchEnv) != "1" {
		t.Skipf("benchmark: set %s=1 (make bench)", benchEnv) // not a prerequisite: opt-in
	}
	rep := &benchReport{}
	parts := os.Getenv("RESIL_BENCH_PARTS") // any of "compare", "calls", "detail" (default: all)
	if parts == "" || strings.Contains(parts, "compare") {
		t100, t1000 := 3, 1                                // pairs of trials (resil + baseline) per size
		if v := os.Getenv("RESIL_BENCH_TRIALS"); v != "" { // "100pairs,1000pairs", e.g. "1,0"
			a, b, _ := strings.Cut(v, ",")
			t100, _ = strconv.Atoi(a)
			t1000, _ = strconv.Atoi(b)
		}
		benchCompare(t, rep, t100, t1000)
	}
	if parts == "" || strings.Contains(parts, "calls") {
		for _, n := range []int{100, 1000} {
			t.Run(fmt.Sprintf("calls_%d", n), func(t *testing.T) { benchCalls(t, rep, n) })
		}
	}
	if parts == "" || strings.Contains(parts, "detail") {
		t.Run("n1", func(t *testing.T) { benchSandbox(t, rep, 1) })
		t.Run("n100", func(t *testing.T) { benchSandbox(t, rep, 100) })
		t.Run("n1000", func(t *testing.T) { benchSandbox(t, rep, 1000) })
	}
	text := rep.render()
	fmt.Print(text)
	out := os.Getenv(benchResults)
	if out == "" {
		out = filepath.Join(benchOutDir(), "results-systemd.txt")
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", out)
}

// benchSandbox runs everything measured at one size in one fresh sandbox.
func benchSandbox(t *testing.T, rep *benchReport, n int) {
	load0, _ := os.ReadFile("/proc/loadavg")
	defer func() {
		load1, _ := os.ReadFile("/proc/loadavg")
		rep.load = append(rep.load, fmt.Sprintf("%d units: %s → %s", n, strings.Join(strings.Fields(string(load0))[:3], " "), strings.Join(strings.Fields(string(load1))[:3], " ")))
	}()
	b := newBench(t)
	names := b.writeServices(n)
	if n == 1000 {
		rep.diffCold = b.diffRuns(false)
	}
	rep.cold = append(rep.cold, b.coldApply(names))
	switch n {
	case 100:
		rep.calls = b.observeCalls(names)
		rep.idle = b.idle(names)
		rep.edits = append(rep.edits, b.edits(n, names[:benchEdits], "100ms"))
		rep.edits = append(rep.edits, b.edits(n, names[benchEdits:2*benchEdits], "0"))
	case 1000:
		rep.diffWarm = b.diffRuns(true)
		rep.calls1000 = b.observeCalls(names)
		rep.rss = b.rss()
		rep.edits = append(rep.edits, b.edits(n, names[:benchEdits1000], "100ms"))
	}
	// Last, so that its extra units and reloads disturb nothing above.
	rep.costs = append(rep.costs, b.systemdCosts(names))
}

// bench is one sandbox with the agent, plus a bus connection from the test
// process and a context long enough for the slow parts (env's own is 4 min).
type bench struct {
	*env
	ctx  context.Context
	conn *sdbus.Conn
}

func newBench(t *testing.T) *bench {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	t.Cleanup(cancel)
	conn, err := sdbus.DialBus(ctx, e.sb.Root()+"/run/dbus/system_bus_socket")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	e.agentEnv = []string{debugPprofEnv + "=1"} // heap and CPU profiles for section 0; costs nothing unasked
	return &bench{env: e, ctx: ctx, conn: conn}
}

func benchName(i int) string { return fmt.Sprintf("b%04d", i) }

// writeServices writes n /bin/sleep infinity services and returns their
// unit names.
func (b *bench) writeServices(n int) []string {
	var names []string
	for i := 1; i <= n; i++ {
		name := benchName(i)
		b.write(name+".yaml", svc(name, "  environment: {GEN: \"v-0-x\"}\n"))
		names = append(names, name+".service")
	}
	return names
}

// run is one timed CLI run inside the sandbox under /usr/bin/time.
type run struct {
	stdout, stderr string
	code           int
	start, end     time.Time
	wall           time.Duration // measured by the test, nsenter included
	cpu            time.Duration // user+sys of the reconciler (/usr/bin/time)
	maxRSSKiB      int
}

const timeOut = "/run/resil-bench.time"

func (b *bench) cli(args ...string) run {
	b.t.Helper()
	full := append([]string{"-o", timeOut, "-f", "%U %S %M", agentBin}, args...)
	full = append(full, "--backend", "systemd", "--state-dir", "/var/lib/resil", "--manifests", manifestsDir,
		"--log-format", "console", "--log-level", "debug")
	cmd := b.sb.Command(b.ctx, "/usr/bin/time", full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	r := run{start: time.Now()}
	err := cmd.Run()
	r.end = time.Now()
	r.wall = r.end.Sub(r.start)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		b.t.Fatalf("run reconciler %v: %v", args, err)
	}
	r.stdout, r.stderr = out.String(), errb.String()
	data, err := b.sb.ReadFile(timeOut)
	if err != nil {
		b.t.Fatalf("read %s: %v", timeOut, err)
	}
	f := strings.Fields(lastLine(string(data)))
	if len(f) == 3 {
		u, _ := strconv.ParseFloat(f[0], 64)
		s, _ := strconv.ParseFloat(f[1], 64)
		r.cpu = time.Duration((u + s) * float64(time.Second))
		r.maxRSSKiB, _ = strconv.Atoi(f[2])
	}
	return r
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// parseLogs parses the log lines of a run's stderr: JSON lines, or zap's
// console lines (time, level, [logger,] caller, message, {fields}).
// The CLI runs here use the console format: zap's production (JSON) config
// samples each message after 100 a second, which drops most step lines of
// a large converge.
func parseLogs(stderr string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var m map[string]any
		if len(line) > 0 && line[0] == '{' {
			if json.Unmarshal(line, &m) == nil {
				out = append(out, m)
			}
			continue
		}
		parts := strings.Split(string(line), "\t")
		if len(parts) < 4 {
			continue
		}
		if _, err := time.Parse(timeLayout, parts[0]); err != nil {
			continue
		}
		c := slices.IndexFunc(parts[2:], func(p string) bool { return strings.Contains(p, ".go:") })
		if c < 0 || c+3 >= len(parts) {
			continue
		}
		c += 2
		m = map[string]any{}
		if c+2 < len(parts) && strings.HasPrefix(parts[c+2], "{") {
			_ = json.Unmarshal([]byte(parts[c+2]), &m)
		}
		m["time"], m["level"], m["msg"] = parts[0], parts[1], parts[c+1]
		if c == 3 {
			m["logger"] = parts[2]
		}
		out = append(out, m)
	}
	return out
}

func logTime(m map[string]any) time.Time {
	s, _ := m["time"].(string)
	ts, _ := time.Parse(timeLayout, s)
	return ts
}

func isStepLog(m map[string]any) bool {
	if m["logger"] != "reconcile" {
		return false
	}
	switch m["msg"] {
	case "step applied", "step unchanged", "step failed", "step skipped":
		return true
	}
	return false
}

// stepOp is the op of a Step.String() ("write /etc/...", "daemon-reload (...)").
func stepOp(s string) string { op, _, _ := strings.Cut(s, " "); return op }

// phases splits a run's wall time by the reconciler's step log timestamps
// (millisecond precision): each step lasts from the previous log line to
// its own. "before steps" is process start (nsenter included) to the end
// of the first step, i.e. startup, load, render, observe and plan.
func phases(r run) (order []string, dur map[string]time.Duration) {
	dur = map[string]time.Duration{}
	prev := r.start
	first := true
	for _, m := range parseLogs(r.stderr) {
		if !isStepLog(m) {
			continue
		}
		ts := logTime(m)
		key := stepOp(fmt.Sprint(m["step"]))
		if first {
			key, first = "before steps", false
		}
		if _, ok := dur[key]; !ok {
			order = append(order, key)
		}
		dur[key] += ts.Sub(prev)
		prev = ts
	}
	if !first {
		order = append(order, "after steps")
		dur["after steps"] = r.end.Sub(prev)
	}
	return order, dur
}

// pid1CPU is the CPU time of the sandbox's systemd so far.
func (b *bench) pid1CPU() time.Duration { return b.procCPU("1") }

// procCPU reads utime+stime of pid (sandbox PID namespace) from /proc/PID/stat.
func (b *bench) procCPU(pid string) time.Duration {
	b.t.Helper()
	data, err := b.sb.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		b.t.Fatalf("read stat of %s: %v", pid, err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// procStatus reads fields of /proc/PID/status in KiB.
func (b *bench) procStatus(pid string, keys ...string) map[string]int {
	b.t.Helper()
	data, err := b.sb.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		b.t.Fatalf("read status of %s: %v", pid, err)
	}
	out := map[string]int{}
	for _, l := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && slices.Contains(keys, k) {
			out[k], _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return out
}

// journalReloads counts systemd's "Reloading." lines (PID 1, this boot).
func (b *bench) journalReloads() int {
	b.t.Helper()
	if _, err := b.sb.Run(b.ctx, "journalctl", "--sync"); err != nil {
		b.t.Fatal(err)
	}
	out, err := b.sb.Journal(b.ctx, "_PID=1", "-o", "cat")
	if err != nil {
		b.t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == "Reloading." {
			n++
		}
	}
	return n
}

// activeCount asks systemd (one ListUnitsByNames per 256 names) how many of
// names are active.
func (b *bench) activeCount(names []string) int {
	b.t.Helper()
	n := 0
	for c := range slices.Chunk(names, 256) {
		st, err := b.conn.ListUnitsByNamesContext(b.ctx, c)
		if err != nil {
			b.t.Fatal(err)
		}
		for _, s := range st {
			if s.ActiveState == "active" {
				n++
			}
		}
	}
	return n
}

type coldResult struct {
	n                  int
	r                  run
	reported           string // the agent's own DURATION
	steps, failed      int
	reloadSteps        int
	journalReloads     int
	active             int
	pid1CPU            time.Duration
	phaseOrder         []string
	phaseDur           map[string]time.Duration
	startsPerSecond    float64
	perUnitAfterReload time.Duration
}

// summaryLine parses apply's last line: "N steps, N failed, N objects, DURATION (plan HASH)".
func summaryLine(out string) (steps, failed int, dur string) {
	l := lastLine(out)
	f := strings.Fields(l)
	if len(f) >= 7 {
		steps, _ = strconv.Atoi(f[0])
		failed, _ = strconv.Atoi(f[2])
		dur = f[6]
		dur = strings.TrimSuffix(dur, ",")
	}
	return
}

// coldApply runs `reconciler apply` on a sandbox where nothing is converged.
func (b *bench) coldApply(names []string) coldResult {
	b.t.Helper()
	reloads0 := b.journalReloads()
	cpu0 := b.pid1CPU()
	r := b.cli("apply")
	cpu1 := b.pid1CPU()
	if r.code != 0 {
		b.t.Errorf("apply exit %d\n%s\n%s", r.code, tail(r.stdout, 20), tail(r.stderr, 20))
	}
	c := coldResult{n: len(names), r: r, pid1CPU: cpu1 - cpu0}
	c.steps, c.failed, c.reported = summaryLine(r.stdout)
	c.reloadSteps = countLines(r.stdout, "daemon-reload")
	c.journalReloads = b.journalReloads() - reloads0
	c.active = b.activeCount(names)
	c.phaseOrder, c.phaseDur = phases(r)
	after := c.phaseDur["enable"] + c.phaseDur["start"]
	if after > 0 {
		c.startsPerSecond = float64(len(names)) / after.Seconds()
		c.perUnitAfterReload = after / time.Duration(len(names))
	}
	if c.reloadSteps != 1 || c.journalReloads != 1 {
		b.t.Errorf("cold apply of %d: %d daemon-reload steps, %d reloads in the journal; want 1 and 1", len(names), c.reloadSteps, c.journalReloads)
	}
	if c.active != len(names) {
		b.t.Errorf("cold apply of %d: %d active", len(names), c.active)
	}
	b.t.Logf("cold %d: %s wall, agent says %s, phases %v", len(names), r.wall.Round(time.Millisecond), c.reported, c.phaseDur)
	return c
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

type diffResult struct {
	converged bool
	wall, cpu []time.Duration
	maxRSSKiB int
	steps     string
}

// diffRuns times `reconciler diff` benchDiffReps times.
func (b *bench) diffRuns(converged bool) diffResult {
	b.t.Helper()
	d := diffResult{converged: converged}
	want := 1
	if converged {
		want = 0
	}
	for range benchDiffReps {
		r := b.cli("diff")
		if r.code != want {
			b.t.Errorf("diff exit %d, want %d\n%s", r.code, want, tail(r.stderr, 10))
		}
		d.wall = append(d.wall, r.wall)
		d.cpu = append(d.cpu, r.cpu)
		d.maxRSSKiB = max(d.maxRSSKiB, r.maxRSSKiB)
		d.steps = lastLine(r.stdout)
	}
	return d
}

type callsResult struct {
	n          int
	observer   uint64 // Observer.Calls per Observe
	wire       uint64 // method calls on the wire per Observe
	took       []time.Duration
	formula    int
	listChunks int
}

// observeCalls runs the agent's own Observer (same package, same options as
// the agent except the transport: the sandbox's bus from the host instead
// of the private socket) on names, three times, and counts its D-Bus calls.
func (b *bench) observeCalls(names []string) callsResult {
	b.t.Helper()
	root := b.sb.Root()
	obs := sdobserve.New(b.conn, root+"/etc/systemd/system", sdobserve.WithRoot(root),
		sdobserve.WithManagerConf(root+"/etc/systemd/system.conf.d/"+desired.WatchdogFile))
	c := callsResult{n: len(names), listChunks: (len(names) + 255) / 256}
	c.formula = c.listChunks + len(names) + len(sdobserve.ManagerProperties)
	for range 3 {
		o0, w0 := obs.Calls(), b.conn.Wire().Calls()
		start := time.Now()
		if _, err := obs.Observe(b.ctx, names); err != nil {
			b.t.Fatal(err)
		}
		c.took = append(c.took, time.Since(start))
		c.observer, c.wire = obs.Calls()-o0, b.conn.Wire().Calls()-w0
	}
	if int(c.observer) != c.formula {
		b.t.Logf("observer made %d calls for %d units, formula says %d", c.observer, len(names), c.formula)
	}
	return c
}

// startAgent starts `reconciler run` like env.startAgent, under b's longer
// context; later flags override earlier ones.
func (b *bench) startAgent(extra ...string) *agent {
	b.t.Helper()
	args := append([]string{"run", "--backend", "systemd", "--state-dir", "/var/lib/resil", "--manifests", manifestsDir,
		"--log-level", "debug", "--max-parallel-restarts", "0"}, extra...)
	a := b.launchAgent(b.ctx, args)
	b.t.Cleanup(func() { b.stopAgent(a, 10*time.Second) })
	deadline := time.Now().Add(3 * time.Minute)
	for a.countLogs("first pass done") == 0 {
		if time.Now().After(deadline) {
			b.t.Fatalf("agent: no first pass\n%s", tail(a.output(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return a
}

// logsSince returns a copy of the agent's log lines from index i.
func (a *agent) logsSince(i int) []map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.logs[min(i, len(a.logs)):])
}

func (a *agent) logCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.logs)
}

// settle waits until the agent has logged nothing and used no CPU tick
// for d (at most max). Logs alone are not enough: a pass logs only when it
// ends, and a converged pass over 1000 units is silent for ~1 s.
func (b *bench) settle(a *agent, d, max time.Duration) {
	b.t.Helper()
	pid := b.agentPID()
	deadline := time.Now().Add(max)
	n, cpu, since := a.logCount(), b.procCPU(pid), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		m, c := a.logCount(), b.procCPU(pid)
		if m != n || c != cpu {
			n, cpu, since = m, c, time.Now()
		} else if time.Since(since) >= d {
			return
		}
	}
	b.t.Logf("agent still busy after %s", max)
}

func isPass(m map[string]any) bool {
	if m["logger"] != "loop" {
		return false
	}
	switch m["msg"] {
	case "pass applied changes", "pass converged", "pass finished with errors":
		return true
	}
	return false
}

func tookOf(m map[string]any) time.Duration {
	f, _ := m["took"].(float64) // zap's production encoder: seconds
	return time.Duration(f * float64(time.Second))
}

type idleResult struct {
	n                 int
	firstPassCPU      time.Duration
	firstPassTook     time.Duration
	window            time.Duration
	cpu               time.Duration
	passes            int
	straceWindow      time.Duration
	straceWrites      int // write/sendmsg on sockets (D-Bus) during the strace window
	straceOther       int // other writes (logs)
	straceSignalsRead int // reads on sockets (signals from systemd)
	rssKiB, hwmKiB    int
	resync, settle    string
}

// idle starts the agent with the default resync (5 min) on converged
// services and measures its CPU for benchIdle, then traces its socket
// writes for benchStrace.
func (b *bench) idle(names []string) idleResult {
	b.t.Helper()
	a := b.startAgent("--settle", "100ms")
	defer b.stopAgent(a, 10*time.Second)
	pid := b.agentPID()
	r := idleResult{n: len(names), resync: "5m (default)", settle: "100ms"}
	for _, m := range a.logsSince(0) {
		if isPass(m) {
			r.firstPassTook = tookOf(m)
			break
		}
	}
	b.settle(a, benchQuiet, 10*time.Second)
	r.firstPassCPU = b.procCPU(pid)
	i0, c0, t0 := a.logCount(), b.procCPU(pid), time.Now()
	time.Sleep(benchIdle)
	r.cpu, r.window = b.procCPU(pid)-c0, time.Since(t0)
	for _, m := range a.logsSince(i0) {
		if isPass(m) {
			r.passes++
		}
	}
	st := b.procStatus(pid, "VmRSS", "VmHWM")
	r.rssKiB, r.hwmKiB = st["VmRSS"], st["VmHWM"]
	r.straceWindow = benchStrace
	sc := b.strace(pid, benchStrace, nil)
	r.straceWrites, r.straceSignalsRead, r.straceOther = sc.sockWrites, sc.sockReads, sc.otherWrites
	return r
}

// sysCounts are an strace window's syscalls of the agent.
type sysCounts struct {
	sockWrites, sockReads, otherWrites int
	readBytes                          map[string]int // per socket fd: bytes received
	readCalls                          map[string]int // per socket fd: reads that returned data
}

// strace attaches strace to pid (sandbox PID namespace), runs during (or
// sleeps d when nil) and counts writes to and data reads from the
// process's sockets (its D-Bus connections to systemd's private socket),
// and other writes (logs).
func (b *bench) strace(pid string, d time.Duration, during func()) sysCounts {
	b.t.Helper()
	socks := map[string]bool{}
	out, err := b.sb.Run(b.ctx, "/bin/sh", "-c", "for f in /proc/"+pid+"/fd/*; do printf '%s %s\\n' \"${f##*/}\" \"$(readlink $f)\"; done")
	if err != nil {
		b.t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if fd, target, ok := strings.Cut(l, " "); ok && strings.HasPrefix(target, "socket:") {
			socks[fd] = true
		}
	}
	cmd := b.sb.Command(b.ctx, "timeout", "-s", "INT", strconv.Itoa(int(d.Seconds())), "strace", "-f", "-qq",
		"-e", "trace=write,writev,sendmsg,sendto,read,recvmsg,recvfrom", "-e", "signal=none", "-p", pid)
	var trace bytes.Buffer
	cmd.Stdout, cmd.Stderr = &trace, &trace
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	if during != nil {
		time.Sleep(500 * time.Millisecond) // attach
		during()
	}
	_ = cmd.Wait() // timeout exits 124
	c := sysCounts{readBytes: map[string]int{}, readCalls: map[string]int{}}
	for _, l := range strings.Split(trace.String(), "\n") {
		if _, rest, ok := strings.Cut(l, "] "); ok && strings.HasPrefix(l, "[pid") {
			l = rest
		}
		call, args, ok := strings.Cut(l, "(")
		if !ok {
			continue
		}
		fd := args
		if i := strings.IndexAny(fd, ", "); i >= 0 {
			fd = fd[:i]
		}
		ret := -1
		if i := strings.LastIndex(l, ") = "); i >= 0 {
			ret, _ = strconv.Atoi(strings.Fields(l[i+4:])[0])
		}
		switch call {
		case "write", "writev", "sendmsg", "sendto":
			if socks[fd] {
				c.sockWrites++
			} else {
				c.otherWrites++
			}
		case "read", "recvmsg", "recvfrom":
			if socks[fd] && ret > 0 {
				c.sockReads++
				c.readCalls[fd]++
				c.readBytes[fd] += ret
			}
		}
	}
	return c
}

type editSample struct {
	total             time.Duration // write → new value active (seen by a signal on the host)
	toWriteStep       time.Duration // write → unit file written (notice, settle, load, observe, plan)
	reload, restart   time.Duration // the daemon-reload and restart steps
	toSeen            time.Duration // restart step logged → host saw it active
	passes            int
	appliedTook       time.Duration
	breakdownComplete bool
}

type editResult struct {
	units    int
	n, edits int
	settle   string
	samples  []editSample
}

// edits rewrites each unit's manifest once (a new environment value) with
// `reconciler run --settle S` running, and times write → active. Each unit
// is edited once so that no start limit is approached. Activity is seen by
// the test through PropertiesChanged signals on the sandbox's bus, checked
// with property reads, with a 100 ms poll as a fallback.
func (b *bench) edits(units int, names []string, settle string) editResult {
	b.t.Helper()
	a := b.startAgent("--settle", settle)
	defer b.stopAgent(a, 10*time.Second)
	b.settle(a, benchQuiet, 10*time.Second)
	ch := make(chan *godbus.Signal, 1024)
	stop, err := b.conn.WatchUnitSignals(b.ctx, ch)
	if err != nil {
		b.t.Fatal(err)
	}
	defer stop()
	res := editResult{units: units, n: len(names), settle: settle}
	for i, unit := range names {
		name := strings.TrimSuffix(unit, ".service")
		val := fmt.Sprintf("v-%d-x", i+1)
		prevStart := b.mainStart(unit)
		for len(ch) > 0 {
			<-ch
		}
		li := a.logCount()
		t0 := time.Now()
		b.write(name+".yaml", svc(name, "  environment: {GEN: \""+val+"\"}\n"))
		seen := b.waitActive(ch, unit, "GEN="+val, prevStart, 30*time.Second)
		b.settle(a, benchQuiet, 15*time.Second)
		s := editSample{total: seen.Sub(t0)}
		var tWrite, tReload, tRestart time.Time
		for _, m := range a.logsSince(li) {
			if isPass(m) {
				s.passes++
				if m["msg"] == "pass applied changes" {
					s.appliedTook += tookOf(m)
				}
			}
			if m["logger"] != "reconcile" || m["msg"] != "step applied" {
				continue
			}
			switch stepOp(fmt.Sprint(m["step"])) {
			case "write":
				tWrite = logTime(m)
			case "daemon-reload":
				tReload = logTime(m)
			case "restart":
				tRestart = logTime(m)
			}
		}
		if !tWrite.IsZero() && !tReload.IsZero() && !tRestart.IsZero() {
			s.breakdownComplete = true
			s.toWriteStep, s.reload, s.restart, s.toSeen = tWrite.Sub(t0), tReload.Sub(tWrite), tRestart.Sub(tReload), seen.Sub(tRestart)
		}
		res.samples = append(res.samples, s)
	}
	res.edits = len(res.samples)
	if n := a.countLogs("step failed"); n > 0 {
		b.t.Errorf("settle %s: %d steps failed", settle, n)
	}
	return res
}

func (b *bench) mainStart(unit string) uint64 {
	b.t.Helper()
	p, err := b.conn.GetUnitTypePropertyContext(b.ctx, unit, "Service", "ExecMainStartTimestampMonotonic")
	if err != nil {
		b.t.Fatal(err)
	}
	v, _ := p.Value.Value().(uint64)
	return v
}

// waitActive returns when unit is active with env among its Environment and
// started after prevStart: the receipt time of the signal (or poll) that
// showed it.
func (b *bench) waitActive(ch <-chan *godbus.Signal, unit, env string, prevStart uint64, timeout time.Duration) time.Time {
	b.t.Helper()
	path := sddbus.PathBusEscape(unit)
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	deadline := time.After(timeout)
	for {
		var at time.Time
		select {
		case s := <-ch:
			at = time.Now()
			if string(s.Path) != "/org/freedesktop/systemd1/unit/"+path {
				continue
			}
		case <-poll.C:
			at = time.Now()
		case <-deadline:
			b.t.Fatalf("%s not active with %s after %s", unit, env, timeout)
		}
		props, err := b.conn.GetAllPropertiesContext(b.ctx, unit)
		if err != nil {
			b.t.Fatal(err)
		}
		envs, _ := props["Environment"].([]string)
		start, _ := props["ExecMainStartTimestampMonotonic"].(uint64)
		if props["ActiveState"] == "active" && slices.Contains(envs, env) && start > prevStart {
			return at
		}
	}
}

type rssResult struct {
	n                int
	rssKiB, hwmKiB   int
	firstPassTook    time.Duration
	firstPassCPU     time.Duration
	convergedTook    []time.Duration // forced passes on the converged set
	convergedPassCPU time.Duration
}

// rss starts the agent on the converged 1000 services, waits for the first
// pass, and reads VmRSS and VmHWM; then it forces a few converged passes
// (touching an unrelated file in the manifests dir) to time them.
func (b *bench) rss() rssResult {
	b.t.Helper()
	a := b.startAgent("--settle", "100ms")
	defer b.stopAgent(a, 10*time.Second)
	pid := b.agentPID()
	r := rssResult{n: 1000}
	for _, m := range a.logsSince(0) {
		if isPass(m) {
			r.firstPassTook = tookOf(m)
			break
		}
	}
	b.settle(a, benchQuiet, 10*time.Second)
	r.firstPassCPU = b.procCPU(pid)
	st := b.procStatus(pid, "VmRSS", "VmHWM")
	r.rssKiB, r.hwmKiB = st["VmRSS"], st["VmHWM"]
	c0 := b.procCPU(pid)
	const forced = 3
	for i := range forced {
		li := a.logCount()
		b.write("zz-unrelated.txt", strconv.Itoa(i)) // not *.yaml: a wake-up, nothing to do
		deadline := time.Now().Add(time.Minute)
		for done := false; !done && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			for _, m := range a.logsSince(li) {
				if isPass(m) {
					r.convergedTook = append(r.convergedTook, tookOf(m))
					done = true
					break
				}
			}
		}
		b.settle(a, benchQuiet, 10*time.Second)
	}
	r.convergedPassCPU = (b.procCPU(pid) - c0) / forced
	st = b.procStatus(pid, "VmRSS", "VmHWM")
	r.rssKiB, r.hwmKiB = max(r.rssKiB, st["VmRSS"]), st["VmHWM"]
	return r
}

type costResult struct {
	n                    int
	reload, systemctlRel []time.Duration
	startOneshot         []time.Duration
	startSimple, stop    []time.Duration
	startSimpleAgent     []time.Duration // with `reconciler run` connected
	reloadAgent          []time.Duration
	pid1PerStartAgent    time.Duration
	pid1PerReloadAgent   time.Duration
	fanout               sysCounts // agent's socket traffic while 10 unmanaged units start
	enable               []time.Duration
	getAll, listAll      []time.Duration
	pid1PerReload        time.Duration
	pid1PerStartSimple   time.Duration
	pid1PerEnable        time.Duration
}

// systemdCosts measures systemd's own costs in this sandbox over the bus
// from the test process (one extra hop through dbus-daemon compared with
// the agent's private socket): Reload, StartUnit to "done" of a oneshot and
// of a simple unit, StopUnit, EnableUnitFiles of one unit, GetAll of one
// unit, ListUnitsByNames of all managed names; and `systemctl
// daemon-reload` run inside (process start included).
func (b *bench) systemdCosts(names []string) costResult {
	b.t.Helper()
	c := costResult{n: len(names)}
	ctx := b.ctx
	cpu0 := b.pid1CPU()
	for range benchReloads {
		c.reload = append(c.reload, timed(b.t, func() error { return b.conn.ReloadContext(ctx) }))
	}
	c.pid1PerReload = (b.pid1CPU() - cpu0) / benchReloads
	for range 3 {
		c.systemctlRel = append(c.systemctlRel, timed(b.t, func() error { _, err := b.sb.Systemctl(ctx, "daemon-reload"); return err }))
	}
	for range 20 {
		c.getAll = append(c.getAll, timed(b.t, func() error { _, err := b.conn.GetAllPropertiesContext(ctx, names[0]); return err }))
	}
	for range 5 {
		c.listAll = append(c.listAll, timed(b.t, func() error {
			for ch := range slices.Chunk(names, 256) {
				if _, err := b.conn.ListUnitsByNamesContext(ctx, ch); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	// Fresh units, one per start, so that no start limit is approached.
	for k := range 3 * benchStarts {
		for _, u := range []struct{ name, body string }{
			{fmt.Sprintf("bench-oneshot-%d.service", k), "[Service]\nType=oneshot\nExecStart=/bin/true\n"},
			{fmt.Sprintf("bench-simple-%d.service", k), "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"},
		} {
			if err := b.sb.WriteFile("/etc/systemd/system/"+u.name, []byte(u.body), 0o644); err != nil {
				b.t.Fatal(err)
			}
		}
	}
	if err := b.conn.ReloadContext(ctx); err != nil {
		b.t.Fatal(err)
	}
	job := func(call func(context.Context, string, string, chan<- string) (int, error), unit string) error {
		ch := make(chan string, 1)
		if _, err := call(ctx, unit, "replace", ch); err != nil {
			return err
		}
		if r := <-ch; r != "done" {
			return fmt.Errorf("%s: job result %s", unit, r)
		}
		return nil
	}
	for k := range benchStarts {
		c.startOneshot = append(c.startOneshot, timed(b.t, func() error { return job(b.conn.StartUnitContext, fmt.Sprintf("bench-oneshot-%d.service", k)) }))
	}
	cpu0 = b.pid1CPU()
	for k := range benchStarts {
		c.startSimple = append(c.startSimple, timed(b.t, func() error { return job(b.conn.StartUnitContext, fmt.Sprintf("bench-simple-%d.service", k)) }))
	}
	c.pid1PerStartSimple = (b.pid1CPU() - cpu0) / benchStarts
	for k := range benchStarts {
		c.stop = append(c.stop, timed(b.t, func() error { return job(b.conn.StopUnitContext, fmt.Sprintf("bench-simple-%d.service", k)) }))
	}
	// The same with the agent running (idle, subscribed): systemd sends every
	// unit signal to each private-socket connection.
	a := b.startAgent("--settle", "100ms")
	b.settle(a, benchQuiet, 10*time.Second)
	cpu0 = b.pid1CPU()
	for k := range benchStarts {
		c.startSimpleAgent = append(c.startSimpleAgent, timed(b.t, func() error {
			return job(b.conn.StartUnitContext, fmt.Sprintf("bench-simple-%d.service", benchStarts+k))
		}))
	}
	c.pid1PerStartAgent = (b.pid1CPU() - cpu0) / benchStarts
	cpu0 = b.pid1CPU()
	for range 3 {
		c.reloadAgent = append(c.reloadAgent, timed(b.t, func() error { return b.conn.ReloadContext(ctx) }))
	}
	c.pid1PerReloadAgent = (b.pid1CPU() - cpu0) / 3
	// Untimed (ptrace slows the agent): what the agent receives while
	// systemd starts units it does not manage.
	c.fanout = b.strace(b.agentPID(), 4*time.Second, func() {
		for k := range benchStarts {
			if err := job(b.conn.StartUnitContext, fmt.Sprintf("bench-simple-%d.service", 2*benchStarts+k)); err != nil {
				b.t.Fatal(err)
			}
		}
	})
	b.stopAgent(a, 10*time.Second)
	cpu0 = b.pid1CPU()
	for k := range benchStarts {
		c.enable = append(c.enable, timed(b.t, func() error {
			_, _, err := b.conn.EnableUnitFilesContext(ctx, []string{fmt.Sprintf("bench-simple-%d.service", k)}, false, true)
			return err
		}))
	}
	c.pid1PerEnable = (b.pid1CPU() - cpu0) / benchStarts
	return c
}

func timed(t *testing.T, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	if err := f(); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// --- the report ---

type benchReport struct {
	cold      []coldResult
	costs     []costResult
	diffCold  diffResult
	diffWarm  diffResult
	calls     callsResult
	calls1000 callsResult
	idle      idleResult
	edits     []editResult
	rss       rssResult
	load      []string
	trials    []cmpTrial  // section 0 (bench_compare_test.go)
	calls12   []callCount // section 0, strace counts
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }

// quantile is the nearest-rank quantile (p99 of 50 samples is the maximum).
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
}

func (r *benchReport) costFor(n int) costResult {
	for _, c := range r.costs {
		if c.n == n {
			return c
		}
	}
	return costResult{}
}

func (r *benchReport) render() string {
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format+"\n", a...) }
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	p("resil systemd benchmarks (TestBenchSystemd, RESIL_BENCH=1 make bench)")
	p("run %s, commit %s (plus uncommitted work of the checkout), %d CPUs, kernel %s, %s",
		time.Now().UTC().Format("2006-01-02 15:04Z"), strings.TrimSpace(string(commit)), runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version())
	p("systemd 252 in the e2e namespace sandbox, generators masked (sandbox default); one fresh sandbox per size (and per trial in section 0), run one after another.")
	if len(r.load) > 0 {
		p("Host load average (1/5/15 min) before → after each sandbox (other work on this machine adds noise): %s", strings.Join(r.load, "; "))
	}
	p("Services: /bin/sleep infinity, restart always/100ms, one environment variable. Medians unless said otherwise.")
	p("")
	r.renderCompare(p)
	r.renderCalls(p)
	if len(r.cold) == 0 {
		return w.String() // RESIL_BENCH_PARTS=compare
	}

	p("1. Cold converge: `reconciler apply` on a fresh sandbox")
	p("%-6s %-10s %-9s %-9s %-9s %-6s %-13s %-9s %-8s", "units", "wall", "agent", "agentCPU", "PID1CPU", "steps", "reloads", "active", "maxRSS")
	for _, c := range r.cold {
		p("%-6d %-10s %-9s %-9s %-9s %-6d %-13s %-9s %-8s", c.n, ms(c.r.wall), c.reported, ms(c.r.cpu), ms(c.pid1CPU), c.steps,
			fmt.Sprintf("%d step/%d jnl", c.reloadSteps, c.journalReloads), fmt.Sprintf("%d/%d", c.active, c.n), fmt.Sprintf("%d MiB", c.r.maxRSSKiB/1024))
	}
	p("  wall: measured by the test around nsenter; agent: the DURATION apply prints; agentCPU: user+sys (/usr/bin/time);")
	p("  PID1CPU: utime+stime of the sandbox's systemd during the run; reloads: daemon-reload step lines / \"Reloading.\" lines of PID 1 in the journal.")
	p("  The cold daemon-reload loads every new unit: they are enabled before it, so their targets reference them. The reload")
	p("  that scales with loaded units (systemd's costs below) is paid by every later edit (section 2).")
	p("  Where the time goes (from the step log timestamps, ms precision; \"before steps\" = exec, dial, load, render, observe, plan, first write):")
	for _, c := range r.cold {
		var parts []string
		for _, k := range c.phaseOrder {
			parts = append(parts, fmt.Sprintf("%s %s", k, ms(c.phaseDur[k])))
		}
		p("    %4d: %s", c.n, strings.Join(parts, ", "))
		if c.startsPerSecond > 0 {
			p("          enable (before the reload) + start (after it): %s per unit, %.0f units/s", ms(c.perUnitAfterReload), c.startsPerSecond)
		}
	}
	p("")

	p("systemd's own costs, measured in the same sandboxes after the cold converge (D-Bus from the test through the sandbox's")
	p("dbus-daemon, one hop more than the agent's private socket; systemctl: run inside via nsenter, process start included):")
	hdr := fmt.Sprintf("  %-38s", "")
	for _, c := range r.costs {
		hdr += fmt.Sprintf(" %-12s", fmt.Sprintf("%d loaded", c.n))
	}
	p("%s", hdr)
	row := func(label string, f func(c costResult) string) {
		line := fmt.Sprintf("  %-38s", label)
		for _, c := range r.costs {
			line += fmt.Sprintf(" %-12s", f(c))
		}
		p("%s", line)
	}
	row(fmt.Sprintf("Reload (daemon-reload), n=%d", benchReloads), func(c costResult) string { return ms(median(c.reload)) })
	row("  PID 1 CPU per reload", func(c costResult) string { return ms(c.pid1PerReload) })
	row("Reload with the agent connected, n=3", func(c costResult) string { return ms(median(c.reloadAgent)) })
	row("  PID 1 CPU per reload", func(c costResult) string { return ms(c.pid1PerReloadAgent) })
	row("systemctl daemon-reload, n=3", func(c costResult) string { return ms(median(c.systemctlRel)) })
	row(fmt.Sprintf("StartUnit oneshot /bin/true→done, n=%d", benchStarts), func(c costResult) string { return ms(median(c.startOneshot)) })
	row(fmt.Sprintf("StartUnit simple sleep→done, n=%d", benchStarts), func(c costResult) string { return ms(median(c.startSimple)) })
	row("  PID 1 CPU per simple start", func(c costResult) string { return ms(c.pid1PerStartSimple) })
	row("StartUnit simple, agent connected", func(c costResult) string { return ms(median(c.startSimpleAgent)) })
	row("  PID 1 CPU per simple start", func(c costResult) string { return ms(c.pid1PerStartAgent) })
	row("  agent: socket reads (bytes) per start", func(c costResult) string {
		return fmt.Sprintf("%.1f (%d KiB)", float64(c.fanout.sockReads)/benchStarts, sum(c.fanout.readBytes)/benchStarts/1024)
	})
	row("  agent: sockets that received them", func(c costResult) string {
		var parts []string
		for fd, n := range c.fanout.readCalls {
			parts = append(parts, fmt.Sprintf("fd%s:%d", fd, n))
		}
		slices.Sort(parts)
		return strings.Join(parts, " ")
	})
	row("StopUnit simple→done", func(c costResult) string { return ms(median(c.stop)) })
	row("EnableUnitFiles, 1 unit", func(c costResult) string { return ms(median(c.enable)) })
	row("  PID 1 CPU per enable", func(c costResult) string { return ms(c.pid1PerEnable) })
	row("GetAll of one unit, n=20", func(c costResult) string { return ms(median(c.getAll)) })
	row("ListUnitsByNames of the managed units", func(c costResult) string { return ms(median(c.listAll)) })
	p("  Agent vs systemd, cold converge: apply wall / (1 Reload + N × (EnableUnitFiles + StartUnit simple)) at the same size:")
	for _, c := range r.cold {
		k := r.costFor(c.n)
		floor := median(k.reload) + time.Duration(c.n)*(median(k.enable)+median(k.startSimple))
		if floor > 0 {
			p("    %4d units: %s vs %s floor = %.2fx", c.n, ms(c.r.wall), ms(floor), c.r.wall.Seconds()/floor.Seconds())
		}
	}
	p("")

	p("2. Manifest edit → unit active with the new value (`reconciler run` on converged services; each edit rewrites one")
	p("   manifest's environment value by write+rename; \"active\" = a PropertiesChanged signal, checked by GetAll: ActiveState")
	p("   active, the new Environment, ExecMainStartTimestampMonotonic newer; p99 is nearest-rank: the maximum of %d, or %d, samples)", benchEdits, benchEdits1000)
	p("  %-6s %-8s %-6s %-9s %-9s %-9s | %-14s %-9s %-9s %-9s %-12s %-10s", "units", "settle", "edits", "p50", "p99", "min", "→unit written", "reload", "restart", "→seen", "passes/edit", "applyPass")
	for _, e := range r.edits {
		var tot, toW, rel, rst, seen, took []time.Duration
		passes := 0
		for _, s := range e.samples {
			tot = append(tot, s.total)
			passes += s.passes
			took = append(took, s.appliedTook)
			if s.breakdownComplete {
				toW, rel, rst, seen = append(toW, s.toWriteStep), append(rel, s.reload), append(rst, s.restart), append(seen, s.toSeen)
			}
		}
		p("  %-6d %-8s %-6d %-9s %-9s %-9s | %-14s %-9s %-9s %-9s %-12.1f %-10s", e.units, e.settle, e.edits, ms(median(tot)), ms(quantile(tot, 0.99)), ms(quantile(tot, 0)),
			ms(median(toW)), ms(median(rel)), ms(median(rst)), ms(median(seen)), float64(passes)/float64(max(1, len(e.samples))), ms(median(took)))
	}
	for _, e := range r.edits {
		if len(e.samples) == 0 {
			continue
		}
		w := slices.MaxFunc(e.samples, func(a, b editSample) int { return int(a.total - b.total) })
		p("  slowest edit, %d units, settle %s: %s = →unit written %s, reload %s, restart %s, →seen %s; %d passes, applying pass took %s",
			e.units, e.settle, ms(w.total), ms(w.toWriteStep), ms(w.reload), ms(w.restart), ms(w.toSeen), w.passes, ms(w.appliedTook))
	}
	p("  Breakdown medians from the agent's step log timestamps: →unit written = inotify + settle + load + observe + plan + write;")
	p("  →seen = restart step logged → the test saw it active (negative: systemd's signal reaches the test before the agent")
	p("  has its job result and logs it). passes/edit counts every pass the edit caused (the write+rename and the")
	p("  restart's own state-change signal each wake the loop); applyPass = \"took\" of the pass that applied the change.")
	p("")

	p("3. `reconciler diff` over 1000 manifests (n=%d each)", benchDiffReps)
	for _, d := range []diffResult{r.diffCold, r.diffWarm} {
		label := "cold (nothing written yet)"
		if d.converged {
			label = "converged"
		}
		p("  %-28s wall %-9s agent CPU %-9s maxRSS %d MiB — %s", label, ms(median(d.wall)), ms(median(d.cpu)), d.maxRSSKiB/1024, d.steps)
	}
	p("  Observer alone (the agent's observed/systemd code, run from the test over the sandbox's bus, n=3):")
	for _, c := range []callsResult{r.calls, r.calls1000} {
		p("    %4d units: %s per Observe, %d D-Bus calls counted by Observer.Calls (%d on the wire); formula %d ListUnitsByNames + %d GetAll + %d manager = %d",
			c.n, ms(median(c.took)), c.observer, c.wire, c.listChunks, c.n, len(sdobserve.ManagerProperties), c.formula)
	}
	p("")

	i := r.idle
	p("4. Idle: `reconciler run` (resync %s, settle %s) with %d services converged", i.resync, i.settle, i.n)
	p("  first pass took %s; agent CPU from exec through the first pass %s", ms(i.firstPassTook), ms(i.firstPassCPU))
	idleCPU := ms(i.cpu)
	if i.cpu == 0 {
		idleCPU = "< 10 ms (0 ticks)"
	}
	p("  over %s idle: agent CPU %s (%.3f%% of one core; /proc/PID/stat utime+stime, 10 ms ticks), passes %d",
		i.window.Round(time.Second), idleCPU, 100*i.cpu.Seconds()/i.window.Seconds(), i.passes)
	p("  D-Bus calls during the idle window: passes × calls per pass = %d × %d = %d (calls per pass measured above with the",
		i.passes, r.calls.observer, uint64(i.passes)*r.calls.observer)
	p("  agent's Observer over the same %d names; the agent logs no call count of its own, and busctl/dbus-monitor cannot see", i.n)
	p("  its private-socket traffic)")
	p("  cross-check, strace -p on the agent for a further %s: %d writes to its sockets (D-Bus), %d socket reads (signals),",
		i.straceWindow, i.straceWrites, i.straceSignalsRead)
	p("  %d other writes (logs)", i.straceOther)
	p("  agent VmRSS %d MiB, VmHWM %d MiB at 100 services", i.rssKiB/1024, i.hwmKiB/1024)
	p("")

	s := r.rss
	p("5. Memory of `reconciler run` with %d manifests, after convergence", s.n)
	p("  VmRSS %.1f MiB, VmHWM %.1f MiB (after the first pass and 3 forced converged passes)", float64(s.rssKiB)/1024, float64(s.hwmKiB)/1024)
	p("  first pass (converged set) took %s, agent CPU through it %s; forced converged passes took %s median, %s CPU each",
		ms(s.firstPassTook), ms(s.firstPassCPU), ms(median(s.convergedTook)), ms(s.convergedPassCPU))
	for _, c := range r.cold {
		if c.n == s.n {
			p("  (cold `apply` of %d peaked at %d MiB maxRSS)", c.n, c.r.maxRSSKiB/1024)
		}
	}
	return w.String()
}
