package e2e

// The generated diff-fidelity check (issue 9, item 12): random sequences of
// out-of-band changes and manifest edits against the sandboxed systemd,
// each followed by `diff`, then `apply --expect-plan HASH`, then `diff`
// again. One operation in five is on a Timer object (timerOp): a schedule,
// onBoot, persistent or enabled change, a move to another file, a delete,
// a stop or start by hand. After every operation:
//   - apply executes exactly the steps diff showed, under the same plan
//     hash, and every step succeeds and changes something (a step apply
//     finds already done means the observer misread the host);
//   - the second diff is clean (exit 0, no step): what apply did is what
//     the observer sees afterwards.
//
// Seeded and replayable: the seed is logged; RESIL_FIDELITY_SEED=N replays
// it. RESIL_TORTURE=1 (make torture) runs 200 sequences; the default (make
// test) runs 12. RESIL_FIDELITY_SEQUENCES=N overrides both.

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

type fidSpec struct {
	env      int
	disabled bool
	stopped  bool
	report   bool
	takeOver bool
	static   bool // wantedBy: [] (no [Install] section)
}

func (s fidSpec) manifest(name string) string {
	extra := fmt.Sprintf("  environment: {GEN: \"%d\"}\n", s.env)
	if s.disabled {
		extra += "  enabled: false\n"
	}
	if s.stopped {
		extra += "  state: stopped\n"
	}
	if s.report {
		extra += "  drift: report\n"
	}
	if s.takeOver {
		extra += "  takeOver: true\n"
	}
	if s.static {
		extra += "  wantedBy: []\n"
	}
	return svc(name, extra)
}

// fidTimer is a Timer manifest of the generator: an inline /bin/true job
// on a daily schedule, optionally also on boot (1ms: already past, so it
// fires when the timer starts, and the timer elapses only when nothing
// else is ahead), persistent, disabled.
type fidTimer struct {
	hour       int
	onBoot     bool
	onlyBoot   bool // no schedule: the timer elapses once its boot run is done
	persistent bool
	disabled   bool
}

func (s fidTimer) manifest(name string) string {
	m := "  accuracy: 1ms\n  command: [\"/bin/true\"]\n"
	if !s.onlyBoot {
		m += fmt.Sprintf("  schedule: [\"*-*-* %02d:00:00 UTC\"]\n", s.hour)
	}
	if s.onBoot || s.onlyBoot {
		m += "  onBoot: 1ms\n"
	}
	if s.persistent {
		m += "  persistent: true\n"
	}
	if s.disabled {
		m += "  enabled: false\n"
	}
	return timer(name, m)
}

var fidTimerNames = []string{"ta", "tb"}

type fidelity struct {
	e      *env
	rng    *rand.Rand
	specs  map[string]fidSpec
	timers map[string]fidTimer
	// log is the current sequence's operations, for the failure report.
	log      []string
	seed     int64
	seq      int
	ops      int
	failures int
	// flags go to check's diff and apply (the reset's mass prune turns
	// the mass-prune guard off).
	flags []string
}

var fidNames = []string{"fa", "fb", "fc", "fd"}

const (
	unitDirPath = "/etc/systemd/system"
	// vendorDir is written inside the sandbox only: the overlay's upper
	// layer is a tmpfs.
	vendorDir = "/lib/systemd/system"
)

func TestDiffFidelity(t *testing.T) {
	seqs, opsPerSeq := 12, 4
	if os.Getenv("RESIL_TORTURE") == "1" {
		seqs = 200
	}
	if v := os.Getenv("RESIL_FIDELITY_SEQUENCES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("RESIL_FIDELITY_SEQUENCES: %v", err)
		}
		seqs = n
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv("RESIL_FIDELITY_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("RESIL_FIDELITY_SEED: %v", err)
		}
		seed = n
	}
	t.Logf("seed %d (replay: RESIL_FIDELITY_SEED=%d), %d sequences of %d operations", seed, seed, seqs, opsPerSeq)
	e := newEnv(t)
	// newEnv's context allows a few minutes; the long run needs more.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	t.Cleanup(cancel)
	e.ctx = ctx
	f := &fidelity{e: e, rng: rand.New(rand.NewSource(seed)), specs: map[string]fidSpec{}, timers: map[string]fidTimer{}, seed: seed}
	start := time.Now()
	deadline, hasDeadline := t.Deadline()
	for f.seq = 0; f.seq < seqs && f.failures < 5; f.seq++ {
		if f.seq > 0 && f.seq%20 == 0 {
			t.Logf("%d sequences, %d operations, %d failures, %s", f.seq, f.ops, f.failures, time.Since(start).Round(time.Second))
		}
		// One sequence takes about a second; stop (failing) rather than
		// let go test's timeout kill the test without the figures.
		if perSeq := time.Since(start) / time.Duration(max(f.seq, 1)); hasDeadline && time.Until(deadline) < 3*perSeq+30*time.Second {
			t.Errorf("stopped after %d of %d sequences: go test -timeout too short (use -timeout 60m)", f.seq, seqs)
			break
		}
		f.log = nil
		f.reset()
		for _, n := range f.pick(1 + f.rng.Intn(3)) {
			f.addManifest(n)
		}
		f.check("initial manifests")
		for i := 0; i < opsPerSeq && f.failures < 5; i++ {
			f.check(f.op())
		}
	}
	t.Logf("diff fidelity: %d sequences, %d operations checked (diff, apply --expect-plan, diff), %d failures, %s (seed %d)",
		f.seq, f.ops, f.failures, time.Since(start).Round(time.Second), seed)
}

// pick returns up to n distinct names from the pool, in random order.
func (f *fidelity) pick(n int) []string {
	names := append([]string(nil), fidNames...)
	f.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	return names[:min(n, len(names))]
}

// present returns the names with a manifest, sorted.
func (f *fidelity) present() []string {
	var out []string
	for n := range f.specs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (f *fidelity) note(format string, args ...any) string {
	s := fmt.Sprintf(format, args...)
	f.log = append(f.log, s)
	return s
}

// reset removes every manifest and foreign drop-in the previous sequence
// left, and checks that the prune converges too.
func (f *fidelity) reset() {
	e := f.e
	for _, n := range fidNames {
		_ = os.Remove(filepath.Join(e.host, "m", n+".yaml"))
		_ = os.RemoveAll(filepath.Join(e.sb.Root(), unitDirPath, n+".service.d"))
		if _, err := e.sb.ReadFile(vendorDir + "/" + n + ".service"); err == nil {
			_, _ = e.sb.Systemctl(e.ctx, "disable", "--now", n+".service")
			if err := e.sb.Remove(vendorDir + "/" + n + ".service"); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	for _, n := range fidTimerNames {
		_ = os.Remove(filepath.Join(e.host, "m", n+".yaml"))
		_ = os.Remove(filepath.Join(e.host, "m", n+"-moved.yaml"))
	}
	f.specs, f.timers = map[string]fidSpec{}, map[string]fidTimer{}
	e.systemctl("daemon-reload")
	f.note("reset: all manifests and foreign drop-ins removed")
	// Removing every manifest is the accident the mass-prune guard stops
	// (PruneBlocked, nothing pruned); the reset means it.
	f.flags = []string{"--max-prune", "0"}
	f.check("reset")
	f.flags = nil
}

func (f *fidelity) randomSpec() fidSpec {
	return fidSpec{env: f.rng.Intn(1000), disabled: f.rng.Intn(4) == 0, stopped: f.rng.Intn(5) == 0, report: f.rng.Intn(6) == 0,
		static: f.rng.Intn(8) == 0}
}

func (f *fidelity) addManifest(name string) string {
	s := f.randomSpec()
	f.specs[name] = s
	f.e.write(name+".yaml", s.manifest(name))
	return f.note("add manifest %s %+v", name, s)
}

func (f *fidelity) randomTimer() fidTimer {
	return fidTimer{hour: f.rng.Intn(24), onBoot: f.rng.Intn(2) == 0, onlyBoot: f.rng.Intn(5) == 0,
		persistent: f.rng.Intn(3) == 0, disabled: f.rng.Intn(6) == 0}
}

// timerOp applies one random operation to a Timer object: a manifest
// added, changed (schedule, onBoot, persistent, enabled) or deleted, or
// the timer stopped or started by hand.
func (f *fidelity) timerOp() string {
	e := f.e
	name := fidTimerNames[f.rng.Intn(len(fidTimerNames))]
	s, ok := f.timers[name]
	if !ok {
		s = f.randomTimer()
		f.timers[name] = s
		e.write(name+".yaml", s.manifest(name))
		return f.note("add timer %s %+v", name, s)
	}
	switch f.rng.Intn(8) {
	case 0:
		_, _ = e.sb.Systemctl(e.ctx, "stop", name+".timer")
		return f.note("systemctl stop %s.timer", name)
	case 1:
		_, _ = e.sb.Systemctl(e.ctx, "start", name+".timer")
		return f.note("systemctl start %s.timer", name)
	case 2:
		delete(f.timers, name)
		e.remove(f.timerFile(name))
		return f.note("delete timer %s", name)
	case 3:
		// Moved to another file: only the X-Resil-Source comment changes.
		from, to := f.timerFile(name), name+"-moved.yaml"
		if from == to {
			to = name + ".yaml"
		}
		e.write(to, s.manifest(name))
		e.remove(from)
		return f.note("timer %s moved to %s", name, to)
	}
	switch f.rng.Intn(5) {
	case 0:
		s.onBoot = !s.onBoot
	case 1:
		s.persistent = !s.persistent
	case 2:
		s.disabled = !s.disabled
	case 3:
		s.onlyBoot = !s.onlyBoot
	default:
		s.hour = (s.hour + 1 + f.rng.Intn(22)) % 24
	}
	f.timers[name] = s
	e.write(f.timerFile(name), s.manifest(name))
	return f.note("edit timer %s → %+v", name, s)
}

// timerFile is the manifest file (relative) of timer name: NAME.yaml, or
// NAME-moved.yaml after a move.
func (f *fidelity) timerFile(name string) string {
	if _, err := os.Stat(filepath.Join(f.e.host, "m", name+"-moved.yaml")); err == nil {
		return name + "-moved.yaml"
	}
	return name + ".yaml"
}

// op applies one random operation and describes it.
func (f *fidelity) op() string {
	e := f.e
	if f.rng.Intn(5) == 0 {
		return f.timerOp()
	}
	names := f.present()
	if len(names) == 0 {
		return f.addManifest(f.pick(1)[0])
	}
	name := names[f.rng.Intn(len(names))]
	unit := name + ".service"
	reload := f.rng.Intn(2) == 0
	maybeReload := func() string {
		if reload {
			e.systemctl("daemon-reload")
			return " + daemon-reload"
		}
		return ""
	}
	wants := filepath.Join(unitDirPath, "multi-user.target.wants", unit)
	dropIn := filepath.Join(unitDirPath, unit+".d", "50-foreign.conf")
	switch f.rng.Intn(13) {
	case 0:
		_, _ = e.sb.Systemctl(e.ctx, "stop", unit)
		return f.note("systemctl stop %s", unit)
	case 1:
		_, _ = e.sb.Systemctl(e.ctx, "start", unit)
		return f.note("systemctl start %s", unit)
	case 2:
		if reload {
			_, _ = e.sb.Systemctl(e.ctx, "disable", unit)
			return f.note("systemctl disable %s", unit)
		}
		_ = e.sb.Remove(wants)
		return f.note("rm %s (no reload)", wants)
	case 3:
		if reload {
			_, _ = e.sb.Systemctl(e.ctx, "enable", unit)
			return f.note("systemctl enable %s", unit)
		}
		if _, err := os.Stat(filepath.Join(e.sb.Root(), unitDirPath, unit)); err == nil {
			_ = os.MkdirAll(filepath.Join(e.sb.Root(), filepath.Dir(wants)), 0o755)
			_ = os.Symlink(filepath.Join(unitDirPath, unit), filepath.Join(e.sb.Root(), wants))
		}
		return f.note("ln -s %s (no reload)", wants)
	case 4:
		p := filepath.Join(unitDirPath, unit)
		data, err := e.sb.ReadFile(p)
		if err != nil {
			return f.note("hand edit of %s: no file", p)
		}
		edited := strings.Replace(string(data), "Restart=", "Restart=no\n#Restart=", 1)
		if f.rng.Intn(2) == 0 {
			edited += "# edited by hand\n"
		}
		if err := e.sb.WriteFile(p, []byte(edited), 0o644); err != nil {
			e.t.Fatal(err)
		}
		return f.note("hand edit of %s%s", p, maybeReload())
	case 5:
		if err := e.sb.WriteFile(dropIn, []byte(fmt.Sprintf("[Service]\nEnvironment=FOREIGN=%d\n", f.rng.Intn(100))), 0o644); err != nil {
			e.t.Fatal(err)
		}
		return f.note("foreign drop-in %s%s", dropIn, maybeReload())
	case 6:
		_ = e.sb.Remove(dropIn)
		return f.note("rm foreign drop-in %s%s", dropIn, maybeReload())
	case 7, 8:
		s := f.specs[name]
		switch f.rng.Intn(5) {
		case 4:
			s.static = !s.static
		case 0:
			s.disabled = !s.disabled
		case 1:
			s.stopped = !s.stopped
		case 2:
			s.report = !s.report
		default:
			s.env++
		}
		f.specs[name] = s
		e.write(name+".yaml", s.manifest(name))
		return f.note("edit manifest %s → %+v", name, s)
	case 9:
		free := f.free()
		if len(free) == 0 {
			return f.note("no free name")
		}
		n := free[f.rng.Intn(len(free))]
		if f.rng.Intn(3) > 0 {
			return f.addManifest(n)
		}
		// A vendor unit of that name, enabled and running, then a
		// manifest for it, taking it over or not.
		if err := e.sb.WriteFile(vendorDir+"/"+n+".service", []byte(vendorUnit), 0o644); err != nil {
			e.t.Fatal(err)
		}
		e.systemctl("daemon-reload")
		_, _ = e.sb.Systemctl(e.ctx, "enable", "--now", n+".service")
		s := f.randomSpec()
		s.takeOver = f.rng.Intn(2) == 0
		f.specs[n] = s
		e.write(n+".yaml", s.manifest(n))
		return f.note("vendor unit %s/%s.service running, then manifest %s %+v", vendorDir, n, n, s)
	case 10, 11:
		delete(f.specs, name)
		e.remove(name + ".yaml")
		return f.note("delete manifest %s", name)
	default:
		// A crash between write and restart: the new version written as
		// the agent writes it, then no restart.
		s := f.specs[name]
		s.env++
		f.specs[name] = s
		e.write(name+".yaml", s.manifest(name))
		if err := e.sb.WriteFile(filepath.Join(unitDirPath, unit), e.rendered()[unit], 0o644); err != nil {
			e.t.Fatal(err)
		}
		return f.note("edit manifest %s → %+v, write its unit file, no restart (lost restart)%s", name, s, maybeReload())
	}
}

func (f *fidelity) free() []string {
	var out []string
	for _, n := range fidNames {
		if _, ok := f.specs[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// check runs diff, apply --expect-plan, diff and records any disagreement.
func (f *fidelity) check(what string) {
	e := f.e
	f.ops++
	rep, code := e.diffJSON(f.flags...)
	if code != 0 && code != 1 {
		f.fail(what, "diff exit %d", code)
		return
	}
	out, errOut, acode := e.reconciler(append([]string{"apply", "--expect-plan", rep.Hash}, f.flags...)...)
	lines := outcomeLines(out)
	var problems []string
	if acode != 0 {
		problems = append(problems, fmt.Sprintf("apply exit %d (stderr: %s)", acode, strings.TrimSpace(errOut)))
	}
	if !strings.Contains(out, "(plan "+rep.Hash+")") {
		problems = append(problems, "apply's plan hash is not diff's "+rep.Hash)
	}
	want := rep.texts()
	if len(lines) != len(want) {
		problems = append(problems, fmt.Sprintf("diff planned %d steps, apply ran %d", len(want), len(lines)))
	}
	for i := 0; i < len(want) && i < len(lines); i++ {
		// "RESULT STEP": a planned step must change something; one that
		// finds its work already done means the observer misread the host.
		l := lines[i]
		res, text, _ := strings.Cut(l, " ")
		text = strings.TrimLeft(text, " ")
		if !strings.HasPrefix(text, want[i]) || res != "changed" {
			problems = append(problems, fmt.Sprintf("step %d: diff %q, apply %q", i+1, want[i], l))
		}
	}
	after, acode2 := e.diffJSON(f.flags...)
	if acode2 != 0 || len(after.Steps) != 0 {
		problems = append(problems, fmt.Sprintf("second diff: exit %d, steps %q", acode2, after.texts()))
	}
	if len(problems) > 0 {
		f.fail(what, "%s\ndiff steps:\n  %s\napply output:\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n  "), out)
	}
}

func (f *fidelity) fail(what, format string, args ...any) {
	f.failures++
	f.e.t.Errorf("diff fidelity failure (seed %d, sequence %d) after %q: %s\nsequence so far:\n  %s",
		f.seed, f.seq, what, fmt.Sprintf(format, args...), strings.Join(f.log, "\n  "))
}

// outcomeLines returns apply's per-step lines (not the warnings and the
// summary).
func outcomeLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		switch {
		case l == "", strings.HasPrefix(l, "warning "):
		case strings.Contains(l, " steps, ") && strings.Contains(l, "(plan "):
		default:
			lines = append(lines, l)
		}
	}
	return lines
}
