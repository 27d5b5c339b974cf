package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/store"
)

// The torture suite: random operations on a manifests directory while
// `reconciler run` is up, kill -9 of the agent at random instants, and a
// deterministic mode that kills the agent after step k of a pass for every
// k; on both backends. At quiescent checkpoints it asserts the agent's
// promises (see torture.check). Short by default (make test); the full
// size with RESIL_TORTURE=1 (make torture). Seeds are printed; replay one
// with RESIL_TORTURE_SEED=N.
//
// Services run /bin/sleep with their manifest version in the environment
// (TORTURE_SVC, TORTURE_VER, TORTURE_DROP from a drop-in, TORTURE_END =
// SVC-VER as the last environment line), and `user: nobody` for even
// versions as the manifest's last line, so the process table tells which
// version runs and a process started from a half-written file (no END, or
// root where nobody was asked for) is seen.

// tortureSize is how much a run does.
type tortureSize struct {
	full       bool
	services   int           // services at the start; adds and deletes keep it around this
	ops        int           // at least this many operations
	kills      int           // at least this many kill -9 of the agent
	checkEvery int           // operations between checkpoints
	maxGap     time.Duration // pause between operations: uniform in [0, maxGap)
	maxHold    time.Duration // partial writes, broken files, chmods held up to this
	deadline   time.Duration // a checkpoint's bound for the agent to settle
}

func tortureSizing() tortureSize {
	if os.Getenv("RESIL_TORTURE") == "1" {
		return tortureSize{full: true, services: 24, ops: 10000, kills: 500, checkEvery: 250,
			maxGap: 15 * time.Millisecond, maxHold: 1200 * time.Millisecond, deadline: 60 * time.Second}
	}
	return tortureSize{services: 6, ops: 36, kills: 4, checkEvery: 18,
		maxGap: 40 * time.Millisecond, maxHold: 800 * time.Millisecond, deadline: 45 * time.Second}
}

// tortureMaxBad is how many checkpoints with violations a run tolerates
// before it stops (RESIL_TORTURE_MAX_BAD, default 5): enough to see
// several violation classes without burying them.
func tortureMaxBad() int {
	if n, err := strconv.Atoi(os.Getenv("RESIL_TORTURE_MAX_BAD")); err == nil && n > 0 {
		return n
	}
	return 5
}

func tortureSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RESIL_TORTURE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RESIL_TORTURE_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("torture seed %d (replay: RESIL_TORTURE_SEED=%d)", seed, seed)
	return seed
}

func TestTortureProcess(t *testing.T) {
	sandbox.RequireRoot(t, "(owner check on root-owned manifests, chown, user: nobody)")
	newTortureRun(t, "p", func(run string) tortureBackend { return newProcTorture(t, run) }).random()
}

func TestTortureSystemd(t *testing.T) {
	drifts := tortureCacheDrifts.Load()
	newTortureRun(t, "s", func(run string) tortureBackend { return newSDTorture(t, run, 70*time.Minute) }).random()
	checkCacheDrift(t, drifts)
}

func TestTortureCrashAfterStepProcess(t *testing.T) {
	sandbox.RequireRoot(t, "(owner check on root-owned manifests, chown, user: nobody)")
	newTortureRun(t, "c", func(run string) tortureBackend { return newProcTorture(t, run) }).crashAfterEveryStep()
}

func TestTortureCrashAfterStepSystemd(t *testing.T) {
	drifts := tortureCacheDrifts.Load()
	newTortureRun(t, "d", func(run string) tortureBackend { return newSDTorture(t, run, 30*time.Minute) }).crashAfterEveryStep()
	checkCacheDrift(t, drifts)
}

// tortureCacheDrifts counts the agents' "cache drift" log lines (issue
// 12: the resync's full read found the watch-fed cache wrong); the
// systemd torture runs must log none.
var tortureCacheDrifts atomic.Int64

func checkCacheDrift(t *testing.T, before int64) {
	t.Helper()
	if n := tortureCacheDrifts.Load() - before; n > 0 {
		t.Errorf("the agent logged %d cache drifts (see the log lines \"cache drift\")", n)
	}
}

// newTortureRun picks the seed and the run name (prefix + seed, the marker
// of every process of this run) and builds the torture on that backend.
func newTortureRun(t *testing.T, prefix string, backend func(run string) tortureBackend) *torture {
	seed := tortureSeed(t)
	run := fmt.Sprintf("%s%d", prefix, seed%1000000)
	return newTorture(t, backend(run), run, seed, tortureSizing())
}

// tortureAbsent is the key of a service that does not run.
const tortureAbsent = ""

// tSvc is the model of one service's manifest (NAME.yaml, NAME.d/50-torture.yaml).
type tSvc struct {
	name      string
	present   bool // NAME.yaml exists
	ver       int  // version of its latest complete content
	valid     bool // its content is complete and valid
	refused   bool // chmod/chown makes the owner check refuse it
	dropVer   int  // drop-in version, 0 for none
	dropValid bool
	busy      bool // a held operation owns the files

	// Since the last checkpoint:
	base        string          // what ran at the last checkpoint (tortureAbsent or a key)
	basePID     int             // its PID
	accept      map[string]bool // every effective version the manifests held
	brokenSince time.Time       // when the effective manifest became broken (zero: not broken)
	killedAt    time.Time       // when the harness killed its process
	tainted     bool            // violated at the last checkpoint: its PID may change
}

func (s *tSvc) key() string { return fmt.Sprintf("v%d/d%d", s.ver, s.dropVer) }

// tortureProcKey is what a process runs, in the form of tSvc.key.
func tortureProcKey(p tortureProc) string {
	d := p.env["TORTURE_DROP"]
	if d == "" {
		d = "0"
	}
	return "v" + p.env["TORTURE_VER"] + "/d" + d
}

// tortureIncomplete says why a service process cannot have been started from a
// complete manifest ("" if it can).
func tortureIncomplete(p tortureProc) string {
	svc, ver := p.env["TORTURE_SVC"], p.env["TORTURE_VER"]
	if p.env["TORTURE_END"] != svc+"-"+ver {
		return fmt.Sprintf("TORTURE_END=%q, want %q: started from a half-written manifest", p.env["TORTURE_END"], svc+"-"+ver)
	}
	v, _ := strconv.Atoi(ver)
	if want := tortureUID(v); p.uid != want {
		return fmt.Sprintf("runs as uid %d, the manifest asks for uid %d", p.uid, want)
	}
	return ""
}

func tortureUID(ver int) int {
	if ver%2 == 0 {
		return 65534 // nobody
	}
	return 0
}

type torture struct {
	t    *testing.T
	b    tortureBackend
	size tortureSize
	seed uint64
	rng  *rand.Rand // driver goroutine only
	run  string

	mu        sync.Mutex
	svcs      map[string]*tSvc
	order     []string
	next      int
	dropSeq   int
	rev       int
	dirBroken bool
	oplog     []string
	begin     time.Time
	sampled   map[int]bool
	sampleBad []string

	// Per-file operations hold dirLock shared while they touch the current
	// rev dir; a symlink swap or a chmod of the dir holds it exclusively.
	dirLock sync.RWMutex
	held    sync.WaitGroup

	agent *tortureAgent
	tails []string // output of agents killed since the last checkpoint
	// fullLogs holds the whole (tail-buffered) output of every agent killed
	// since the last checkpoint; a violation writes them to files.
	fullLogs []string
	downOps  int // operations left before a killed agent is restarted

	ops, kills, checkpoints int
	classes                 map[string]int
	badCheckpoints          int
}

func newTorture(t *testing.T, b tortureBackend, run string, seed uint64, size tortureSize) *torture {
	tr := &torture{t: t, b: b, size: size, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), run: run,
		svcs: map[string]*tSvc{}, begin: time.Now(), sampled: map[int]bool{}, classes: map[string]int{}}
	// Before the backend's own cleanups (services, temp dirs): the agent
	// must not write into a state dir being removed.
	t.Cleanup(func() {
		tr.held.Wait()
		if tr.agent != nil {
			tr.agent.stop(t)
		}
	})
	return tr
}

func (tr *torture) logf(format string, args ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.logLocked(format, args...)
}

func (tr *torture) logLocked(format string, args ...any) {
	tr.oplog = append(tr.oplog, fmt.Sprintf("%8.3fs %s", time.Since(tr.begin).Seconds(), fmt.Sprintf(format, args...)))
}

func (tr *torture) dir() string { return filepath.Join(tr.b.root(), fmt.Sprintf("rev-%d", tr.rev)) }

func (tr *torture) manifest(name string, ver int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: resil.dev/v1
kind: Service
metadata: {name: %s}
spec:
  command: ["/bin/sleep", "1000000"]
  restart: {policy: always, delay: 200ms, limit: {burst: 1000, interval: 10s}}
  environment:
    TORTURE_RUN: %s
    TORTURE_SVC: %s
    TORTURE_VER: "%d"
    TORTURE_END: %s-%d
`, name, tr.run, name, ver, name, ver)
	if tortureUID(ver) != 0 {
		b.WriteString("  user: nobody\n")
	}
	return []byte(b.String())
}

func tortureDropIn(ver int) []byte {
	return []byte(fmt.Sprintf("spec:\n  environment:\n    TORTURE_DROP: \"%d\"\n", ver))
}

// invalidVariants are manifests that are definitely not valid (and not
// half-written: they are written whole, atomically).
func (tr *torture) invalidVariant(name string, ver, i int) []byte {
	full := string(tr.manifest(name, ver))
	switch i % 5 {
	case 0:
		return []byte(strings.Replace(full, "command:", "comand:", 1))
	case 1:
		return []byte("# nothing here yet\n")
	case 2:
		return []byte("---\n")
	case 3: // cut inside a quoted value
		return []byte(full[:strings.Index(full, "TORTURE_VER: \"")+len("TORTURE_VER: \"")])
	default: // header only
		return []byte(full[:strings.Index(full, "spec:")])
	}
}

func tortureWrite(path string, data []byte) error {
	tmp := filepath.Join(filepath.Dir(path), ".torture-"+filepath.Base(path))
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// eff is the service's effective desired version: (key, true), (tortureAbsent,
// true), or ("", false) when its manifest is broken right now. mu held.
func (tr *torture) eff(s *tSvc) (string, bool) {
	if !s.present {
		return tortureAbsent, true
	}
	if !s.valid || s.refused || !s.dropValid || tr.dirBroken {
		return "", false
	}
	return s.key(), true
}

// note records the service's current effective version. mu held.
func (tr *torture) note(s *tSvc) {
	if k, ok := tr.eff(s); ok {
		s.accept[k] = true
		s.brokenSince = time.Time{}
	} else if s.brokenSince.IsZero() {
		s.brokenSince = time.Now()
	}
}

func (tr *torture) must(err error) {
	if err != nil {
		tr.t.Helper()
		tr.t.Fatalf("torture harness: %v", err)
	}
}

// pick returns a random idle service matching ok, or nil. mu held.
func (tr *torture) pick(ok func(*tSvc) bool) *tSvc {
	var c []*tSvc
	for _, n := range tr.order {
		if s := tr.svcs[n]; !s.busy && ok(s) {
			c = append(c, s)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[tr.rng.IntN(len(c))]
}

func (tr *torture) present() int {
	n := 0
	for _, s := range tr.svcs {
		if s.present {
			n++
		}
	}
	return n
}

func (tr *torture) hold() time.Duration {
	return 30*time.Millisecond + time.Duration(tr.rng.Int64N(int64(tr.size.maxHold)))
}

// newSvc adds a service to the model (not yet present). mu held.
func (tr *torture) newSvc() *tSvc {
	s := &tSvc{name: fmt.Sprintf("tx%03d", tr.next), dropValid: true, accept: map[string]bool{tortureAbsent: true}}
	tr.next++
	tr.svcs[s.name] = s
	tr.order = append(tr.order, s.name)
	return s
}

// setup writes rev-0 with n services and points cur at it.
func (tr *torture) setup(n int) {
	tr.must(os.MkdirAll(tr.dir(), 0o755))
	tr.must(os.Symlink(filepath.Base(tr.dir()), filepath.Join(tr.b.root(), "cur")))
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for range n {
		s := tr.newSvc()
		s.ver, s.present, s.valid = 1, true, true
		tr.must(tortureWrite(filepath.Join(tr.dir(), s.name+".yaml"), tr.manifest(s.name, 1)))
		tr.note(s)
	}
}

// --- operations: each returns a description for the log, "" when it did nothing ---

// spawn runs a held operation on its own goroutine; the driver has taken
// dirLock shared for it.
func (tr *torture) spawn(f func()) {
	tr.held.Add(1)
	go func() {
		defer tr.held.Done()
		defer tr.dirLock.RUnlock()
		f()
	}()
}

func (tr *torture) opEdit(inPlace bool) string {
	tr.dirLock.RLock()
	defer tr.dirLock.RUnlock()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	s := tr.pick(func(s *tSvc) bool { return s.present })
	if s == nil {
		return ""
	}
	s.ver++
	p := filepath.Join(tr.dir(), s.name+".yaml")
	how := "atomic"
	if inPlace {
		how = "in place"
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		tr.must(err)
		_, err = f.Write(tr.manifest(s.name, s.ver))
		tr.must(err)
		tr.must(f.Close())
	} else {
		tr.must(tortureWrite(p, tr.manifest(s.name, s.ver)))
	}
	s.valid = true
	tr.note(s)
	return fmt.Sprintf("edit %s → v%d (%s)", s.name, s.ver, how)
}

// opSlowWrite writes a new version (or a new service) in two parts, held
// open in between.
func (tr *torture) opSlowWrite() string {
	tr.dirLock.RLock()
	tr.mu.Lock()
	var s *tSvc
	if tr.present() < tr.size.services*3/2 && tr.rng.IntN(5) == 0 {
		s = tr.newSvc()
	} else if s = tr.pick(func(s *tSvc) bool { return s.present }); s == nil {
		tr.mu.Unlock()
		tr.dirLock.RUnlock()
		return ""
	}
	s.ver++
	data := tr.manifest(s.name, s.ver)
	cut := 1 + tr.rng.IntN(len(data)-1)
	d := tr.hold()
	s.busy, s.present, s.valid = true, true, false
	tr.note(s)
	p := filepath.Join(tr.dir(), s.name+".yaml")
	tr.mu.Unlock()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	tr.must(err)
	_, err = f.Write(data[:cut])
	tr.must(err)
	tr.spawn(func() {
		time.Sleep(d)
		_, err := f.Write(data[cut:])
		cerr := f.Close()
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if err != nil || cerr != nil {
			tr.logLocked("HARNESS ERROR slow write %s: %v %v", s.name, err, cerr)
		}
		s.busy, s.valid = false, true
		tr.note(s)
		tr.logLocked("slow write %s v%d closed", s.name, s.ver)
	})
	return fmt.Sprintf("slow write %s → v%d: %d of %d bytes, rest in %s", s.name, s.ver, cut, len(data), d.Round(time.Millisecond))
}

// opBreak truncates (`: > f`) or writes an invalid manifest, then maybe
// fixes it after a while (the same version or a new one).
func (tr *torture) opBreak(truncate bool) string {
	tr.dirLock.RLock()
	tr.mu.Lock()
	s := tr.pick(func(s *tSvc) bool { return s.present })
	if s == nil {
		tr.mu.Unlock()
		tr.dirLock.RUnlock()
		return ""
	}
	p := filepath.Join(tr.dir(), s.name+".yaml")
	var what string
	if truncate {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		tr.must(err)
		tr.must(f.Close())
		what = fmt.Sprintf("truncate %s", s.name)
	} else {
		i := tr.rng.IntN(5)
		tr.must(tortureWrite(p, tr.invalidVariant(s.name, s.ver, i)))
		what = fmt.Sprintf("invalid %s (variant %d)", s.name, i)
	}
	s.valid = false
	tr.note(s)
	if tr.rng.IntN(10) < 4 {
		tr.mu.Unlock()
		tr.dirLock.RUnlock()
		return what + ", left broken"
	}
	d, bump := tr.hold(), tr.rng.IntN(2) == 0
	s.busy = true
	tr.mu.Unlock()
	tr.spawn(func() {
		time.Sleep(d)
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if bump {
			s.ver++
		}
		if err := tortureWrite(p, tr.manifest(s.name, s.ver)); err != nil {
			tr.logLocked("HARNESS ERROR fix %s: %v", s.name, err)
		}
		s.busy, s.valid = false, true
		tr.note(s)
		tr.logLocked("fixed %s → v%d", s.name, s.ver)
	})
	return fmt.Sprintf("%s, fixed in %s", what, d.Round(time.Millisecond))
}

func (tr *torture) opDelete() string {
	tr.dirLock.RLock()
	defer tr.dirLock.RUnlock()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.present() <= tr.size.services/2 {
		return ""
	}
	s := tr.pick(func(s *tSvc) bool { return s.present })
	if s == nil {
		return ""
	}
	tr.must(os.Remove(filepath.Join(tr.dir(), s.name+".yaml")))
	tr.must(os.RemoveAll(filepath.Join(tr.dir(), s.name+".d")))
	s.present, s.valid, s.dropVer, s.dropValid = false, false, 0, true
	tr.note(s)
	return "delete " + s.name
}

func (tr *torture) opAdd() string {
	tr.dirLock.RLock()
	defer tr.dirLock.RUnlock()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.present() >= tr.size.services*3/2 {
		return ""
	}
	s := tr.newSvc()
	s.ver, s.present, s.valid = 1, true, true
	tr.must(tortureWrite(filepath.Join(tr.dir(), s.name+".yaml"), tr.manifest(s.name, s.ver)))
	tr.note(s)
	return "add " + s.name
}

// opDropIn sets, removes or breaks (and maybe later fixes) a drop-in.
func (tr *torture) opDropIn() string {
	tr.dirLock.RLock()
	tr.mu.Lock()
	s := tr.pick(func(s *tSvc) bool { return s.present })
	if s == nil {
		tr.mu.Unlock()
		tr.dirLock.RUnlock()
		return ""
	}
	dir := filepath.Join(tr.dir(), s.name+".d")
	p := filepath.Join(dir, "50-torture.yaml")
	var what string
	switch r := tr.rng.IntN(10); {
	case r < 5 || (r < 7 && s.dropVer == 0):
		tr.dropSeq++
		tr.must(os.MkdirAll(dir, 0o755))
		tr.must(tortureWrite(p, tortureDropIn(tr.dropSeq)))
		s.dropVer, s.dropValid = tr.dropSeq, true
		what = fmt.Sprintf("drop-in %s → d%d", s.name, s.dropVer)
	case r < 7:
		tr.must(os.RemoveAll(dir))
		s.dropVer, s.dropValid = 0, true
		what = "remove drop-in of " + s.name
	default:
		tr.must(os.MkdirAll(dir, 0o755))
		tr.must(tortureWrite(p, []byte("spec:\n  environment: {TORTURE_DROP: \"1\"\n")))
		s.dropValid = false
		what = "invalid drop-in " + s.name
	}
	tr.note(s)
	if s.dropValid || tr.rng.IntN(10) < 4 {
		tr.mu.Unlock()
		tr.dirLock.RUnlock()
		return what
	}
	d := tr.hold()
	s.busy = true
	tr.mu.Unlock()
	tr.spawn(func() {
		time.Sleep(d)
		tr.mu.Lock()
		defer tr.mu.Unlock()
		var err error
		if s.dropVer == 0 {
			err = os.RemoveAll(dir)
		} else {
			err = tortureWrite(p, tortureDropIn(s.dropVer))
		}
		if err != nil {
			tr.logLocked("HARNESS ERROR fix drop-in %s: %v", s.name, err)
		}
		s.busy, s.dropValid = false, true
		tr.note(s)
		tr.logLocked("fixed drop-in of %s (d%d)", s.name, s.dropVer)
	})
	return fmt.Sprintf("%s, fixed in %s", what, d.Round(time.Millisecond))
}

// opPerm makes a manifest group/world-writable or owned by nobody for a while.
func (tr *torture) opPerm() string {
	tr.dirLock.RLock()
	tr.mu.Lock()
	s := tr.pick(func(s *tSvc) bool { return s.present })
	if s == nil {
		tr.mu.Unlock()
		tr.dirLock.RUnlock()
		return ""
	}
	p := filepath.Join(tr.dir(), s.name+".yaml")
	chown := tr.rng.IntN(2) == 0
	if chown {
		tr.must(os.Lchown(p, 65534, 65534))
	} else {
		tr.must(os.Chmod(p, 0o666))
	}
	d := tr.hold()
	s.busy, s.refused = true, true
	tr.note(s)
	tr.mu.Unlock()
	tr.spawn(func() {
		time.Sleep(d)
		tr.mu.Lock()
		defer tr.mu.Unlock()
		var err error
		if chown {
			err = os.Lchown(p, 0, 0)
		} else {
			err = os.Chmod(p, 0o644)
		}
		if err != nil {
			tr.logLocked("HARNESS ERROR restore %s: %v", s.name, err)
		}
		s.busy, s.refused = false, false
		tr.note(s)
		tr.logLocked("restored owner/mode of %s", s.name)
	})
	if chown {
		return fmt.Sprintf("chown nobody %s for %s", s.name, d.Round(time.Millisecond))
	}
	return fmt.Sprintf("chmod 0666 %s for %s", s.name, d.Round(time.Millisecond))
}

// opDirPerm makes the whole rev dir group/world-writable or nobody's for a
// while (the driver waits).
func (tr *torture) opDirPerm() string {
	tr.dirLock.Lock()
	defer tr.dirLock.Unlock()
	dir := tr.dir()
	chown := tr.rng.IntN(2) == 0
	d := 30*time.Millisecond + time.Duration(tr.rng.Int64N(int64(tr.size.maxHold/4))) // the driver waits
	if chown {
		tr.must(os.Lchown(dir, 65534, 65534))
	} else {
		tr.must(os.Chmod(dir, 0o777))
	}
	tr.setDirBroken(true)
	time.Sleep(d)
	if chown {
		tr.must(os.Lchown(dir, 0, 0))
	} else {
		tr.must(os.Chmod(dir, 0o755))
	}
	tr.setDirBroken(false)
	return fmt.Sprintf("dir refused (chown %v) for %s", chown, d.Round(time.Millisecond))
}

func (tr *torture) setDirBroken(b bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.dirBroken = b
	for _, s := range tr.svcs {
		tr.note(s)
	}
}

// opSwap copies the current rev dir to a new one, changes a few services
// there (new versions, maybe an add and a delete), and swaps the cur
// symlink atomically (git-sync).
func (tr *torture) opSwap() string {
	tr.dirLock.Lock()
	defer tr.dirLock.Unlock()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	old := tr.dir()
	tr.rev++
	dir := tr.dir()
	tr.must(tortureCopyTree(old, dir))
	var changes []string
	var bumped []*tSvc
	for range 1 + tr.rng.IntN(3) {
		s := tr.pick(func(s *tSvc) bool { return s.present })
		if s == nil {
			break
		}
		s.busy = true // not twice
		bumped = append(bumped, s)
		tr.must(tortureWrite(filepath.Join(dir, s.name+".yaml"), tr.manifest(s.name, s.ver+1)))
		changes = append(changes, fmt.Sprintf("%s → v%d", s.name, s.ver+1))
	}
	var added, deleted *tSvc
	if tr.rng.IntN(4) == 0 && tr.present() < tr.size.services*3/2 {
		added = tr.newSvc()
		tr.must(tortureWrite(filepath.Join(dir, added.name+".yaml"), tr.manifest(added.name, 1)))
		changes = append(changes, "add "+added.name)
	}
	if tr.rng.IntN(4) == 0 && tr.present() > tr.size.services/2 {
		if deleted = tr.pick(func(s *tSvc) bool { return s.present }); deleted != nil {
			tr.must(os.Remove(filepath.Join(dir, deleted.name+".yaml")))
			tr.must(os.RemoveAll(filepath.Join(dir, deleted.name+".d")))
			changes = append(changes, "delete "+deleted.name)
		}
	}
	tmp := filepath.Join(tr.b.root(), ".cur.tmp")
	tr.must(os.Symlink(filepath.Base(dir), tmp))
	tr.must(os.Rename(tmp, filepath.Join(tr.b.root(), "cur")))
	for _, s := range bumped {
		s.busy, s.ver, s.valid, s.refused = false, s.ver+1, true, false
		tr.note(s)
	}
	if added != nil {
		added.ver, added.present, added.valid = 1, true, true
		tr.note(added)
	}
	if deleted != nil {
		deleted.present, deleted.valid, deleted.dropVer, deleted.dropValid = false, false, 0, true
		tr.note(deleted)
	}
	return fmt.Sprintf("symlink swap → %s: %s", filepath.Base(dir), strings.Join(changes, ", "))
}

// tortureCopyTree copies dir src to dst with modes and owners (broken files stay broken).
func tortureCopyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if d.IsDir() {
			if err := os.Mkdir(to, fi.Mode().Perm()); err != nil {
				return err
			}
		} else {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(to, data, fi.Mode().Perm()); err != nil {
				return err
			}
		}
		if err := os.Chmod(to, fi.Mode().Perm()); err != nil {
			return err
		}
		return os.Lchown(to, int(st.Uid), int(st.Gid))
	})
}

// opKillService kills a service's process out of band (SIGKILL).
func (tr *torture) opKillService() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	s := tr.pick(func(s *tSvc) bool { return s.present })
	if s == nil {
		return ""
	}
	var pids []string
	for _, p := range scanTortureProcs(tr.run) {
		if p.env["TORTURE_SVC"] == s.name {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
			pids = append(pids, strconv.Itoa(p.pid))
		}
	}
	if len(pids) == 0 {
		return ""
	}
	s.killedAt = time.Now()
	return fmt.Sprintf("kill -9 service %s (pid %s)", s.name, strings.Join(pids, ","))
}

// --- the agent ---

func (tr *torture) startAgent(env ...string) {
	tr.agent = tr.b.startAgent(env...)
	tr.logf("agent started %s", strings.Join(env, " "))
}

func (tr *torture) killAgent() {
	tr.agent.kill9(tr.t)
	tr.kills++
	tr.tails = append(tr.tails, tr.agent.out.tail(20))
	tr.fullLogs = append(tr.fullLogs, tr.agent.out.tail(1<<20))
	if len(tr.tails) > 2 {
		tr.tails = tr.tails[len(tr.tails)-2:]
	}
	tr.agent = nil
	tr.logf("kill -9 agent (#%d)", tr.kills)
}

// --- the random mode ---

type tortureOp struct {
	name   string
	weight int
	run    func() string
}

func (tr *torture) random() {
	tr.setup(tr.size.services)
	stopSampler := tr.sampler()
	defer stopSampler()
	tr.startAgent()
	tr.checkpoint()
	ops := []tortureOp{
		{"edit", 14, func() string { return tr.opEdit(false) }},
		{"edit in place", 10, func() string { return tr.opEdit(true) }},
		{"slow write", 12, tr.opSlowWrite},
		{"truncate", 6, func() string { return tr.opBreak(true) }},
		{"invalid", 8, func() string { return tr.opBreak(false) }},
		{"delete", 4, tr.opDelete},
		{"add", 4, tr.opAdd},
		{"drop-in", 9, tr.opDropIn},
		{"perm", 6, tr.opPerm},
		{"dir perm", 1, tr.opDirPerm},
		{"swap", 2, tr.opSwap},
		{"kill service", 3, tr.opKillService},
	}
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	sinceCheck := 0
	for tr.ops < tr.size.ops || tr.kills < tr.size.kills {
		if tr.agent == nil && tr.downOps <= 0 {
			tr.startAgent()
		}
		remK, remO := tr.size.kills-tr.kills, max(tr.size.ops-tr.ops, 1)
		if tr.agent != nil && remK > 0 && tr.rng.Float64() < float64(remK)/float64(remO) {
			// A random instant of the agent's life: right after start, mid-pass, idle.
			time.Sleep(time.Duration(tr.rng.Int64N(int64(150 * time.Millisecond))))
			tr.killAgent()
			tr.downOps = tr.rng.IntN(3)
			continue
		}
		r := tr.rng.IntN(total)
		var op tortureOp
		for _, o := range ops {
			if r < o.weight {
				op = o
				break
			}
			r -= o.weight
		}
		if what := op.run(); what != "" {
			tr.logf("%s", what)
			tr.ops++
			tr.downOps--
			sinceCheck++
		}
		time.Sleep(time.Duration(tr.rng.Int64N(int64(tr.size.maxGap))))
		if sinceCheck >= tr.size.checkEvery {
			sinceCheck = 0
			tr.checkpoint()
		}
	}
	tr.checkpoint()
	tr.summary()
}

func (tr *torture) summary() {
	took := time.Since(tr.begin).Round(time.Second)
	var cls []string
	for c, n := range tr.classes {
		cls = append(cls, fmt.Sprintf("%s×%d", c, n))
	}
	sort.Strings(cls)
	tr.t.Logf("TORTURE %s backend: %d operations, %d kill -9, %d checkpoints, %s, %d checkpoints with violations %v (seed %d)",
		tr.b.name(), tr.ops, tr.kills, tr.checkpoints, took, tr.badCheckpoints, cls, tr.seed)
}

// sampler scans the process table every 100 ms for service processes that
// cannot come from a complete manifest. The returned func stops it and
// waits.
func (tr *torture) sampler() func() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for _, p := range scanTortureProcs(tr.run) {
				if p.env["TORTURE_SVC"] == "" {
					continue
				}
				if why := tortureIncomplete(p); why != "" {
					tr.mu.Lock()
					if !tr.sampled[p.pid] {
						tr.sampled[p.pid] = true
						v := fmt.Sprintf("[incomplete] %s (%s): %s", p.env["TORTURE_SVC"], p, why)
						tr.sampleBad = append(tr.sampleBad, v)
						tr.logLocked("SAMPLER %s", v)
					}
					tr.mu.Unlock()
				}
			}
		}
	}()
	return func() { close(stop); <-done }
}

// --- checkpoints ---

type tortureObs struct {
	procs   map[string][]tortureProc
	bad     map[string]bool // services with a violation
	diff    string
	diffErr string
	code    int
}

// checkpoint waits for held operations, makes sure an agent runs, waits
// (bounded) for the invariants to hold, reports violations with the seed,
// the operation log and the observed state, and takes the observed state
// as the next baseline.
func (tr *torture) checkpoint() {
	tr.t.Helper()
	tr.held.Wait()
	tr.checkpoints++
	if tr.agent != nil && tr.agent.exited() {
		tr.violate([]string{fmt.Sprintf("[agent-exit] the agent exited by itself: %v\n%s", tr.agent.err, tr.agent.out.tail(60))}, tortureObs{})
		tr.agent = nil
	}
	if tr.agent == nil {
		tr.startAgent()
	}
	tr.logf("checkpoint %d", tr.checkpoints)
	deadline := time.Now().Add(tr.size.deadline)
	var obs tortureObs
	var v []string
	var last string
	var lastSince time.Time
	for {
		obs, v = tr.check()
		if len(v) == 0 {
			// Events are recorded by passes after the fact: poll them too.
			v = tr.checkEvents()
		}
		if len(v) == 0 || time.Now().After(deadline) {
			break
		}
		// The agent says it has converged (no diff violation) and the same
		// violations held for 5 s: they will not go away by waiting.
		if cur := strings.Join(v, "\n"); cur != last {
			last, lastSince = cur, time.Now()
		} else if !strings.Contains(cur, "[diff]") && time.Since(lastSince) > 5*time.Second {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	tr.mu.Lock()
	v = append(v, tr.sampleBad...)
	tr.sampleBad = nil
	tr.mu.Unlock()
	if len(v) > 0 {
		tr.violate(v, obs)
	}
	tr.rebase(obs)
	if tr.size.full {
		tr.t.Logf("checkpoint %d: %d operations, %d kill -9, %s, %d violations", tr.checkpoints, tr.ops, tr.kills,
			time.Since(tr.begin).Round(time.Second), len(v))
	}
	if tr.badCheckpoints >= tortureMaxBad() {
		tr.summary()
		tr.t.Fatalf("stopping after %d checkpoints with violations", tr.badCheckpoints)
	}
}

// check evaluates every invariant once.
func (tr *torture) check() (tortureObs, []string) {
	obs := tortureObs{procs: map[string][]tortureProc{}, bad: map[string]bool{}}
	var v []string
	tr.mu.Lock()
	var broken []string
	for _, n := range tr.order {
		if _, ok := tr.eff(tr.svcs[n]); !ok {
			broken = append(broken, n)
		}
	}
	tr.mu.Unlock()

	// diff exits 0; with broken manifests, 2 with nothing to do.
	out, errOut, code := tr.b.cli("diff", "-o", "json")
	obs.diff, obs.diffErr, obs.code = out, errOut, code
	var dj struct {
		Changes bool `json:"changes"`
		Steps   []struct {
			Text string `json:"text"`
		} `json:"steps"`
	}
	jerr := json.Unmarshal([]byte(out), &dj)
	var steps []string
	for _, s := range dj.Steps {
		steps = append(steps, s.Text)
	}
	switch {
	case jerr != nil:
		v = append(v, fmt.Sprintf("[diff] exit %d, unreadable output: %v\n%s%s", code, jerr, out, errOut))
	case len(broken) == 0 && (code != 0 || dj.Changes):
		v = append(v, fmt.Sprintf("[diff] exit %d, steps %q %s", code, steps, strings.TrimSpace(errOut)))
	case len(broken) > 0 && (code != 2 || dj.Changes):
		v = append(v, fmt.Sprintf("[diff] with broken %v: exit %d (want 2), steps %q", broken, code, steps))
	}

	for _, p := range scanTortureProcs(tr.run) {
		if n := p.env["TORTURE_SVC"]; n != "" {
			obs.procs[n] = append(obs.procs[n], p)
		}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for n := range obs.procs {
		if tr.svcs[n] == nil {
			// A name cut short ("tx0" of "tx012") by a partial write.
			v = append(v, fmt.Sprintf("[incomplete] processes of a service that never existed (a half-written name?): %v", obs.procs[n]))
		}
	}
	for _, n := range tr.order {
		s := tr.svcs[n]
		ps := obs.procs[n]
		before := len(v)
		want, defined := tr.eff(s)
		ok := map[string]bool{want: true}
		if !defined {
			ok = s.accept
		}
		got := tortureAbsent
		if len(ps) > 1 {
			v = append(v, fmt.Sprintf("[duplicate] %s runs %d processes: %v", n, len(ps), ps))
		}
		if len(ps) > 0 {
			got = tortureProcKey(ps[0])
			for _, p := range ps {
				if why := tortureIncomplete(p); why != "" {
					v = append(v, fmt.Sprintf("[incomplete] %s (%s): %s", n, p, why))
				}
			}
		}
		if !ok[got] {
			v = append(v, fmt.Sprintf("[version] %s runs %q, want one of %v (manifest broken: %v)", n, got, tortureKeys(ok), !defined))
		}
		if got == tortureAbsent {
			if tr.b.unitFile(n) && !(defined && want != tortureAbsent) {
				v = append(v, fmt.Sprintf("[remains] %s does not run but its unit file remains", n))
			}
			if tr.b.enabled(n) && !(defined && want != tortureAbsent) {
				v = append(v, fmt.Sprintf("[remains] %s does not run but is still enabled", n))
			}
		} else if !tr.b.unitFile(n) {
			v = append(v, fmt.Sprintf("[unit-file] %s runs but has no unit file", n))
		}
		stable := len(s.accept) == 1 && s.accept[s.base] && s.killedAt.IsZero() && !s.tainted
		if stable && s.basePID != 0 && len(ps) > 0 && ps[0].pid != s.basePID {
			v = append(v, fmt.Sprintf("[restarted] %s's manifest did not change since the last checkpoint, but its PID did: %d → %d", n, s.basePID, ps[0].pid))
		}
		if len(v) > before {
			obs.bad[n] = true
		}
	}
	if f := tr.b.foreignCheck(); f != "" {
		v = append(v, "[foreign] "+f)
	}
	if tmp := tr.b.tempFiles(); len(tmp) > 0 {
		v = append(v, fmt.Sprintf("[temp] temp files left: %v", tmp))
	}
	return obs, v
}

func tortureKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		if k == tortureAbsent {
			k = "(absent)"
		}
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// checkEvents opens the event store through the CLI and looks for the
// events the harness caused: InvalidManifest naming each manifest broken
// now, and an event for each service killed out of band.
func (tr *torture) checkEvents() []string {
	out, errOut, code := tr.b.cli("events", "-o", "json")
	if code != 0 {
		return []string{fmt.Sprintf("[events] reconciler events exit %d: %s", code, errOut)}
	}
	var evs []store.StoredEvent
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		return []string{fmt.Sprintf("[events] unreadable: %v", err)}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var v []string
	for _, n := range tr.order {
		s := tr.svcs[n]
		if _, ok := tr.eff(s); !ok && !s.brokenSince.IsZero() && s.present && !s.refused && !tr.dirBroken {
			found := false
			for _, e := range evs {
				if e.Reason == reconcile.ReasonInvalid && (strings.Contains(e.Message, n+".yaml") || strings.Contains(e.Message, n+".d/")) &&
					!e.LastSeen.Before(s.brokenSince.Add(-time.Second)) {
					found = true
				}
			}
			if !found {
				v = append(v, fmt.Sprintf("[events] no InvalidManifest event for %s (broken since %s)", n, s.brokenSince.Format(time.TimeOnly)))
			}
		}
		if !s.killedAt.IsZero() && s.present {
			found := false
			for _, e := range evs {
				// An Applied restart/start counts too: the agent may have
				// restarted the service (an edit) just as the harness killed
				// the old process.
				applied := e.Reason == reconcile.ReasonApplied && (strings.HasPrefix(e.Step, "restart "+n+".service") || strings.HasPrefix(e.Step, "start "+n+".service"))
				if strings.HasSuffix(e.Object, "/"+n) && !e.LastSeen.Before(s.killedAt.Add(-time.Second)) &&
					(applied || e.Reason == reconcile.ReasonRestarted || e.Reason == reconcile.ReasonStopped || e.Reason == reconcile.ReasonFailed) {
					found = true
				}
			}
			if !found {
				v = append(v, fmt.Sprintf("[events] no Restarted/StoppedOutOfBand/Failed (or Applied restart) event for %s killed at %s", n, s.killedAt.Format(time.TimeOnly)))
			}
		}
	}
	return v
}

// violate reports one checkpoint's violations with everything needed to
// replay and understand them.
func (tr *torture) violate(v []string, obs tortureObs) {
	tr.t.Helper()
	tr.badCheckpoints++
	for _, x := range v {
		if i := strings.Index(x, "]"); strings.HasPrefix(x, "[") && i > 0 {
			tr.classes[x[1:i]]++
		}
	}
	tr.mu.Lock()
	var state []string
	for _, n := range tr.order {
		s := tr.svcs[n]
		want, defined := tr.eff(s)
		if !defined {
			want = "BROKEN"
		}
		state = append(state, fmt.Sprintf("  %s: want %q base %q pid %d accept %v procs %v", n, want, s.base, s.basePID, tortureKeys(s.accept), obs.procs[n]))
	}
	oplog := strings.Join(tr.oplog, "\n")
	tr.mu.Unlock()
	agentOut := ""
	if tr.agent != nil {
		agentOut = tr.agent.out.tail(40)
	}
	agentOut += "\n--- " + tr.keepLogs(oplog)
	tr.t.Errorf("TORTURE VIOLATION on the %s backend at checkpoint %d (seed %d, replay: RESIL_TORTURE_SEED=%d):\n%s\n"+
		"--- operations since the last checkpoint:\n%s\n--- state:\n%s\n--- diff (exit %d):\n%s%s\n--- killed agents' last lines:\n%s\n--- agent's last lines:\n%s",
		tr.b.name(), tr.checkpoints, tr.seed, tr.seed, strings.Join(v, "\n"), oplog, strings.Join(state, "\n"),
		obs.code, obs.diff, obs.diffErr, strings.Join(tr.tails, "\n...\n"), agentOut)
}

// keepLogs writes the operation log, the whole output of every agent since
// the last checkpoint and the event store's events to a directory that
// outlives the test ($RESIL_TORTURE_LOGDIR, default below os.TempDir), so
// a violation can be read in full; it returns a line naming it.
func (tr *torture) keepLogs(oplog string) string {
	dir := os.Getenv("RESIL_TORTURE_LOGDIR")
	if dir == "" {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, fmt.Sprintf("resil-torture-%s-%d-cp%d", tr.b.name(), tr.seed, tr.checkpoints))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Sprintf("full logs not kept: %v", err)
	}
	files := map[string]string{"ops.log": "times are seconds since " + tr.begin.Format("15:04:05.000") + "\n" + oplog}
	for i, l := range tr.fullLogs {
		files[fmt.Sprintf("agent-killed-%02d.log", i)] = l
	}
	if tr.agent != nil {
		files["agent-current.log"] = tr.agent.out.tail(1 << 20)
	}
	if out, errOut, _ := tr.b.cli("events", "-o", "json"); out != "" || errOut != "" {
		files["events.json"] = out + errOut
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return fmt.Sprintf("full logs not kept: %v", err)
		}
	}
	return "full agent logs, operations and events kept in " + dir
}

// rebase takes what runs now as the baseline of the next checkpoint and
// removes old rev dirs.
func (tr *torture) rebase(obs tortureObs) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, n := range tr.order {
		s := tr.svcs[n]
		s.base, s.basePID = tortureAbsent, 0
		if ps := obs.procs[n]; len(ps) > 0 {
			s.base, s.basePID = tortureProcKey(ps[0]), ps[0].pid
		}
		s.accept = map[string]bool{s.base: true}
		s.killedAt = time.Time{}
		s.tainted = obs.bad[n]
	}
	tr.oplog = nil
	tr.tails = nil
	tr.fullLogs = nil
	cur := filepath.Base(tr.dir())
	ents, _ := os.ReadDir(tr.b.root())
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "rev-") && e.Name() != cur {
			_ = os.RemoveAll(filepath.Join(tr.b.root(), e.Name()))
		}
	}
}

// --- the deterministic mode: kill -9 after step k, for every k ---

// tortureState is a whole manifests dir: service → version (0: tortureAbsent) and drop-in version.
type tortureState map[string][2]int

// swapTo writes a new rev dir holding exactly st and swaps cur to it.
func (tr *torture) swapTo(st tortureState) {
	tr.dirLock.Lock()
	defer tr.dirLock.Unlock()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.rev++
	dir := tr.dir()
	tr.must(os.MkdirAll(dir, 0o755))
	for name, vd := range st {
		if vd[0] == 0 {
			continue
		}
		tr.must(tortureWrite(filepath.Join(dir, name+".yaml"), tr.manifest(name, vd[0])))
		if vd[1] != 0 {
			tr.must(os.MkdirAll(filepath.Join(dir, name+".d"), 0o755))
			tr.must(tortureWrite(filepath.Join(dir, name+".d", "50-torture.yaml"), tortureDropIn(vd[1])))
		}
	}
	tmp := filepath.Join(tr.b.root(), ".cur.tmp")
	tr.must(os.Symlink(filepath.Base(dir), tmp))
	tr.must(os.Rename(tmp, filepath.Join(tr.b.root(), "cur")))
	for name, vd := range st {
		s := tr.svcs[name]
		if s == nil {
			s = &tSvc{name: name, accept: map[string]bool{tortureAbsent: true}}
			tr.svcs[name] = s
			tr.order = append(tr.order, name)
			sort.Strings(tr.order)
		}
		s.present, s.valid, s.dropValid, s.refused = vd[0] != 0, vd[0] != 0, true, false
		s.ver, s.dropVer = vd[0], vd[1]
		tr.note(s)
	}
	tr.logLocked("swap to %s: %v", filepath.Base(dir), st)
}

// crashAfterEveryStep converges on state A, swaps to B (an edit, a drop-in
// change, a delete, a user change, an add, two untouched services), and
// for every k from 1 to the number of steps of the A→B plan: starts an
// agent that kills itself after step k (RESIL_TEST_CRASH_AFTER_STEP), then
// a normal agent, and checks B at a checkpoint; then back to A. The short
// size tries the first, a middle and the last k.
func (tr *torture) crashAfterEveryStep() {
	a := tortureState{"tx000": {1, 0}, "tx001": {1, 1}, "tx002": {1, 0}, "tx003": {1, 0}, "tx004": {1, 0}, "tx005": {1, 2}, "tx006": {0, 0}}
	b := tortureState{"tx000": {3, 0}, "tx001": {1, 3}, "tx002": {0, 0}, "tx003": {2, 0}, "tx004": {1, 0}, "tx005": {1, 2}, "tx006": {1, 0}}
	tr.must(os.Symlink("rev-0", filepath.Join(tr.b.root(), "cur")))
	stopSampler := tr.sampler()
	defer stopSampler()
	tr.swapTo(a)
	tr.startAgent()
	tr.checkpoint()
	tr.agent.stop(tr.t)
	tr.agent = nil

	tr.swapTo(b)
	out, _, code := tr.b.cli("diff", "-o", "json")
	var dj struct {
		Steps []struct {
			Text string `json:"text"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(out), &dj); err != nil || code != 1 {
		tr.t.Fatalf("diff A→B: exit %d, %v\n%s", code, err, out)
	}
	n := len(dj.Steps)
	var plan []string
	for i, s := range dj.Steps {
		plan = append(plan, fmt.Sprintf("%2d. %s", i+1, s.Text))
	}
	tr.t.Logf("A→B plan on the %s backend (%d steps):\n%s", tr.b.name(), n, strings.Join(plan, "\n"))
	ks := make([]int, 0, n)
	for k := 1; k <= n; k++ {
		if tr.size.full || k == 1 || k == n || k == (n+1)/2 {
			ks = append(ks, k)
		}
	}
	for _, k := range ks {
		tr.logf("crash after step %d of %d", k, n)
		tr.agent = tr.b.startAgent(fmt.Sprintf("RESIL_TEST_CRASH_AFTER_STEP=%d", k))
		select {
		case <-tr.agent.done:
			tr.kills++
			if ws, ok := tr.agent.cmd.ProcessState.Sys().(syscall.WaitStatus); tr.b.name() == "process" && (!ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL) {
				tr.t.Errorf("k=%d: agent exited with %v, want SIGKILL\n%s", k, tr.agent.err, tr.agent.out.tail(40))
			}
		case <-time.After(tr.size.deadline):
			tr.t.Errorf("k=%d: the agent did not kill itself within %s (fewer than %d steps ran)\n%s", k, tr.size.deadline, k, tr.agent.out.tail(60))
			tr.agent.stop(tr.t)
		}
		tr.tails = append(tr.tails, tr.agent.out.tail(40))
		tr.agent = nil
		tr.checkpoint() // starts a normal agent: B, exactly
		tr.ops++
		tr.agent.stop(tr.t)
		tr.agent = nil
		if k == ks[len(ks)-1] {
			break
		}
		tr.swapTo(a)
		tr.startAgent()
		tr.checkpoint()
		tr.agent.stop(tr.t)
		tr.agent = nil
		tr.swapTo(b)
	}
	tr.summary()
}
