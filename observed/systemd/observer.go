package systemd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	"github.com/hashicorp/go-multierror"
	"golang.org/x/sys/unix"

	"resil.dev/resil/internal/filestamp"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/internal/par"
	"resil.dev/resil/internal/sdbus"
	"resil.dev/resil/observed"
)

// Client is the slice of a systemd connection Observe uses. *sdbus.Conn
// (from sdbus.Dial) satisfies it; tests use a fake (internal/sdbus/sdbustest).
type Client interface {
	// ListUnitsByNamesContext returns the status of every named unit in one
	// call, even of units that do not exist (LoadState "not-found").
	ListUnitsByNamesContext(ctx context.Context, units []string) ([]sddbus.UnitStatus, error)
	// GetAllPropertiesContext returns every property of every interface of
	// a unit (Unit plus Service, Timer, ...) in one call.
	GetAllPropertiesContext(ctx context.Context, unit string) (map[string]any, error)
	// GetUnitPropertiesContext reads the named properties of many units
	// with pipelined Properties.Get calls; errs[i] is the failure of
	// queries[i] (see sdbus.Conn.GetUnitPropertiesContext).
	GetUnitPropertiesContext(ctx context.Context, queries []sdbus.PropertyQuery) (props []map[string]any, errs []error, err error)
	// GetManagerPropertyContext reads one org.freedesktop.systemd1.Manager property.
	GetManagerPropertyContext(ctx context.Context, name string) (godbus.Variant, error)
	// ListUnitFilesByPatternsContext lists the unit files on disk whose
	// names match patterns, with their enablement as systemd computes it
	// from the files and symlinks now (not from its loaded-unit cache,
	// which only daemon-reload refreshes).
	ListUnitFilesByPatternsContext(ctx context.Context, states, patterns []string) ([]sddbus.UnitFile, error)
}

var _ Client = (*sdbus.Conn)(nil)

// ManagerProperties are the manager properties Observe reads.
var ManagerProperties = []string{"RuntimeWatchdogUSec", "RebootWatchdogUSec", "WatchdogDevice"}

// Defaults.
const (
	DefaultManagerConf = "/etc/systemd/system.conf.d/" + ownmark.WatchdogFile
	DefaultSysfs       = "/sys"
	// DefaultStampDir is where systemd keeps Persistent= timer stamps.
	DefaultStampDir = "/var/lib/systemd/timers"
	// DefaultConcurrency bounds the property reads in flight per Observe.
	// systemd serves them one at a time; more in flight only hides the
	// round trips (a bus daemon caps pending replies per connection at
	// 128 by default).
	DefaultConcurrency = 8
	// maxFileSize caps how much of a unit file or drop-in is read.
	maxFileSize = 1 << 20
	// listChunk bounds the names sent in one ListUnitsByNames or
	// ListUnitFilesByPatterns call: one call per pass up to 4096 units
	// (about 0.3 MB of reply), however many units a pass covers.
	listChunk = 4096
)

// Observer reads systemd's state for the planner. It holds no connection
// of its own and starts no goroutine outside Observe and Subscribe. It is
// safe for concurrent use, but one Subscribe at a time.
type Observer struct {
	c       Client
	unitDir string
	cfg     config

	calls       atomic.Uint64
	subscribing atomic.Bool
	// changes moves with every signal Subscribe's watch delivers, every
	// daemon-reload the agent reports and every start and end of the
	// watch (ChangeSeq).
	changes atomic.Uint64
	// queued reports the signals the watch read that Subscribe has not
	// handled yet (nil while no watch runs).
	queued atomic.Pointer[func() int]

	mu sync.Mutex
	// unitPath is systemd's unit search path (Manager.UnitPath), read
	// once: it changes only when PID 1 is re-executed with another
	// environment.
	unitPath []string
	// hints are the managed units (last Observe) with their last known
	// state, the baseline Subscribe deduplicates against.
	hints map[string]hint
	// runs are the run figures the watch last heard of each managed
	// service, gone the last runs of those systemd unloaded since
	// (lastrun.go).
	runs, gone map[string]lastRun
	// ownJobs are the units the agent's own jobs act on (JobQueued),
	// whose signals do not wake; ownJobsKick tells Subscribe they changed.
	ownJobs     map[string]*ownJob
	ownJobsKick chan struct{}
	// own are the agent's own changes to unit files and reloads
	// (OwnFiles), told apart from an operator's (ownfiles.go).
	own ownFiles
	// cache is the watch-fed cache (cache.go).
	cache cacheState

	// scanned are the unit files the last scanUnitDir read, by name,
	// with their stamps; links, the dependency directories dirLinks read
	// (scanMu).
	scanMu  sync.Mutex
	scanned map[string]scannedFile
	links   map[string]linkDir
}

type hint struct {
	active, sub string
	mainPID     uint32
}

type config struct {
	root        string
	managerConf string
	sysfs       string
	stampDir    string
	manager     bool
	concurrency int
	getAll      bool
	hook        func(method string)
	now         func() time.Time
	// alive, if set, tells whether a main PID systemd reported still
	// names a running (or not yet reaped) process (WithProcessCheck).
	alive func(pid uint32) bool
}

// Option configures an Observer.
type Option func(*config)

// WithRoot reads the paths systemd reports (DropInPaths) below root, e.g.
// "/proc/PID/root" for a systemd in another mount namespace. Default "".
func WithRoot(root string) Option { return func(c *config) { c.root = root } }

// WithManagerConf sets the path of the owned manager drop-in
// (default DefaultManagerConf).
func WithManagerConf(path string) Option { return func(c *config) { c.managerConf = path } }

// WithSysfs sets the sysfs root where /class/watchdog is read (default
// "/sys"); tests point it at testdata.
func WithSysfs(root string) Option { return func(c *config) { c.sysfs = root } }

// WithStampDir sets where timer stamps are read (default DefaultStampDir,
// below WithRoot's root).
func WithStampDir(dir string) Option { return func(c *config) { c.stampDir = dir } }

// WithoutManager skips the manager (State.Manager stays nil), saving three
// D-Bus calls per Observe.
func WithoutManager() Option { return func(c *config) { c.manager = false } }

// WithConcurrency bounds the property reads in flight (default 4; 1 makes
// Observe sequential). systemd serves them one at a time; overlapping only
// hides the round trips.
func WithConcurrency(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.concurrency = n
		}
	}
}

// WithGetAll reads each unit's properties with one GetAll of every
// interface (concurrency bounded by WithConcurrency) instead of pipelined
// Gets of the properties Observe uses (the default). Tests compare both.
func WithGetAll() Option { return func(c *config) { c.getAll = true } }

// WithCallHook calls hook with the method name of every D-Bus call the
// Observer makes (e.g. to feed a metric). It must be fast and safe for
// concurrent use.
func WithCallHook(hook func(method string)) Option { return func(c *config) { c.hook = hook } }

// WithProcessCheck lets the recheck after KeepReads (apply's read after
// its steps) tell a cached service's main process is still the one read
// from the process table instead of asking systemd: one kill(pid, 0) per
// service instead of one Get. It is used only when this process sees
// systemd's PIDs: PID 1 of its PID namespace is systemd (checked here,
// once); otherwise the Gets stay.
//
// Why the table tells: a start of a service, by any job, a crash restart
// or a timer, follows the end of its previous main process (systemd
// reaps it first), so a main PID that still names a process is the
// process the first read saw, as PIDs are not reused before the PID
// space wraps (pid_max). What it cannot see: a service restarted while
// its old main process survived the stop (KillMode=none, deprecated).
func WithProcessCheck() Option {
	return func(c *config) {
		if b, err := os.ReadFile("/proc/1/comm"); err == nil && strings.TrimSpace(string(b)) == "systemd" {
			c.alive = pidAlive
		}
	}
}

// withAlive sets the process check directly (tests).
func withAlive(alive func(pid uint32) bool) Option { return func(c *config) { c.alive = alive } }

// pidAlive reports whether pid names a process (a zombie included):
// kill(pid, 0) fails with ESRCH only when there is none.
func pidAlive(pid uint32) bool {
	return syscall.Kill(int(pid), 0) != syscall.ESRCH
}

// WithClock sets the clock for State.ReadAt (default time.Now).
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// New returns an Observer of the units in unitDir (the directory resil
// writes unit files to, e.g. /etc/systemd/system) over c, which the caller
// owns.
func New(c Client, unitDir string, opts ...Option) *Observer {
	cfg := config{
		managerConf: DefaultManagerConf,
		sysfs:       DefaultSysfs,
		stampDir:    DefaultStampDir,
		manager:     true,
		concurrency: DefaultConcurrency,
		now:         time.Now,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return &Observer{c: c, unitDir: unitDir, cfg: cfg, ownJobsKick: make(chan struct{}, 1)}
}

// Calls returns the number of D-Bus calls the Observer has made (Observe
// and Subscribe together). sdbus.Conn.Wire counts the whole connection.
func (o *Observer) Calls() uint64 { return o.calls.Load() }

func (o *Observer) count(method string) {
	o.calls.Add(1)
	if o.cfg.hook != nil {
		o.cfg.hook(method)
	}
}

// Observe reads the state of every unit in names (the units the desired set
// renders) plus every unit file in the unit directory that carries resil's
// ownership marker, the bytes of those files and of every drop-in systemd
// loaded for them, and (unless WithoutManager) the manager's watchdog state.
//
// Enablement (Unit.UnitFileState) is read from the unit files on disk, with
// one ListUnitFilesByPatterns per 256 names: systemd's UnitFileState
// property is a cache that only daemon-reload refreshes, so an enable or
// disable done without a reload (the agent's own EnableUnitFiles, a
// `systemctl disable` racing a reload) would otherwise be misread.
//
// Other files for a unit name (Unit.VendorPaths) are found by listing each
// directory of systemd's unit search path (Manager.UnitPath, read once per
// Observer). Unit.StaleProcess is derived as described at staleProcess.
//
// D-Bus cost: one ListUnitsByNames and one ListUnitFilesByPatterns per 4096
// names, one GetAll per unit that needsProperties (systemd knows it and it
// is not masked), DefaultConcurrency in flight, three manager property
// reads, and one read of UnitPath on the first Observe.
//
// Outcomes:
//   - (s, nil): s is complete. Units that systemd does not know have
//     LoadState "not-found"; their File is set if a file exists (e.g.
//     written but not yet daemon-reloaded).
//   - (nil, err): something could not be read; err lists every failure
//     (a multierror when there are several). The loop must not plan on a
//     partial view; it retries.
func (o *Observer) Observe(ctx context.Context, names []string) (*observed.State, error) {
	return o.observe(ctx, names, false)
}

// ObserveFull is Observe without the watch-fed cache (see cache.go): it
// reads every unit's properties, and reports in State.CacheDrift every
// unit whose cached properties Observe would have used and that differ
// from what it read. The loop's periodic resync calls it.
func (o *Observer) ObserveFull(ctx context.Context, names []string) (*observed.State, error) {
	return o.observe(ctx, names, true)
}

func (o *Observer) observe(ctx context.Context, names []string, full bool) (*observed.State, error) {
	files, err := o.scanUnitDir()
	if err != nil {
		return nil, err
	}

	want := make(map[string]bool, len(names)+len(files))
	for _, n := range names {
		want[n] = true
	}
	for n, f := range files {
		if _, ok := ownmark.IsOwned(f.data); ok {
			want[n] = true
		}
	}
	all := make([]string, 0, len(want))
	var query []string
	for n := range want {
		all = append(all, n)
		if Queryable(n) {
			query = append(query, n)
		}
	}
	sort.Strings(all)
	sort.Strings(query)

	// The search path's listings (the agent's CPU) are read while systemd
	// lists the units (PID 1's): neither needs the other. The search path
	// itself is read first (once per Observer): one call at a time on the
	// connection's property pipe, which a second caller would dial again.
	if len(want) > 0 {
		if _, err := o.searchPath(ctx); err != nil {
			return nil, err
		}
	}
	var (
		vendor map[string]vendor
		scan   searchScan
		verr   error
		vdone  = make(chan struct{})
	)
	go func() {
		defer close(vdone)
		vendor, scan, verr = o.vendorFiles(ctx, want)
	}()
	// KeepReads' recheck of the cached services' starts (a Get each on
	// the property pipe) runs beside ListUnitsByNames (the bus
	// connection): it needs only the cache's entries. earlyProps, the
	// pipe's other user, reads nothing while the cache answers. With the
	// process check (no D-Bus call, ~1 ms at 1000) it runs after the
	// listing instead: a process that died and was started again between
	// a check made first and the listing would read as the cached one
	// (active, running) in both. The Gets beside the listing keep that
	// window, as long as the two reads take (a restart within it needs
	// RestartSec= below a few ms).
	rdone := make(chan error, 1)
	if o.cfg.alive == nil {
		go func() { rdone <- o.recheckStarts(ctx) }()
	}
	status, err := o.listUnits(ctx, query)
	if o.cfg.alive != nil {
		rdone <- o.recheckStarts(ctx)
	}
	var (
		early    map[string]map[string]any
		earlyGen uint64
	)
	if err == nil {
		early, earlyGen, err = o.earlyProps(ctx, query, status)
	}
	<-vdone
	rerr := <-rdone
	if err != nil {
		return nil, err
	}
	if verr != nil {
		return nil, verr
	}
	if rerr != nil {
		return nil, rerr
	}

	st := &observed.State{
		Backend: "systemd",
		UnitDir: o.unitDir,
		Units:   make(map[string]*observed.Unit, len(all)),
	}
	var loaded []*observed.Unit
	for _, n := range all {
		u := &observed.Unit{
			Name:        n,
			Path:        filepath.Join(o.unitDir, n),
			File:        files[n].data,
			LoadState:   "not-found",
			ActiveState: "inactive",
			SubState:    "dead",
		}
		if owner, ok := ownmark.IsOwned(u.File); ok {
			u.Owner = owner
		}
		if s, ok := status[n]; ok {
			u.LoadState, u.ActiveState, u.SubState = s.LoadState, s.ActiveState, s.SubState
			u.PendingJob = s.JobId != 0
		}
		if needsProperties(u) {
			loaded = append(loaded, u)
		}
		if strings.HasSuffix(n, ".timer") {
			o.readStamp(u)
		}
		st.Units[n] = u
	}

	triples := make(map[string][3]string, len(status))
	for n, s := range status {
		triples[n] = [3]string{s.LoadState, s.ActiveState, s.SubState}
	}
	ans := o.cachePlan(full, loaded, files, triples, vendor, scan.typeDropIns)
	read := ans.read
	if ans.gen != earlyGen {
		early = nil // the cache went on meanwhile: read after its plan
	}
	var errs *multierror.Error
	// systemd's last unit load: a unit loaded from files that have not
	// changed since has no reload pending (settled), and its
	// NeedDaemonReload, the dearest property, is not asked for.
	var loadStart uint64
	settled := map[string]bool{}
	var candidates []*observed.Unit
	for _, u := range slices.Concat(read, ans.reloaded) {
		if !scan.typeDropIns && files[u.Name].data != nil && !vendor[u.Name].overrides {
			candidates = append(candidates, u)
		}
	}
	loadRead := false // unitsLoadStart asked this pass (it may say 0)
	if len(candidates) > 0 {
		loadRead = true
		if loadStart, err = o.unitsLoadStart(ctx); err != nil {
			errs = multierror.Append(errs, err)
		}
		now := time.Now()
		for _, u := range candidates {
			if loadedAsOnDisk(u, files[u.Name], vendor[u.Name], loadStart, now) {
				settled[u.Name] = true
			}
		}
	}
	// A settled unit's drop-ins are those on disk only if nothing that
	// leaves no trace below a search-path directory changed since the
	// load either (a NAME.d directory or an alias removed): otherwise
	// systemd says which it loaded.
	diskTells := vendor
	if loadStart == 0 || scan.unread || !beforeLoad(scan.dirsChanged, loadStart, time.Now()) {
		diskTells = nil
	}
	errs = multierror.Append(errs, o.readProperties(ctx, read, settled, diskTells, early)...)
	// A settled unit with a loaded drop-in that is not where resil looks
	// (or no longer there): systemd answers after all. A unit answered
	// from an entry cached before systemd's last reload: settled, it has
	// no reload pending; otherwise systemd answers.
	var unsure []*observed.Unit
	for _, u := range read {
		if settled[u.Name] && loadedElsewhere(o.cfg.root, u, vendor[u.Name].dropIns) {
			unsure = append(unsure, u)
		}
	}
	for _, u := range ans.reloaded {
		u.NeedDaemonReload = false
		if !settled[u.Name] {
			unsure = append(unsure, u)
		}
	}
	errs = multierror.Append(errs, o.readNeedDaemonReload(ctx, unsure)...)
	dropInTimes := make(map[string]map[string]time.Time, len(loaded))
	readDropIns := func(units []*observed.Unit) {
		for _, u := range units {
			times, err := o.readDropIns(u)
			if err != nil {
				errs = multierror.Append(errs, err)
			}
			dropInTimes[u.Name] = times
		}
	}
	readDropIns(loaded)
	if !full && len(ans.reusable) > 0 {
		// A unit answered from the cache whose loaded drop-ins changed
		// on disk since: read it after all.
		var again []*observed.Unit
		for _, u := range loaded {
			if e := ans.reusable[u.Name]; e != nil && dropInsChanged(e, dropInTimes[u.Name]) {
				again = append(again, u)
			}
		}
		errs = multierror.Append(errs, o.readProperties(ctx, again, nil, nil, nil)...)
		readDropIns(again)
	}
	for _, u := range loaded {
		// Only where the disk tells which drop-ins systemd loads: not
		// with a drop-in overridden by one of its name earlier in the
		// search path, or masked by a link to /dev/null, an alias or a
		// template (dropInsFromDisk): those never appear in DropInPaths,
		// and would read as pending (and foreign) on every pass.
		if !dropInsFromDisk(u.Name, vendor[u.Name]) {
			continue
		}
		if u.PendingDropIns = pendingDropIns(o.cfg.root, u, vendor[u.Name].dropIns); len(u.PendingDropIns) > 0 {
			u.NeedDaemonReload = true
			for _, p := range u.PendingDropIns {
				data, _, err := readFile(filepath.Join(o.cfg.root, p))
				switch {
				case errors.Is(err, fs.ErrNotExist):
				case err != nil:
					errs = multierror.Append(errs, fmt.Errorf("read drop-in of %s: %w", u.Name, err))
				default:
					if u.DropIns == nil {
						u.DropIns = map[string][]byte{}
					}
					u.DropIns[p] = data
				}
			}
		}
	}
	errs = multierror.Append(errs, o.readFragments(ctx, loaded, files)...)
	// systemd's last unit load matters only while a reload is pending.
	for _, u := range loaded {
		if !loadRead && u.NeedDaemonReload && u.Active() && u.Owner != "" {
			if loadStart, err = o.unitsLoadStart(ctx); err != nil {
				errs = multierror.Append(errs, err)
			}
			break
		}
	}
	enablement, err := o.enablement(ctx, query, files, vendor)
	if err != nil {
		errs = multierror.Append(errs, err)
	}
	readAt := time.Now() // file and run times are the real clock's
	var stale []*observed.Unit
	for _, n := range all {
		u := st.Units[n]
		u.UnitFileState = enablement[n]
		f, hasFile := files[n]
		u.InstallLinks, u.InstallLinksKnown = installLinks(f.data, hasFile, vendor[n])
		u.VendorPaths, u.VendorOverrides = vendor[n].paths, vendor[n].overrides
		if hasFile && !f.mtime.IsZero() {
			u.FileModTime = uint64(f.mtime.UnixMicro())
		}
		u.StaleProcess = staleProcess(u, files[n].mtime, dropInTimes[n], loadStart)
		if u.StaleRun = staleRun(u, files[n].mtime, dropInTimes[n], readAt); u.StaleRun {
			stale = append(stale, u)
		}
	}
	if err := o.startTriedSince(ctx, stale, files, dropInTimes); err != nil {
		errs = multierror.Append(errs, err)
	}
	st.UnitsLoadStart = loadStart
	if o.cfg.manager {
		m, err := o.observeManager(ctx)
		if err != nil {
			errs = multierror.Append(errs, err)
		}
		st.Manager = m
	}
	if err := errs.ErrorOrNil(); err != nil {
		return nil, err
	}
	if full {
		st.CacheDrift = o.cacheDrift(ans, st.Units)
	}
	o.cacheStore(ans.gen, ans.reloads, loaded, files, triples, vendor, dropInTimes)

	hints := make(map[string]hint, len(st.Units))
	for n, u := range st.Units {
		hints[n] = hint{active: u.ActiveState, sub: u.SubState, mainPID: u.MainPID}
	}
	o.mu.Lock()
	o.hints = hints
	o.relayLastRuns(st.Units)
	o.mu.Unlock()

	st.ReadAt = o.cfg.now()
	return st, nil
}

// needsProperties reports whether Observe reads u's properties (GetAll)
// after ListUnitsByNames gave its states: not for a unit systemd does not
// know (not-found: its properties are all zero) nor for a masked one
// (nothing of it can run; the planner only needs VendorPaths and File).
// Everything else needs them: an active service's MainPID, NRestarts and
// ExecMainStartTimestamp (restart ledger, StaleProcess), an inactive or
// failed unit's Result and exit (failure and timer reports), every unit's
// NeedDaemonReload and DropInPaths. systemd 252 has no bulk call for any
// of these.
func needsProperties(u *observed.Unit) bool {
	return u.LoadState != "not-found" && u.LoadState != "masked"
}

// unitFile is one regular file in the unit directory.
type unitFile struct {
	data         []byte
	mtime, ctime time.Time
}

// scanUnitDir reads every regular file with a unit suffix directly in the
// unit directory. A missing directory holds no files.
//
// A file read by an earlier scan whose stamp (filestamp: device, inode,
// size, modification and change times) is the same is not read again: one
// lstat instead of five system calls (1000 files: 20 ms a pass). Only
// files whose stamp was settled when they were read are kept for that
// (filestamp's racy-file rule, as desired's FileCache).
func (o *Observer) scanUnitDir() (map[string]unitFile, error) {
	start := time.Now()
	entries, err := os.ReadDir(o.unitDir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]unitFile{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read unit dir %s: %w", o.unitDir, err)
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && !strings.HasPrefix(n, ".") && HasUnitSuffix(n) {
			names = append(names, n)
		}
	}
	o.scanMu.Lock()
	prev := o.scanned
	o.scanMu.Unlock()
	// Five system calls per file read: a few workers keep them in flight
	// (1000 files: 15 ms read one after the other).
	read := make([]unitFile, len(names))
	stamps := make([]filestamp.Stamp, len(names))
	errs := make([]error, len(names))
	par.For(len(names), scanWorkers, 32, func(i int) {
		path := filepath.Join(o.unitDir, names[i])
		if c, ok := prev[names[i]]; ok {
			if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && filestamp.Of(fi) == c.stamp {
				read[i], stamps[i] = c.file, c.stamp
				return
			}
		}
		data, fi, err := readFileStat(path)
		if err == nil {
			read[i], stamps[i] = unitFile{data: data, mtime: fi.ModTime(), ctime: changeTime(fi)}, filestamp.Of(fi)
		}
		errs[i] = err
	})
	files := make(map[string]unitFile, len(names))
	kept := make(map[string]scannedFile, len(names))
	var merr *multierror.Error
	for i, n := range names {
		switch err := errs[i]; {
		case errors.Is(err, fs.ErrNotExist): // removed meanwhile
		case err != nil:
			merr = multierror.Append(merr, err)
		default:
			files[n] = read[i]
			if stamps[i].Settled(start, racyWindow) {
				kept[n] = scannedFile{stamp: stamps[i], file: read[i]}
			}
		}
	}
	o.scanMu.Lock()
	o.scanned = kept
	o.scanMu.Unlock()
	return files, merr.ErrorOrNil()
}

// racyWindow is filestamp.RacyWindow (a variable: tests shorten it).
var racyWindow = filestamp.RacyWindow

// scannedFile is a unit file kept by scanUnitDir with its stamp.
type scannedFile struct {
	stamp filestamp.Stamp
	file  unitFile
}

// scanWorkers bounds the goroutines reading the unit directory.
const scanWorkers = 4

func (o *Observer) listUnits(ctx context.Context, names []string) (map[string]sddbus.UnitStatus, error) {
	out := make(map[string]sddbus.UnitStatus, len(names))
	for len(names) > 0 {
		chunk := names[:min(len(names), listChunk)]
		names = names[len(chunk):]
		o.count("ListUnitsByNames")
		list, err := o.c.ListUnitsByNamesContext(ctx, chunk)
		if err != nil {
			return nil, fmt.Errorf("list units: %w", err)
		}
		// systemd answers one status per name, in order; the status of an
		// alias carries the unit's primary name, so match by position.
		if len(list) == len(chunk) {
			for i, s := range list {
				out[chunk[i]] = s
			}
			continue
		}
		for _, s := range list {
			out[s.Name] = s
		}
	}
	return out, nil
}

// earlyProps reads, for every service and timer systemd knows of names
// (status: ListUnitsByNames' answer), the properties each read of it asks
// whatever its files say (pipedProperties of a settled unit whose drop-ins
// the disk tells), in one batch while vendorFiles lists the search path
// (the agent's CPU against PID 1's). readProperties then asks only for
// what the disk does not tell (NeedDaemonReload, DropInPaths; nothing on a
// converged host). It reads only while the watch-fed cache answers for no
// unit and is off or held (a one-shot command, KeepReads before Recheck;
// the agent's passes before its watch starts): a read made before
// cachePlan would race the cache's dirty marks, so its answer is dropped
// if the cache went on meanwhile (gen, the
// cache's generation then, differs from cachePlan's; cacheStore keeps
// nothing read while the cache was off). A unit whose read failed is not
// in the answer (read again in full); nil when nothing was read early.
// err: the read itself failed (the pass's observation fails, as a later
// read's failure would fail it).
func (o *Observer) earlyProps(ctx context.Context, names []string, status map[string]sddbus.UnitStatus) (early map[string]map[string]any, gen uint64, err error) {
	o.mu.Lock()
	off, gen := !o.cache.on || o.cache.hold, o.cache.gen // hold: no watch, no signals to race
	o.mu.Unlock()
	if !off || o.cfg.getAll {
		return nil, gen, nil
	}
	var (
		units []string
		qs    []sdbus.PropertyQuery
	)
	for _, n := range names {
		s, ok := status[n]
		if !ok {
			continue
		}
		u := &observed.Unit{Name: n, LoadState: s.LoadState, SubState: s.SubState}
		if !needsProperties(u) {
			continue
		}
		if props := pipedProperties(u, true, true); props != nil {
			units = append(units, n)
			qs = append(qs, sdbus.PropertyQuery{Unit: n, Props: props})
		}
	}
	if len(qs) == 0 {
		return nil, gen, nil
	}
	for range qs {
		o.count("GetProperties")
	}
	props, perr, err := o.c.GetUnitPropertiesContext(ctx, qs)
	if err != nil {
		return nil, gen, err
	}
	early = make(map[string]map[string]any, len(units))
	for i, n := range units {
		if perr[i] == nil {
			early[n] = props[i]
		}
	}
	return early, gen, nil
}

// readProperties fills the units' properties: the services' and timers'
// with one batch of pipelined Gets of the properties fillUnit reads
// (pipedProperties) but those read early (earlyProps), any other unit's
// (or every unit's, WithGetAll) with one GetAll each, o.cfg.concurrency at
// a time. A settled unit's DropInPaths come from the disk when they can
// (dropInsFromDisk; vendor is vendorFiles' answer), and a running
// service's Result is success (resultWhileRunning).
func (o *Observer) readProperties(ctx context.Context, units []*observed.Unit, settled map[string]bool, vendor map[string]vendor, early map[string]map[string]any) []error {
	var (
		mu    sync.Mutex
		errs  []error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, o.cfg.concurrency)
		piped []*observed.Unit
		qs    []sdbus.PropertyQuery
	)
	for _, u := range units {
		// vendor has no entry for a unit without drop-ins or aliases.
		fromDisk := vendor != nil && dropInsFromDisk(u.Name, vendor[u.Name])
		if props := pipedProperties(u, settled[u.Name], fromDisk); props != nil && !o.cfg.getAll {
			if got, ok := early[u.Name]; ok {
				props = slices.DeleteFunc(slices.Clone(props), func(p sdbus.Property) bool {
					_, read := got[p.Name]
					return read
				})
			}
			piped = append(piped, u)
			qs = append(qs, sdbus.PropertyQuery{Unit: u.Name, Props: props})
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			o.count("GetAll")
			props, err := o.c.GetAllPropertiesContext(ctx, u.Name)
			if err == nil {
				err = fillUnit(u, props)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("read properties of %s: %w", u.Name, err))
				mu.Unlock()
			}
		}()
	}
	if len(qs) > 0 {
		// Only the units with something left to ask are sent.
		var ask []sdbus.PropertyQuery
		var at []int
		for i, q := range qs {
			if len(q.Props) > 0 {
				ask = append(ask, q)
				at = append(at, i)
				if _, counted := early[piped[i].Name]; !counted {
					o.count("GetProperties") // one per unit (earlyProps counts its own)
				}
			}
		}
		props, perr := make([]map[string]any, len(qs)), make([]error, len(qs))
		var err error
		if len(ask) > 0 {
			var got []map[string]any
			var gerr []error
			got, gerr, err = o.c.GetUnitPropertiesContext(ctx, ask)
			for j, i := range at {
				if err == nil {
					props[i], perr[i] = got[j], gerr[j]
				}
			}
		}
		for i, u := range piped {
			if props[i] == nil {
				props[i] = map[string]any{}
			}
			for k, v := range early[u.Name] {
				props[i][k] = v
			}
		}
		mu.Lock()
		if err != nil {
			errs = append(errs, err)
		}
		for i, u := range piped {
			if err != nil {
				break
			}
			e := perr[i]
			if e == nil {
				e = fillUnit(u, props[i])
			}
			if _, asked := props[i]["DropInPaths"]; e == nil && !asked {
				u.DropInPaths = loadOrder(vendor[u.Name].dropIns)
			}
			if _, asked := props[i]["Result"]; e == nil && !asked {
				u.Result = resultWhileRunning
			}
			if e != nil {
				errs = append(errs, fmt.Errorf("read properties of %s: %w", u.Name, e))
			}
		}
		mu.Unlock()
	}
	wg.Wait()
	return errs
}

// The properties fillUnit reads, by interface. LoadState, ActiveState,
// SubState come from ListUnitsByNames, and so does the pending job.
// FragmentPath is not read but for a loaded unit without a file
// (readFragments): nothing plans from it otherwise. A running service's
// ExecMainStatus and ExecMainExitTimestamp are not read either: systemd
// zeroes a service's main exec status when it sets a new main PID
// (exec_status_start), so while the service runs they are 0, which is
// what fillUnit leaves (TestSandboxFidelityPipelinedReads compares with
// GetAll), and nor is its Result (resultWhileRunning). NeedDaemonReload
// is the dearest
// Get (systemd stats the fragment and scans every drop-in directory of
// the search path for it: 23 µs of PID 1 against 6-10 µs for the others
// on the private socket, internal/sdbus TestSandboxCallCostsPID1); it is
// left out when the unit's files predate systemd's last unit load
// (loadedAsOnDisk), and DropInPaths too when the disk tells them
// (dropInsFromDisk).
var (
	unitProps = []sdbus.Property{
		{Interface: ifaceUnit, Name: "DropInPaths"},
		{Interface: ifaceUnit, Name: "NeedDaemonReload"},
	}
	serviceRunningProps = append(slices.Clone(unitProps),
		sdbus.Property{Interface: ifaceService, Name: "NRestarts"},
		sdbus.Property{Interface: ifaceService, Name: "MainPID"},
		sdbus.Property{Interface: ifaceService, Name: "ExecMainStartTimestamp"},
	)
	serviceProps = append(slices.Clone(serviceRunningProps),
		sdbus.Property{Interface: ifaceService, Name: "Result"},
		sdbus.Property{Interface: ifaceService, Name: "ExecMainStatus"},
		sdbus.Property{Interface: ifaceService, Name: "ExecMainExitTimestamp"},
		sdbus.Property{Interface: ifaceUnit, Name: "ActiveExitTimestamp"},
	)
	timerProps = append(slices.Clone(unitProps),
		sdbus.Property{Interface: ifaceUnit, Name: "Triggers"},
		sdbus.Property{Interface: ifaceTimer, Name: "Result"},
		sdbus.Property{Interface: ifaceTimer, Name: "LastTriggerUSec"},
		sdbus.Property{Interface: ifaceTimer, Name: "NextElapseUSecRealtime"},
		sdbus.Property{Interface: ifaceTimer, Name: "NextElapseUSecMonotonic"},
	)
)

const (
	ifaceUnit    = "org.freedesktop.systemd1.Unit"
	ifaceService = "org.freedesktop.systemd1.Service"
	ifaceTimer   = "org.freedesktop.systemd1.Timer"
)

// pipedProperties returns the properties to Get of a unit (its SubState
// as ListUnitsByNames gave it), nil for a unit type read with GetAll.
// settled leaves out NeedDaemonReload (loadedAsOnDisk), and DropInPaths
// too when diskDropIns says the disk tells them.
func pipedProperties(u *observed.Unit, settled, diskDropIns bool) []sdbus.Property {
	var lists [3][]sdbus.Property // all, settled, settled with drop-ins from disk
	switch name := u.Name; {
	case strings.HasSuffix(name, ".service") && u.SubState == "running":
		lists = serviceRunningLists
	case strings.HasSuffix(name, ".service"):
		lists = serviceLists
	case strings.HasSuffix(name, ".timer"):
		lists = timerLists
	default:
		return nil
	}
	switch {
	case settled && diskDropIns:
		return lists[2]
	case settled:
		return lists[1]
	}
	return lists[0]
}

// The property lists of each kind of unit: all of them, a settled unit's
// (without NeedDaemonReload), and a settled unit's whose drop-ins the disk
// tells (without DropInPaths either).
var (
	serviceRunningLists = propLists(serviceRunningProps)
	serviceLists        = propLists(serviceProps)
	timerLists          = propLists(timerProps)
)

func propLists(all []sdbus.Property) [3][]sdbus.Property {
	without := func(props []sdbus.Property, name string) []sdbus.Property {
		return slices.DeleteFunc(slices.Clone(props), func(p sdbus.Property) bool { return p.Name == name })
	}
	settled := without(all, "NeedDaemonReload")
	return [3][]sdbus.Property{all, settled, without(settled, "DropInPaths")}
}

// resultWhileRunning is a running service's Result, not asked for: systemd
// resets a service's result to success when it starts it (service_start,
// for an automatic restart too), and sets any other result only as it
// leaves the running state (service_enter_signal, _stop, _dead and
// _running with a failure all move it on), so while SubState is running
// Result is success. TestSandboxFidelityPipelinedReads compares with
// GetAll.
const resultWhileRunning = "success"

// dropInsFromDisk reports whether a settled unit's DropInPaths are the
// NAME.d/*.conf files vendorFiles found (v.dropIns, in load order): every
// directory of the search path was read, the unit is not an instance of a
// template (whose TEMPLATE@.service.d drop-ins apply too) and has no alias
// (whose drop-ins apply too), and each drop-in is a plain regular file of
// its own name (no link, no masking, no hidden file). A settled unit's
// files and drop-in directories have not changed since systemd last loaded
// it (loadedAsOnDisk), and drop-in directories for a whole type make no
// unit settled. Otherwise systemd is asked (one Get per unit).
func dropInsFromDisk(name string, v vendor) bool {
	return !strings.Contains(name, "@") && !v.aliased && !v.oddDropIns
}

// loadOrder is the order systemd lists drop-ins in (conf_files_list): by
// file name, whichever directory holds it (the names are distinct:
// dropInsFromDisk).
func loadOrder(paths []string) []string {
	if len(paths) == 0 {
		return nil
	}
	out := slices.Clone(paths)
	slices.SortStableFunc(out, func(a, b string) int { return strings.Compare(filepath.Base(a), filepath.Base(b)) })
	return out
}

// readFragments reads the FragmentPath of the loaded units that have no
// file in the unit directory and a reload pending (systemd 252 raises
// NeedDaemonReload for a unit whose fragment it cannot stat any more), and
// sets FileDeleted on those systemd loaded from there: their file was
// deleted since systemd's last load, and the unit still runs the
// definition it read (a daemon-reload since makes such a unit not-found,
// and it is not asked). No other unit is asked (nothing plans from its
// FragmentPath), so on a converged host this costs nothing.
func (o *Observer) readFragments(ctx context.Context, units []*observed.Unit, files map[string]unitFile) []error {
	var ask []*observed.Unit
	for _, u := range units {
		if _, has := files[u.Name]; !has && u.LoadState == "loaded" && u.NeedDaemonReload {
			ask = append(ask, u)
		}
	}
	return o.readProp(ctx, ask, sdbus.Property{Interface: ifaceUnit, Name: "FragmentPath"}, func(u *observed.Unit, r *propReader) {
		u.FragmentPath = r.str("FragmentPath", "")
		if r.err == nil {
			u.FileDeleted = u.FragmentPath != "" && filepath.Clean(filepath.Join(o.cfg.root, u.FragmentPath)) == filepath.Clean(u.Path)
		}
	})
}

// readNeedDaemonReload reads NeedDaemonReload alone, for units whose other
// properties were read.
func (o *Observer) readNeedDaemonReload(ctx context.Context, units []*observed.Unit) []error {
	return o.readProp(ctx, units, sdbus.Property{Interface: ifaceUnit, Name: "NeedDaemonReload"}, func(u *observed.Unit, r *propReader) {
		u.NeedDaemonReload = r.bool("NeedDaemonReload")
	})
}

// readProp reads one property of each of units in one pipelined batch and
// hands each answer to set; an answer that failed, or that set could not
// decode (r.err), is an error naming its unit.
func (o *Observer) readProp(ctx context.Context, units []*observed.Unit, p sdbus.Property, set func(u *observed.Unit, r *propReader)) []error {
	if len(units) == 0 {
		return nil
	}
	qs := make([]sdbus.PropertyQuery, len(units))
	for i, u := range units {
		o.count("GetProperties")
		qs[i] = sdbus.PropertyQuery{Unit: u.Name, Props: []sdbus.Property{p}}
	}
	props, perr, err := o.c.GetUnitPropertiesContext(ctx, qs)
	if err != nil {
		return []error{fmt.Errorf("read %s: %w", p.Name, err)}
	}
	var errs []error
	for i, u := range units {
		if perr[i] != nil {
			errs = append(errs, fmt.Errorf("read properties of %s: %w", u.Name, perr[i]))
			continue
		}
		r := propReader{m: props[i]}
		set(u, &r)
		if r.err != nil {
			errs = append(errs, fmt.Errorf("read properties of %s: %w", u.Name, r.err))
		}
	}
	return errs
}

// loadMargin is how much older than systemd's last unit load a file must
// be to count as loaded: systemd stamps the load (UnitsLoadTimestamp, at
// the start of each daemon-reload, before it reads a file) with the
// precise clock, and the kernel stamps file changes with its coarse clock,
// which lags the precise one by up to one tick. The tick is the coarse
// clock's resolution (clock_getres: 4 ms at HZ=250, 10 ms at HZ=100); the
// margin is two ticks and a millisecond. With no answer, 50 ms.
var loadMargin = coarseMargin()

func coarseMargin() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_REALTIME_COARSE, &ts); err != nil || ts.Nano() <= 0 || ts.Nano() > int64(20*time.Millisecond) {
		return 50 * time.Millisecond
	}
	return 2*time.Duration(ts.Nano()) + time.Millisecond
}

// latestChange is the latest moment a change time t can stand for: on a
// filesystem that keeps whole seconds (ext4 with 128-byte inodes) or two
// (FAT) every time has zero nanoseconds, and the change may have come up
// to that much later. (A finer time that happens to fall on a second costs
// one Get.)
func latestChange(t time.Time) time.Time {
	if t.Nanosecond() == 0 {
		return t.Add(2 * time.Second)
	}
	return t
}

// beforeLoad reports whether a change at t (zero: none) came before
// systemd's last unit load began (loadStart, µs), by more than loadMargin.
// A load time of 0 or later than now (the clock was set back) proves
// nothing.
func beforeLoad(t time.Time, loadStart uint64, now time.Time) bool {
	ls := time.UnixMicro(int64(loadStart))
	return loadStart != 0 && !ls.After(now) && (t.IsZero() || latestChange(t).Before(ls.Add(-loadMargin)))
}

// loadedAsOnDisk reports whether systemd loaded u from the files on disk
// as they are, without asking it (NeedDaemonReload costs PID 1 three
// times any other property: it stats the fragment and scans every drop-in
// directory of the search path). It is so when u is loaded from resil's
// file in the unit directory (nothing earlier in the search path overrides
// it) and that file, every NAME.d drop-in directory of the search path and
// the files in them last changed (ctime: no one can set it back) before
// systemd's last unit load began, loadStart (µs; UnitsLoadTimestamp, set
// at the start of every daemon-reload, measured against the reload's call
// in TestSandboxNeedDaemonReloadFromDisk). A daemon-reload loads every
// unit again, and a unit loaded later reads the same files. systemd's own
// check is the files' mtimes against those it loaded, and the drop-in
// list. Drop-in directories for a whole type or prefix (service.d,
// foo-.service.d) are not looked at per unit: the caller asks systemd
// whenever one exists (typeDropIns); a loaded drop-in from anywhere else
// makes it ask too (loadedElsewhere). A load time later than now (the
// clock was set back) proves nothing.
func loadedAsOnDisk(u *observed.Unit, f unitFile, v vendor, loadStart uint64, now time.Time) bool {
	if u.LoadState != "loaded" || f.data == nil || f.ctime.IsZero() || v.overrides {
		return false
	}
	return beforeLoad(f.ctime, loadStart, now) && beforeLoad(v.dropInsChanged, loadStart, now)
}

// loadedElsewhere reports a drop-in systemd loaded for u that is not one
// of the NAME.d files found on disk (onDisk).
func loadedElsewhere(root string, u *observed.Unit, onDisk []string) bool {
	if len(u.DropInPaths) == 0 {
		return false
	}
	found := make(map[string]bool, len(onDisk))
	for _, p := range onDisk {
		found[canonPath(root, p)] = true
	}
	for _, p := range u.DropInPaths {
		if !found[canonPath(root, p)] {
			return true
		}
	}
	return false
}

// fillUnit copies the properties the planner needs. A property of the wrong
// type is an error; a missing one (Result of a target) stays zero.
func fillUnit(u *observed.Unit, p map[string]any) error {
	r := propReader{m: p}
	u.LoadState = r.str("LoadState", u.LoadState)
	u.ActiveState = r.str("ActiveState", u.ActiveState)
	u.SubState = r.str("SubState", u.SubState)
	// UnitFileState is not read here: Observe reads enablement from disk.
	u.DropInPaths = r.strs("DropInPaths")
	u.NeedDaemonReload = r.bool("NeedDaemonReload")
	readService(&r, u)
	if strings.HasSuffix(u.Name, ".service") && (u.ActiveState == "inactive" || u.ActiveState == "failed") {
		// Read for a service that is not running (serviceProps); kept
		// only while it is inactive or failed, so that a GetAll (which
		// has it always) and the pipelined read (which asks for it only
		// then) agree.
		u.ActiveExitTimestamp = r.u64("ActiveExitTimestamp")
	}
	u.Triggers = r.strs("Triggers")
	if _, ok := p["Job"]; ok { // GetAll; the pipelined read keeps ListUnitsByNames' job
		u.PendingJob = r.jobID("Job") != 0
	}
	u.LastTriggerUSec = r.u64("LastTriggerUSec")
	u.NextElapseUSecRealtime = r.u64("NextElapseUSecRealtime")
	u.NextElapseUSecMonotonic = r.u64("NextElapseUSecMonotonic")
	return r.err
}

// readService reads the result and the main process's figures (the cache
// compares a signal's values with the cached ones through it too).
func readService(r *propReader, u *observed.Unit) {
	u.Result = r.str("Result", "")
	u.NRestarts = r.u32("NRestarts")
	u.MainPID = r.u32("MainPID")
	u.ExecMainStatus = r.i32("ExecMainStatus")
	u.ExecMainStartTimestamp = r.u64("ExecMainStartTimestamp")
	u.ExecMainExitTimestamp = r.u64("ExecMainExitTimestamp")
}

type propReader struct {
	m   map[string]any
	err error
}

func get[T any](r *propReader, k string) (T, bool) {
	var zero T
	v, ok := r.m[k]
	if !ok {
		return zero, false
	}
	if gv, isVariant := v.(godbus.Variant); isVariant {
		v = gv.Value()
	}
	t, ok := v.(T)
	if !ok {
		r.err = errors.Join(r.err, fmt.Errorf("property %s is %T, want %T", k, v, zero))
		return zero, false
	}
	return t, true
}

func (r *propReader) str(k, def string) string {
	if v, ok := get[string](r, k); ok {
		return v
	}
	return def
}

// strs reads a string list; an empty one reads as nil, whichever way it
// was read (GetAll gives every unit an empty Triggers).
func (r *propReader) strs(k string) []string {
	if v, _ := get[[]string](r, k); len(v) > 0 {
		return v
	}
	return nil
}
func (r *propReader) bool(k string) bool  { v, _ := get[bool](r, k); return v }
func (r *propReader) u32(k string) uint32 { v, _ := get[uint32](r, k); return v }
func (r *propReader) i32(k string) int32  { v, _ := get[int32](r, k); return v }

// jobID reads the Unit.Job property, a (uo) struct: the id of the unit's
// pending job, 0 when none.
func (r *propReader) jobID(k string) uint32 {
	v, ok := get[[]any](r, k)
	if !ok || len(v) == 0 {
		return 0
	}
	id, _ := v[0].(uint32)
	return id
}

// u64 reads a microsecond value; systemd's "infinity" (UINT64_MAX, e.g. a
// timer's next elapse while its service runs) reads as 0, "none".
func (r *propReader) u64(k string) uint64 {
	v, _ := get[uint64](r, k)
	if v == math.MaxUint64 {
		return 0
	}
	return v
}

// readStamp fills a timer's StampPath and StampUSec. A missing or
// unreadable stamp reads as none: systemd treats it the same way.
func (o *Observer) readStamp(u *observed.Unit) {
	u.StampPath = filepath.Join(o.cfg.stampDir, "stamp-"+u.Name)
	if fi, err := os.Stat(filepath.Join(o.cfg.root, u.StampPath)); err == nil && fi.Mode().IsRegular() {
		u.StampUSec = uint64(fi.ModTime().UnixMicro())
	}
}

// readDropIns reads the bytes of every drop-in systemd loaded for u and
// returns their modification times, by path. A drop-in removed since
// systemd loaded it is listed but has no bytes.
func (o *Observer) readDropIns(u *observed.Unit) (map[string]time.Time, error) {
	if len(u.DropInPaths) == 0 {
		return nil, nil
	}
	u.DropIns = make(map[string][]byte, len(u.DropInPaths))
	times := make(map[string]time.Time, len(u.DropInPaths))
	var errs *multierror.Error
	for _, p := range u.DropInPaths {
		data, mtime, err := readFile(filepath.Join(o.cfg.root, p))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			errs = multierror.Append(errs, fmt.Errorf("read drop-in of %s: %w", u.Name, err))
		default:
			u.DropIns[p] = data
			times[p] = mtime
		}
	}
	return times, errs.ErrorOrNil()
}

// readFile reads at most maxFileSize bytes of a file and its modification
// time (of the open file, so both describe the same inode); larger files
// are an error, not silently truncated.
func readFile(path string) ([]byte, time.Time, error) {
	data, fi, err := readFileStat(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	return data, fi.ModTime(), nil
}

// readFileStat is readFile with the whole stat of the open file.
func readFileStat(path string) ([]byte, os.FileInfo, error) {
	return filestamp.Read(path, maxFileSize)
}

// changeTime is a file's ctime (the zero time when the system does not
// say). Unlike the mtime, no one can set it back.
func changeTime(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctim.Unix())
	}
	return time.Time{}
}

// unitTypes are systemd's unit type suffixes.
var unitTypes = map[string]bool{
	"service": true, "socket": true, "device": true, "mount": true, "automount": true, "swap": true,
	"target": true, "path": true, "timer": true, "slice": true, "scope": true,
}

// HasUnitSuffix reports whether name ends in a unit type suffix (".service", ".timer", ...).
func HasUnitSuffix(name string) bool {
	i := strings.LastIndexByte(name, '.')
	return i > 0 && unitTypes[name[i+1:]]
}

// Queryable reports whether systemd can be asked about name: a valid unit
// name that is not a template ("x@.service"). Asking ListUnitsByNames about
// an invalid name fails the whole call, so Observe leaves such names out
// and reports them as not-found.
func Queryable(name string) bool {
	if len(name) == 0 || len(name) > 255 || !HasUnitSuffix(name) {
		return false
	}
	prefix := name[:strings.LastIndexByte(name, '.')]
	if at := strings.IndexByte(prefix, '@'); at >= 0 {
		if at == 0 || at == len(prefix)-1 || strings.Count(prefix, "@") > 1 {
			return false
		}
	}
	for _, r := range prefix {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune(":-_.\\@", r):
		default:
			return false
		}
	}
	return true
}

// startTriedSince clears StaleRun of each unit in stale that systemd was
// asked to start after the version of its files (processVersionTime) was
// written: it left the inactive state since (InactiveExitTimestamp: an
// ExecCondition= or ExecStartPre= that failed), or checked its
// Condition*= since (ConditionTimestamp: a false one skips the start and
// leaves the old run's history in place). That start was made, and the
// run it would be is not owed again on every pass. Two Gets per stale
// run, which only a lost start or such a skip leaves.
func (o *Observer) startTriedSince(ctx context.Context, stale []*observed.Unit, files map[string]unitFile, dropInTimes map[string]map[string]time.Time) error {
	if len(stale) == 0 {
		return nil
	}
	qs := make([]sdbus.PropertyQuery, len(stale))
	for i, u := range stale {
		qs[i] = sdbus.PropertyQuery{Unit: u.Name, Props: []sdbus.Property{
			{Interface: ifaceUnit, Name: "InactiveExitTimestamp"}, {Interface: ifaceUnit, Name: "ConditionTimestamp"}}}
	}
	o.count("Get start tried")
	props, perrs, err := o.c.GetUnitPropertiesContext(ctx, qs)
	if err != nil {
		return fmt.Errorf("read start times: %w", err)
	}
	var errs *multierror.Error
	for i, u := range stale {
		if i < len(perrs) && perrs[i] != nil {
			errs = multierror.Append(errs, fmt.Errorf("read start times of %s: %w", u.Name, perrs[i]))
			continue
		}
		if i >= len(props) {
			continue
		}
		r := propReader{m: props[i]}
		m, _ := processVersionTime(u, files[u.Name].mtime, dropInTimes[u.Name])
		if tried := max(r.u64("InactiveExitTimestamp"), r.u64("ConditionTimestamp")); tried != 0 && int64(tried) >= m {
			u.StaleRun = false
		}
	}
	return errs.ErrorOrNil()
}
