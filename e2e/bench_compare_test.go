package e2e

// Section 0 of TestBenchSystemd: resil against the shell baseline of issue
// 12 (bench/baseline.sh), in fresh sandboxes of the same kind, alternating
// (resil, baseline, then baseline, resil, ...), at 100 and 1000 services.
// Beside them: systemd's own lower bound for an edit (rewrite the unit file,
// Reload, RestartUnit; seen active as resil's edits are, and to "done" with
// nobody subscribed) and the memory of `reconciler run`.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/desired"
)

const (
	cmpUnitsDir   = hostMount + "/units" // the baseline's rendered unit files
	cmpScript     = hostMount + "/baseline.sh"
	cmpRepeats    = 3  // noop / one-changed / diff runs per trial
	cmpEdits100   = 20 // edit → active samples under run
	cmpEdits1000  = 8
	cmpMetricsURL = "http://127.0.0.1:9469"
	debugPprofEnv = "RESIL_DEBUG_PPROF" // cmd/reconciler/debugpprof.go
)

// cmpTrial is one tool at one size in one fresh sandbox.
type cmpTrial struct {
	tool    string // "resil" or "baseline"
	n       int
	seq     int // order of the trial in the whole run
	load    string
	cold    run
	coldPID time.Duration // PID 1 CPU during the cold converge
	noop    []time.Duration
	changed []time.Duration
	// changedNoWait: the same with apply --stay-up 0 (no wait before
	// judging that what it restarted stayed up).
	changedNoWait []time.Duration
	diff          []time.Duration // resil only
	edits         editResult      // resil only
	own           []time.Duration // resil sandbox: systemd's own rewrite + Reload + RestartUnit, seen as resil's edits are
	ownBare       []time.Duration // the same until the job is done, nobody subscribed
	mem           []memSample     // resil only: run's memory, before and after the edits
	passCPU       passProfile     // resil only: CPU profile of forced converged passes
}

// passProfile is a CPU profile of `run` over a few converged passes.
type passProfile struct {
	took []time.Duration // "took" of each forced pass
	cpu  time.Duration   // agent CPU (utime+stime) over the window
	top  string          // go tool pprof -top
}

// memSample is the memory of `reconciler run` at one moment.
type memSample struct {
	label    string
	status   map[string]int     // /proc/PID/status, KiB
	memstats map[string]float64 // go_memstats_* gauges of /metrics
	series   int                // sample lines of /metrics
	heapTop  string             // go tool pprof -top of /debug/pprof/heap?gc=1
	maps     []string           // resident KiB per mapping group of /proc/PID/smaps
	dbKiB    int                // size of the state dir's files (the SQLite database)
}

// benchCompare runs the alternating trials: sizes 100 (trials100 pairs)
// and 1000 (trials1000 pairs).
func benchCompare(t *testing.T, rep *benchReport, trials100, trials1000 int) {
	seq := 0
	for _, sz := range []struct{ n, pairs int }{{100, trials100}, {1000, trials1000}} {
		for p := range sz.pairs {
			order := []string{"resil", "baseline"}
			if p%2 == 1 {
				order = []string{"baseline", "resil"}
			}
			for _, tool := range order {
				seq++
				name := fmt.Sprintf("cmp_%s_%d_%d", tool, sz.n, p+1)
				s := seq
				t.Run(name, func(t *testing.T) {
					tr := cmpTrial{tool: tool, n: sz.n, seq: s}
					load0, _ := os.ReadFile("/proc/loadavg")
					b := newBench(t)
					if _, err := b.sb.Run(b.ctx, "ip", "link", "set", "lo", "up"); err != nil {
						t.Fatal(err) // the metrics listener (and pprof) on 127.0.0.1
					}
					names := b.writeServices(sz.n)
					if tool == "resil" {
						b.cmpResil(&tr, names)
					} else {
						b.cmpBaseline(&tr, names)
					}
					load1, _ := os.ReadFile("/proc/loadavg")
					tr.load = strings.Join(strings.Fields(string(load0))[:1], "") + "→" + strings.Join(strings.Fields(string(load1))[:1], "")
					rep.trials = append(rep.trials, tr)
				})
			}
		}
	}
}

// cmpResil: cold apply, apply with nothing to do, diff, one manifest
// changed + apply, then under run: memory, edit → active, memory; then,
// with the agent stopped, systemd's own cost of such an edit.
func (b *bench) cmpResil(tr *cmpTrial, names []string) {
	b.t.Helper()
	cpu0 := b.pid1CPU()
	tr.cold = b.cli("apply")
	tr.coldPID = b.pid1CPU() - cpu0
	if tr.cold.code != 0 {
		b.t.Fatalf("cold apply exit %d\n%s", tr.cold.code, tail(tr.cold.stderr, 20))
	}
	if got := b.activeCount(names); got != len(names) {
		b.t.Fatalf("cold apply: %d of %d active", got, len(names))
	}
	for range cmpRepeats {
		r := b.cli("apply")
		if r.code != 0 || countLines(r.stdout, "daemon-reload") != 0 {
			b.t.Errorf("apply with nothing to do: exit %d\n%s", r.code, tail(r.stdout, 10))
		}
		tr.noop = append(tr.noop, r.wall)
	}
	for range cmpRepeats {
		r := b.cli("diff")
		if r.code != 0 {
			b.t.Errorf("diff on a converged host: exit %d\n%s", r.code, tail(r.stdout, 10))
		}
		tr.diff = append(tr.diff, r.wall)
	}
	// One manifest changed: the last units (the edits below use the first).
	for k := range cmpRepeats {
		name := strings.TrimSuffix(names[len(names)-1-k], ".service")
		b.write(name+".yaml", svc(name, "  environment: {GEN: \"v-c-x\"}\n"))
		r := b.cli("apply")
		if r.code != 0 || countLines(r.stdout, "daemon-reload") != 1 {
			b.t.Errorf("apply of one changed manifest: exit %d\n%s", r.code, tail(r.stdout, 10))
		}
		tr.changed = append(tr.changed, r.wall)
	}
	for k := range cmpRepeats {
		name := strings.TrimSuffix(names[len(names)-1-cmpRepeats-k], ".service")
		b.write(name+".yaml", svc(name, "  environment: {GEN: \"v-c-y\"}\n"))
		r := b.cli("apply", "--stay-up", "0")
		if r.code != 0 || countLines(r.stdout, "daemon-reload") != 1 {
			b.t.Errorf("apply --stay-up 0 of one changed manifest: exit %d\n%s", r.code, tail(r.stdout, 10))
		}
		tr.changedNoWait = append(tr.changedNoWait, r.wall)
	}
	edits := cmpEdits100
	if len(names) >= 1000 {
		edits = cmpEdits1000
	}
	b.agentEnv = []string{debugPprofEnv + "=1", "GODEBUG=memprofilerate=4096"} // finer heap samples, for the memory agents only
	a := b.startAgent("--settle", "100ms")
	b.settle(a, benchQuiet, 20*time.Second)
	tr.mem = append(tr.mem, b.memory("steady state after the first pass"))
	b.stopAgent(a, 10*time.Second)
	b.agentEnv = []string{debugPprofEnv + "=1"}
	tr.edits = b.edits(len(names), names[:edits], "100ms") // starts its own agent
	// systemd's own, agent stopped, on other units: rewrite the unit file
	// (new Environment), Reload, RestartUnit. Measured two ways:
	//   - own: seen active exactly as resil's edits are (waitActive, over
	//     the same subscribed watch): the watch is a subscriber, and with
	//     one PID 1 sends every unit's signals during each reload;
	//   - ownBare: until the restart job is done, with nobody subscribed
	//     (this bench's figure before the watch was kept on).
	ctx := b.ctx
	rewrite := func(unit, gen string) (path string, data []byte) {
		path = "/etc/systemd/system/" + unit
		old, err := b.sb.ReadFile(path)
		if err != nil {
			b.t.Fatal(err)
		}
		nd := strings.Replace(string(old), "GEN=v-0-x", gen, 1)
		if nd == string(old) {
			b.t.Fatalf("%s: no GEN=v-0-x to change:\n%s", unit, old)
		}
		return path, []byte(nd)
	}
	writeReload := func(path string, data []byte) error {
		if err := b.sb.WriteFile(path, data, 0o644); err != nil {
			return err
		}
		return b.conn.ReloadContext(ctx)
	}
	ch := make(chan *godbus.Signal, 1024)
	stop, err := b.conn.WatchUnitSignals(ctx, ch)
	if err != nil {
		b.t.Fatal(err)
	}
	for i, unit := range names[edits : 2*edits] {
		gen := fmt.Sprintf("GEN=v-own%d-x", i)
		path, data := rewrite(unit, gen)
		prevStart := b.mainStart(unit)
		for len(ch) > 0 {
			<-ch
		}
		t0 := time.Now()
		if err := writeReload(path, data); err != nil {
			b.t.Fatal(err)
		}
		if _, err := b.conn.RestartUnitContext(ctx, unit, "replace", nil); err != nil {
			b.t.Fatal(err)
		}
		tr.own = append(tr.own, b.waitActive(ch, unit, gen, prevStart, 30*time.Second).Sub(t0))
	}
	stop()
	for i, unit := range names[2*edits : 3*edits] {
		path, data := rewrite(unit, fmt.Sprintf("GEN=v-bare%d-x", i))
		tr.ownBare = append(tr.ownBare, timed(b.t, func() error {
			if err := writeReload(path, data); err != nil {
				return err
			}
			done := make(chan string, 1)
			if _, err := b.conn.RestartUnitContext(ctx, unit, "replace", done); err != nil {
				return err
			}
			if r := <-done; r != "done" {
				return fmt.Errorf("restart %s: %s", unit, r)
			}
			return nil
		}))
	}
	// Memory after the edits, with the agent that made them gone: start one
	// more, let it settle, read it.
	b.agentEnv = []string{debugPprofEnv + "=1", "GODEBUG=memprofilerate=4096"}
	a = b.startAgent("--settle", "100ms")
	b.settle(a, benchQuiet, 20*time.Second)
	for _, unit := range names[:5] { // a few restarts: the state the edits leave
		if _, err := b.conn.RestartUnitContext(ctx, unit, "replace", nil); err != nil {
			b.t.Fatal(err)
		}
	}
	b.settle(a, benchQuiet, 20*time.Second)
	tr.mem = append(tr.mem, b.memory("steady state after 5 restarts seen"))
	b.stopAgent(a, 10*time.Second)
	b.agentEnv = []string{debugPprofEnv + "=1"}
	// CPU profile with the default memory profile rate (a finer one costs CPU).
	a = b.startAgent("--settle", "100ms")
	b.settle(a, benchQuiet, 20*time.Second)
	tr.passCPU = b.profilePasses(a)
	b.stopAgent(a, 10*time.Second)
}

// cmpBaseline: the same steps with bench/baseline.sh over unit files
// rendered from the same manifests (desired.Render, as the agent does).
func (b *bench) cmpBaseline(tr *cmpTrial, names []string) {
	b.t.Helper()
	script, err := os.ReadFile("bench/baseline.sh")
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.host, "baseline.sh"), script, 0o755); err != nil {
		b.t.Fatal(err)
	}
	b.renderUnits()
	cpu0 := b.pid1CPU()
	tr.cold = b.baseline(len(names), len(names), 0)
	tr.coldPID = b.pid1CPU() - cpu0
	if got := b.activeCount(names); got != len(names) {
		b.t.Fatalf("baseline cold: %d of %d active", got, len(names))
	}
	for range cmpRepeats {
		tr.noop = append(tr.noop, b.baseline(len(names), 0, 0).wall)
	}
	for k := range cmpRepeats {
		name := strings.TrimSuffix(names[len(names)-1-k], ".service")
		b.write(name+".yaml", svc(name, "  environment: {GEN: \"v-c-x\"}\n"))
		b.renderUnits() // untimed: the baseline starts from rendered files
		tr.changed = append(tr.changed, b.baseline(len(names), 1, 1).wall)
	}
}

// renderUnits renders the manifests dir into the baseline's unit dir
// (host side), rewriting only files whose bytes change.
func (b *bench) renderUnits() {
	b.t.Helper()
	set, err := desired.Load(filepath.Join(b.host, "m"), desired.Options{Insecure: true})
	if err != nil {
		b.t.Fatal(err)
	}
	dir := filepath.Join(b.host, "units")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	for _, o := range set.Sorted() {
		files, err := desired.Render(o)
		if err != nil {
			b.t.Fatal(err)
		}
		for _, f := range files {
			if f.Dir != desired.DirUnit {
				b.t.Fatalf("baseline: %s renders outside the unit dir (%s)", o.ID(), f.Dir)
			}
			p := filepath.Join(dir, f.Name)
			if old, err := os.ReadFile(p); err == nil && string(old) == string(f.Data) {
				continue
			}
			if err := os.WriteFile(p, f.Data, 0o644); err != nil {
				b.t.Fatal(err)
			}
		}
	}
}

// baseline runs bench/baseline.sh inside the sandbox, timed like cli.
func (b *bench) baseline(n, wantChanged, wantRestarted int) run {
	b.t.Helper()
	cmd := b.sb.Command(b.ctx, "/usr/bin/time", "-o", timeOut, "-f", "%U %S %M", "/bin/bash", cmpScript, cmpUnitsDir)
	r := run{start: time.Now()}
	out, err := cmd.CombinedOutput()
	r.end = time.Now()
	r.wall = r.end.Sub(r.start)
	r.stdout = string(out)
	if err != nil {
		b.t.Fatalf("baseline.sh: %v\n%s", err, tail(r.stdout, 20))
	}
	if want := fmt.Sprintf("changed %d restarted %d", wantChanged, wantRestarted); lastLine(r.stdout) != want {
		b.t.Errorf("baseline.sh over %d units said %q, want %q", n, lastLine(r.stdout), want)
	}
	if data, err := b.sb.ReadFile(timeOut); err == nil {
		if f := strings.Fields(lastLine(string(data))); len(f) == 3 {
			u, _ := strconv.ParseFloat(f[0], 64)
			s, _ := strconv.ParseFloat(f[1], 64)
			r.cpu = time.Duration((u + s) * float64(time.Second))
			r.maxRSSKiB, _ = strconv.Atoi(f[2])
		}
	}
	return r
}

// memory reads the running agent's memory: /proc status, the Go runtime's
// gauges from /metrics, and a heap profile (RESIL_DEBUG_PPROF=1, set by
// bench.startAgent) summarised by go tool pprof -top on the host.
func (b *bench) memory(label string) memSample {
	b.t.Helper()
	pid := b.agentPID()
	m := memSample{label: label, memstats: map[string]float64{}}
	m.status = b.procStatus(pid, "VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmData", "Threads")
	m.maps = b.smapsGroups(pid)
	if out, err := b.sb.Run(b.ctx, "du", "-sk", "/var/lib/resil"); err == nil {
		m.dbKiB, _ = strconv.Atoi(strings.Fields(out)[0])
	}
	out, err := b.sb.Run(b.ctx, "curl", "-sS", "--max-time", "10", cmpMetricsURL+"/metrics")
	if err != nil {
		b.t.Logf("metrics: %v", err)
	}
	for _, l := range strings.Split(out, "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		m.series++
		k, v, ok := strings.Cut(l, " ")
		if ok && (strings.HasPrefix(k, "go_memstats_") || strings.HasPrefix(k, "go_goroutines") || strings.HasPrefix(k, "process_resident")) {
			m.memstats[k], _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	const heapFile = "/run/resil-bench.heap"
	if _, err := b.sb.Run(b.ctx, "curl", "-sS", "--max-time", "20", "-o", heapFile, cmpMetricsURL+"/debug/pprof/heap?gc=1"); err != nil {
		b.t.Logf("heap profile: %v", err)
		return m
	}
	data, err := b.sb.ReadFile(heapFile)
	if err != nil {
		b.t.Fatal(err)
	}
	dir := benchOutDir()
	prof := filepath.Join(dir, fmt.Sprintf("heap-run-%d-%s.pb.gz", b.units(), label[strings.LastIndexByte(label, ' ')+1:]))
	if err := os.MkdirAll(dir, 0o755); err == nil {
		_ = os.WriteFile(prof, data, 0o644)
	}
	top, err := exec.Command("go", "tool", "pprof", "-top", "-sample_index=inuse_space", "-nodecount=25",
		filepath.Join(agentDir, "reconciler"), prof).CombinedOutput()
	if err != nil {
		b.t.Logf("pprof: %v\n%s", err, top)
	}
	m.heapTop = string(top)
	return m
}

// profilePasses takes a CPU profile of the agent while it runs converged
// passes, each woken by writing a file that is not a manifest.
func (b *bench) profilePasses(a *agent) passProfile {
	b.t.Helper()
	var pp passProfile
	passes, secs := 5, 8
	if b.units() >= 1000 {
		passes, secs = 4, 20
	}
	const cpuFile = "/run/resil-bench.cpu"
	cmd := b.sb.Command(b.ctx, "curl", "-sS", "--max-time", strconv.Itoa(secs+30), "-o", cpuFile,
		cmpMetricsURL+"/debug/pprof/profile?seconds="+strconv.Itoa(secs))
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	pid := b.agentPID()
	c0 := b.procCPU(pid)
	time.Sleep(300 * time.Millisecond)
	for i := range passes {
		li := a.logCount()
		b.write("zz-unrelated.txt", strconv.Itoa(i))
		deadline := time.Now().Add(time.Minute)
		for done := false; !done && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			for _, m := range a.logsSince(li) {
				if isPass(m) {
					pp.took = append(pp.took, tookOf(m))
					done = true
					break
				}
			}
		}
	}
	pp.cpu = b.procCPU(pid) - c0
	if err := cmd.Wait(); err != nil {
		b.t.Logf("cpu profile: %v", err)
		return pp
	}
	data, err := b.sb.ReadFile(cpuFile)
	if err != nil {
		b.t.Fatal(err)
	}
	prof := filepath.Join(benchOutDir(), fmt.Sprintf("cpu-run-%d-passes.pb.gz", b.units()))
	_ = os.WriteFile(prof, data, 0o644)
	top, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=40", filepath.Join(agentDir, "reconciler"), prof).CombinedOutput()
	if err != nil {
		b.t.Logf("pprof: %v\n%s", err, top)
	}
	pp.top = string(top)
	return pp
}

// smapsGroups sums Rss of /proc/PID/smaps per mapping: the binary's
// segments by permission (r-xp text, r--p rodata+pclntab, rw-p data), other
// files, and anonymous mappings.
func (b *bench) smapsGroups(pid string) []string {
	b.t.Helper()
	data, err := b.sb.ReadFile("/proc/" + pid + "/smaps")
	if err != nil {
		b.t.Fatal(err)
	}
	sums := map[string]int{}
	var order []string
	cur := ""
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			name := "anon"
			if len(f) >= 6 {
				name = f[5]
			}
			if strings.HasSuffix(name, "/reconciler") {
				name = "binary " + f[1]
			} else if !strings.HasPrefix(name, "[") && name != "anon" {
				name = "file " + filepath.Base(name)
			}
			cur = name
			continue
		}
		if len(f) >= 2 && f[0] == "Rss:" {
			kb, _ := strconv.Atoi(f[1])
			if _, ok := sums[cur]; !ok {
				order = append(order, cur)
			}
			sums[cur] += kb
		}
	}
	var out []string
	for _, k := range order {
		if sums[k] >= 64 {
			out = append(out, fmt.Sprintf("%s %.1f", k, float64(sums[k])/1024))
		}
	}
	return out
}

// units counts the manifests in the host's manifests dir.
func (b *bench) units() int {
	m, _ := filepath.Glob(filepath.Join(b.host, "m", "*.yaml"))
	return len(m)
}

// benchOutDir is where the benchmark writes its profiles: beside the
// results file RESIL_BENCH_RESULTS names (make bench: e2e/bench), else a
// folder under the temp dir, so that a plain `go test` run leaves the
// source tree alone.
func benchOutDir() string {
	if f := os.Getenv(benchResults); f != "" {
		return filepath.Dir(f)
	}
	return filepath.Join(os.TempDir(), "resil-bench")
}

// renderCompare is section 0 of the report.
func (r *benchReport) renderCompare(p func(string, ...any)) {
	if len(r.trials) == 0 {
		return
	}
	p("0. resil vs the shell baseline (e2e/bench/baseline.sh: cmp + copy changed unit files, one daemon-reload, one")
	p("   `systemctl enable --now` of all units, restart the changed ones), alternating fresh sandboxes; order and host load:")
	var ord []string
	for _, t := range r.trials {
		ord = append(ord, fmt.Sprintf("%d:%s/%d (load %s)", t.seq, t.tool, t.n, t.load))
	}
	p("   %s", strings.Join(ord, ", "))
	p("   Wall times include nsenter (~2–5 ms). Each cell: median over trials of the per-trial median; [min–max] of the")
	p("   per-trial medians when there is more than one trial. ratio = resil / baseline.")
	p("  %-5s %-40s %-24s %-24s %s", "units", "work", "baseline", "resil", "ratio")
	for _, n := range []int{100, 1000} {
		cell := func(tool string, f func(cmpTrial) time.Duration) (string, time.Duration) {
			var v []time.Duration
			for _, t := range r.trials {
				if t.n == n && t.tool == tool {
					if d := f(t); d > 0 {
						v = append(v, d)
					}
				}
			}
			if len(v) == 0 {
				return "—", 0
			}
			m := median(v)
			if len(v) == 1 {
				return ms(m), m
			}
			return fmt.Sprintf("%s [%s–%s]", ms(m), ms(slices.Min(v)), ms(slices.Max(v))), m
		}
		row := func(work string, f func(cmpTrial) time.Duration, vsOwn bool) {
			bs, bm := cell("baseline", f)
			rs, rm := cell("resil", f)
			if vsOwn {
				bs, bm = cell("resil", func(t cmpTrial) time.Duration { return median(t.own) })
				bs = "own " + bs
			}
			ratio := "—"
			if bm > 0 && rm > 0 {
				ratio = fmt.Sprintf("%.2f×", rm.Seconds()/bm.Seconds())
			}
			if rm == 0 && bm == 0 {
				return // no trial at this size
			}
			p("  %-5d %-40s %-24s %-24s %s", n, work, bs, rs, ratio)
		}
		row("cold converge", func(t cmpTrial) time.Duration { return t.cold.wall }, false)
		row("apply, nothing to do", func(t cmpTrial) time.Duration { return median(t.noop) }, false)
		row("one manifest changed (apply)", func(t cmpTrial) time.Duration { return median(t.changed) }, false)
		row("diff, converged host", func(t cmpTrial) time.Duration { return median(t.diff) }, false)
		row("edit → new process active, run, p50", func(t cmpTrial) time.Duration { return editP50(t.edits) }, true)
	}
	p("  \"own\" = systemd's own lower bound for one edit, measured in the resil sandbox with the agent stopped: write the")
	p("  unit file with a new Environment, Reload, RestartUnit (D-Bus from the test through the sandbox's dbus-daemon),")
	p("  seen active with the new Environment exactly as resil's edits are (the same subscribed watch: with a subscriber")
	p("  PID 1 sends every unit's signals during a reload); the edit row's ratio is resil p50 / own p50 (resil's includes")
	p("  the 100 ms settle). \"bare\" = the same until the restart job is done with nobody subscribed (the figure before).")
	p("")
	p("  CPU of the cold converge (agent or script user+sys from /usr/bin/time, children included; PID 1 utime+stime):")
	for _, t := range r.trials {
		p("    %d:%s/%d  wall %s, tool CPU %s, PID 1 CPU %s, maxRSS %d MiB", t.seq, t.tool, t.n, ms(t.cold.wall), ms(t.cold.cpu), ms(t.coldPID), t.cold.maxRSSKiB/1024)
	}
	p("  edit → active under run, per resil trial (settle 100ms; →unit written / reload / restart are step-log medians):")
	for _, t := range r.trials {
		if t.tool != "resil" || len(t.edits.samples) == 0 {
			continue
		}
		var tot, toW, rel, rst []time.Duration
		passes := 0
		for _, s := range t.edits.samples {
			tot = append(tot, s.total)
			passes += s.passes
			if s.breakdownComplete {
				toW, rel, rst = append(toW, s.toWriteStep), append(rel, s.reload), append(rst, s.restart)
			}
		}
		p("    %d:resil/%d  %d edits: p50 %s, max %s; →unit written %s, reload %s, restart %s; passes/edit %.1f; own p50 %s (n=%d), bare %s (n=%d)",
			t.seq, t.n, len(tot), ms(median(tot)), ms(slices.Max(tot)), ms(median(toW)), ms(median(rel)), ms(median(rst)),
			float64(passes)/float64(len(tot)), ms(median(t.own)), len(t.own), ms(median(t.ownBare)), len(t.ownBare))
		limit := 100*time.Millisecond + median(t.own)*105/100 + 5*time.Millisecond
		p("      goal p50 ≤ settle + 1.05 × own + 5 ms = %s: %s", ms(limit), verdict(median(tot), limit))
	}
	p("  one manifest changed, per resil trial: what it adds to an apply with nothing to do (medians of each), against")
	p("  the goal of systemd's own reload + restart (\"bare\" above, the same sandbox) + 10 ms:")
	for _, t := range r.trials {
		if t.tool != "resil" || len(t.changed) == 0 || len(t.noop) == 0 || len(t.ownBare) == 0 {
			continue
		}
		limit := median(t.ownBare) + 10*time.Millisecond
		for _, c := range []struct {
			label string
			walls []time.Duration
		}{{"", t.changed}, {" (--stay-up 0)", t.changedNoWait}} {
			if len(c.walls) == 0 {
				continue
			}
			add := median(c.walls) - median(t.noop)
			p("    %d:resil/%d%s  %s − %s = %s; limit %s + 10 ms = %s: %s", t.seq, t.n, c.label, ms(median(c.walls)), ms(median(t.noop)), ms(add),
				ms(median(t.ownBare)), ms(limit), verdict(add, limit))
		}
	}
	p("")
	r.renderPassProfiles(p)
	p("")
	p("  Memory of `reconciler run` (systemd backend, converged, settle 100ms, RESIL_DEBUG_PPROF=1):")
	for _, t := range r.trials {
		for _, m := range t.mem {
			ms := m.memstats
			mib := func(k string) string { return fmt.Sprintf("%.1f", ms[k]/(1<<20)) }
			p("    %d:resil/%d %s: VmRSS %.1f MiB (anon %.1f, file %.1f), VmHWM %.1f MiB, threads %d", t.seq, t.n, m.label,
				float64(m.status["VmRSS"])/1024, float64(m.status["RssAnon"])/1024, float64(m.status["RssFile"])/1024, float64(m.status["VmHWM"])/1024, m.status["Threads"])
			if len(ms) > 0 {
				p("      Go runtime (MiB): sys %s, heap inuse %s (alloc %s), heap idle %s of which released %s, stacks %s, mspan+mcache %s+%s, gc sys %s, other sys %s; goroutines %.0f; /metrics %d samples",
					mib("go_memstats_sys_bytes"), mib("go_memstats_heap_inuse_bytes"), mib("go_memstats_heap_alloc_bytes"), mib("go_memstats_heap_idle_bytes"),
					mib("go_memstats_heap_released_bytes"), mib("go_memstats_stack_inuse_bytes"), mib("go_memstats_mspan_inuse_bytes"), mib("go_memstats_mcache_inuse_bytes"),
					mib("go_memstats_gc_sys_bytes"), mib("go_memstats_other_sys_bytes"), ms["go_goroutines"], m.series)
				goRes := ms["go_memstats_heap_inuse_bytes"] + ms["go_memstats_heap_idle_bytes"] - ms["go_memstats_heap_released_bytes"] +
					ms["go_memstats_stack_inuse_bytes"] + ms["go_memstats_mspan_inuse_bytes"] + ms["go_memstats_mcache_inuse_bytes"]
				p("      Go heap+stacks+spans resident at most %.1f MiB of anon %.1f MiB; the rest is runtime metadata (gc sys, other sys:",
					goRes/(1<<20), float64(m.status["RssAnon"])/1024)
				p("      partly untouched) and non-Go allocations (modernc SQLite's libc heap); state dir (SQLite db + wal) %d KiB", m.dbKiB)
			}
			p("      resident MiB by mapping: %s", strings.Join(m.maps, ", "))
			if m.heapTop != "" {
				for _, l := range strings.Split(strings.TrimSpace(m.heapTop), "\n") {
					if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
						continue
					}
					p("        %s", l)
				}
			}
		}
	}
	p("")
}

func (r *benchReport) renderPassProfiles(p func(string, ...any)) {
	for _, t := range r.trials {
		if t.tool != "resil" || len(t.passCPU.took) == 0 {
			continue
		}
		pp := t.passCPU
		p("  CPU profile of `run`, %d:resil/%d: %d converged passes woken by a non-manifest file (took %s median), agent CPU %s over the window:",
			t.seq, t.n, len(pp.took), ms(median(pp.took)), ms(pp.cpu))
		for _, l := range strings.Split(strings.TrimSpace(pp.top), "\n") {
			if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
				continue
			}
			p("        %s", l)
		}
	}
}

func editP50(e editResult) time.Duration {
	var v []time.Duration
	for _, s := range e.samples {
		v = append(v, s.total)
	}
	return median(v)
}

// callCount is the D-Bus traffic of one CLI run, counted with strace.
type callCount struct {
	what       string
	n          int
	sockWrites int // write/sendmsg on unix sockets (≈ D-Bus method calls: godbus writes a message at once)
	sockReads  int // reads that returned data on unix sockets (replies and signals)
	wall       time.Duration
}

// benchCalls counts, with strace (untimed figures: ptrace slows the run),
// the D-Bus messages of apply (cold, nothing to do, one manifest changed)
// and diff over n services.
func benchCalls(t *testing.T, rep *benchReport, n int) {
	b := newBench(t)
	names := b.writeServices(n)
	_ = names
	traced := func(what string, args ...string) {
		const out = "/run/resil-bench.strace"
		full := append([]string{"-f", "-qq", "-yy", "-e", "trace=write,writev,sendmsg,sendto,read,recvmsg,recvfrom", "-e", "signal=none",
			"-o", out, agentBin}, args...)
		full = append(full, "--backend", "systemd", "--state-dir", "/var/lib/resil", "--manifests", manifestsDir, "--log-format", "console")
		start := time.Now()
		_, _ = b.sb.Command(b.ctx, "strace", full...).CombinedOutput()
		c := callCount{what: what, n: n, wall: time.Since(start)}
		data, err := b.sb.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			if _, rest, ok := strings.Cut(l, " "); ok && len(l) > 0 && l[0] >= '0' && l[0] <= '9' {
				l = rest // strace -f -o: "PID call(...)"
			}
			call, args, ok := strings.Cut(strings.TrimSpace(l), "(")
			if !ok || !strings.Contains(args, "<UNIX-STREAM") {
				continue
			}
			fdArg, _, _ := strings.Cut(args, ",")
			if !strings.Contains(fdArg, "<UNIX-STREAM") {
				continue
			}
			ret := -1
			if i := strings.LastIndex(l, ") = "); i >= 0 {
				ret, _ = strconv.Atoi(strings.Fields(l[i+4:])[0])
			}
			switch call {
			case "write", "writev", "sendmsg", "sendto":
				c.sockWrites++
			case "read", "recvmsg", "recvfrom":
				if ret > 0 {
					c.sockReads++
				}
			}
		}
		rep.calls12 = append(rep.calls12, c)
	}
	traced("apply, cold", "apply")
	traced("apply, nothing to do", "apply")
	traced("diff, converged", "diff")
	name := strings.TrimSuffix(names[len(names)-1], ".service")
	b.write(name+".yaml", svc(name, "  environment: {GEN: \"v-c-x\"}\n"))
	traced("apply, one manifest changed", "apply")
}

func (r *benchReport) renderCalls(p func(string, ...any)) {
	if len(r.calls12) == 0 {
		return
	}
	p("  D-Bus messages per CLI run (strace -f -yy of the agent: writes and data reads on its unix stream sockets, i.e. D-Bus, not the journal; godbus writes")
	p("  one message per write, so writes ≈ method calls + the connection's auth/Hello; reads include replies and signals):")
	for _, c := range r.calls12 {
		p("    %4d services, %-28s %5d socket writes, %5d socket reads (traced wall %s)", c.n, c.what, c.sockWrites, c.sockReads, ms(c.wall))
	}
	p("")
}

// verdict says whether got is within limit, and by how much it is over.
func verdict(got, limit time.Duration) string {
	if got <= limit {
		return "met"
	}
	return "over by " + ms(got-limit)
}
