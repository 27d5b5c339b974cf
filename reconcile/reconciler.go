package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/atomicfile"
	"resil.dev/resil/internal/par"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile/health"
)

// Observer reads the backend's state for the named units (and every owned
// unit it finds). Declared here, by its consumer.
type Observer interface {
	Observe(ctx context.Context, names []string) (*observed.State, error)
}

// Applier executes one step idempotently.
type Applier interface {
	Apply(ctx context.Context, s actuators.Step) (actuators.Result, error)
}

// Renderer renders an object into the backend's files. It must be safe
// for concurrent use: a pass renders its objects on renderWorkers
// goroutines.
type Renderer func(*desired.Object) ([]desired.UnitFile, error)

// renderWorkers bounds the goroutines rendering a pass's objects.
const renderWorkers = 4

// rendered is what the Renderer returned for an object.
type rendered struct {
	files []desired.UnitFile
	err   error
}

// Config wires a Reconciler.
type Config struct {
	Manifests string
	Load      desired.Options
	// ManifestSeq (nil: none) counts the manifest watcher's events
	// (desired.Watch's changed): a LoadAhead is used only while it has
	// not moved.
	ManifestSeq func() uint64
	UnitDir     string
	ManagerDir  string
	Render      Renderer
	// Classify says whether a rewritten unit file needs a restart (nil:
	// ClassifyUnitChange, for systemd unit files).
	Classify Classifier
	// MarkProcessSince: see Input.MarkProcessSince (systemd backend).
	MarkProcessSince bool
	// RestartJournal keeps the restart journal in Safety.StateDir
	// (restart_journal.go; systemd backend).
	RestartJournal bool
	// RunMemory keeps the run memory in Safety.StateDir (runs.go; systemd
	// backend).
	RunMemory bool
	Observer  Observer
	Applier   Applier
	Events    Recorder
	Log       *zap.Logger
	// Now is the clock (tests inject one).
	Now func() time.Time
	// BackoffBase and BackoffMax bound the retry delay of a failing object.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// Parallel bounds how many units' runtime steps (start, restart, stop,
	// enable...) run at once; default 8, 1 for strictly serial. Above 1, a
	// BatchApplier runs the first steps of every unit in batches (see
	// execution.batches), which this bound does not limit.
	Parallel int
	// AfterStep is a test hook: if set, it is called after each step that
	// ran (skipped steps excluded), with the step's index in the plan, once
	// its outcome and event are recorded. Runtime steps run on several
	// workers, so it must be safe for concurrent use. The torture suite's
	// deterministic crash mode uses it (cmd/reconciler wires it from
	// RESIL_TEST_CRASH_AFTER_STEP) to kill the agent right after step k.
	AfterStep func(index int, s actuators.Step)
	// LastGood persists the last good desired objects, so an agent
	// restarted after a crash keeps in force what it kept before (New
	// loads them, each applying pass saves them before its first step).
	// Nil keeps them in memory only.
	LastGood LastGoodStore
	// Safety: pause leases, the mass-prune guard, delayed prune (safety.go).
	Safety Safety
	// Health returns the agent's probe statuses for each pass's plan
	// (Input.Health); nil: no probes run (apply, diff).
	Health func() []health.Status
	// MaxParallelRestarts, RolloutReadyTimeout: see Input.
	MaxParallelRestarts int
	RolloutReadyTimeout time.Duration
	// Rollout: --min-ready and --rollout-jitter (rollout_state.go).
	Rollout RolloutConfig
	// PruneQuiet (run's --prune-quiet; 0: off, apply's) keeps an object
	// that the file it came from declares no more while that file, still
	// there, changed less than this long ago: a file written in steps (a
	// script appending documents one by one, a copy in progress) holds
	// only some of its documents for a moment, and what it does not hold
	// yet must not be pruned and started again. Once the file has been
	// quiet that long, the object is pruned. A removed file is not waited
	// for (its removal is one step).
	PruneQuiet time.Duration
}

// Reconciler runs passes. It is not safe for concurrent passes; the Loop
// runs one at a time.
type Reconciler struct {
	cfg      Config
	log      *zap.Logger
	lastGood map[string]*desired.Object
	// quietSince: when each object Config.PruneQuiet keeps was first kept
	// (quietLeft); an object not kept by the last load has no entry.
	quietSince map[string]time.Time
	// held: the objects the last pass that acted held back (its
	// LastGoodRetained findings), true for those it held with a last good
	// version: one released since gets a ManifestValid event ("valid
	// again", or, never valid before, "valid now").
	held map[string]bool
	// lastGoodPending: Config.LastGood is not loaded yet (lastgood_lazy.go).
	lastGoodPending bool
	failures        map[string]*backoff
	pass            uint64
	// pending are the prune deadlines (delayed prune), persisted in the
	// state dir.
	pending map[string]time.Time
	// pruneHeld are the objects a blocked prune holds until it is
	// confirmed (SafetyInput.PruneHeld), persisted in the state dir.
	pruneHeld map[string]time.Time
	// rolloutGate is the jitter gate before the next wave (zero: none);
	// rolloutRec the rollout record (rollout_state.go).
	rolloutGate time.Time
	rolloutRec  RolloutRecord
	// rolloutRefused: why the rollout record on disk was refused ("":
	// trusted or absent); see RolloutInput.Distrusted.
	rolloutRefused string
	// rolloutRecent are services restarted by a wave that needed no
	// rollout record (everything fit), until they are ready.
	rolloutRecent []string
	// journal is the restart journal as last read or written.
	journal map[string]time.Time
	// runs is the run memory as last read or written, boot the boot's ID
	// ("" without a run memory).
	runs map[string]runRecord
	boot string
	// runsUnsaved: runs differs from the file (its write failed).
	runsUnsaved bool
	// rendered is the last pass's Renderer output by object: the loader's
	// cache returns the same *Object for a file that did not change.
	rendered map[*desired.Object]rendered
	// loaded is what the last pass's desiredObjects returned, for a pass
	// with Options.SameDesired.
	loaded *loadedDesired
	// loadsAhead counts the passes that used a LoadAhead (tests).
	loadsAhead int
	// conditions are the conditions the last pass saw, by event key, and
	// condNext those this pass has seen so far (see condition): a finding
	// (a unit failed, a file edited, a pause) or a load problem (an
	// invalid manifest, a last good version retained) is recorded as an
	// event at its onset only. The same one in the next pass is the same
	// condition, not a new occurrence: recorded again it would raise the
	// event's count and last-seen time on every pass (a failure minutes
	// old reading "0s ago", COUNT 700) and log it again. Each maps to
	// when it was last recorded: one that lasts is recorded again every
	// conditionRefresh, so the event store's retention (by last seen)
	// does not drop a condition still in force.
	conditions, condNext map[string]time.Time
}

// conditionRefresh is how often a lasting condition is recorded again.
const conditionRefresh = 24 * time.Hour

// loadedDesired is desiredObjects' result (kept for Options.SameDesired):
// the effective objects, the IDs that must not be pruned, the files whose
// owned units must not be pruned, whether pruning is allowed at all, a
// ManifestBusy finding per file open for writing and a FolderNotRead one
// per subfolder that is not read (busy), and the load problems.
type loadedDesired struct {
	objs              []*desired.Object
	protected, broken map[string]bool
	// stateChanged: objects whose state or enabled changed since the
	// last good version (see Input.StateChanged).
	stateChanged map[string]bool
	prune        bool
	busy         []Finding
	// busyFiles: the files of the ManifestBusy findings (Result.Busy).
	busyFiles []string
	// held: a LastGoodRetained finding per object kept at its last good
	// version (or, with none, left as it is on the host) because its
	// manifest is broken, busy or empty; Classify reads them as Invalid.
	held []Finding
	// neverValid: the held objects with no last good version.
	neverValid map[string]bool
	// quiet: a PrunePending finding per object kept by Config.PruneQuiet;
	// quietWake: when the first of them may be pruned (0: none kept).
	quiet     []Finding
	quietWake time.Duration
	err       error
}

type backoff struct {
	count int
	next  time.Time
}

// New returns a Reconciler.
func New(cfg Config) *Reconciler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Events == nil {
		cfg.Events = NewRing(1024, cfg.Log)
	}
	if cfg.Render == nil {
		cfg.Render = desired.Render
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 2 * time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Minute
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	r := &Reconciler{cfg: cfg, log: cfg.Log.Named("reconcile"), lastGood: map[string]*desired.Object{}, failures: map[string]*backoff{}}
	if cfg.Safety.StateDir != "" && !cfg.Safety.ReadOnly {
		// The agent holds the state dir's lock: its own files' temporary
		// files are a killed agent's.
		atomicfile.RemoveTemps(cfg.Safety.StateDir, PrunePendingFileName, PruneHeldFileName, RolloutFileName, RestartJournalFileName, RunMemoryFileName)
	}
	r.loadPending()
	r.loadRollout()
	r.loadRestartJournal()
	r.loadRunMemory()
	r.lastGoodPending = cfg.LastGood != nil // loaded by the first pass that needs it (lastgood_lazy.go)
	return r
}

// StepOutcome is what happened to one planned step.
type StepOutcome struct {
	Step   actuators.Step
	Result actuators.Result
	Err    error
	// Skipped says why the step was not run ("" when it ran).
	Skipped string
	// Duration is how long Apply took (0 when skipped).
	Duration time.Duration
}

// Result of one pass.
type Result struct {
	Plan     Plan
	Hash     string
	Outcomes []StepOutcome
	// LoadErr holds the manifest problems of this pass (objects kept their last good version).
	LoadErr error
	// Busy are the manifest files (and drop-ins) open for writing this
	// pass, sorted paths: not read (a ManifestBusy finding each); what
	// they held keeps its last good version.
	Busy []string
	// Objects is the number of effective desired objects.
	Objects int
	// Desired are the effective desired objects (last good versions
	// included), sorted by ID; status snapshots and alerts read them.
	Desired []*desired.Object
	// Started is when the pass began and Took how long it ran.
	Started time.Time
	Took    time.Duration
	// Observed is the state the plan was computed from.
	Observed *observed.State
	// RequeueAfter asks for another pass (a held-back object's backoff ends).
	RequeueAfter time.Duration
	// Health are the probe statuses the plan was computed from.
	Health []health.Status
	// RestartPending is the restart journal as the pass read it (Input's):
	// restarts an earlier pass, maybe of an agent since killed, made or
	// owes. The ledger counts a restart of such a service, after its
	// record, as the agent's.
	RestartPending map[string]time.Time
	// Unsupported are the desired objects the backend cannot honour
	// (their render refused: actuators.ErrUnsupported): not in Desired,
	// nothing applied for them, what runs of them left alone; Classify
	// reports them Invalid (they count as an invalid manifest here).
	Unsupported []*desired.Object
	// After is what this pass's steps left: a dry-run pass on the same
	// manifests made right after them (Loop.AfterSteps), when a step
	// changed something; nil otherwise. The restart ledger counts the
	// agent's own restarts from it at once, and the status snapshot shows
	// it instead of the state from before the steps.
	After *Result
}

// Changed reports whether a step of the pass ran and changed the host.
func (r Result) Changed() bool {
	for _, o := range r.Outcomes {
		if o.Skipped == "" && o.Err == nil && o.Result == actuators.Changed {
			return true
		}
	}
	return false
}

// Failed counts steps that ran and failed.
func (r Result) Failed() int {
	n := 0
	for _, o := range r.Outcomes {
		if o.Err != nil {
			n++
		}
	}
	return n
}

// ErrExpectPlan is returned when apply --expect-plan does not match.
var ErrExpectPlan = errors.New("plan differs from the reviewed plan")

// Options of one pass.
type Options struct {
	// DryRun computes the plan and applies nothing (diff).
	DryRun bool
	// Quiet (with DryRun) records no events for the plan's findings: an
	// observation for `status` right after a pass that recorded them.
	Quiet bool
	// ExpectPlan refuses to act unless the plan hash equals it.
	ExpectPlan string
	// AllowPrune lets a prune of at most this many objects through the
	// mass-prune guard (apply --allow-prune N).
	AllowPrune int
	// Full asks a FullObserver for a full read (the loop's resync).
	Full bool
	// Prefetched is the backend's state read while the command opened
	// and the manifests loaded: every unit the backend finds owned, read
	// without waiting for the desired names (StartPrefetch). A one-shot
	// command (apply, diff) sets it; the pass uses it when it covers every
	// desired unit, and observes again with the desired names otherwise.
	Prefetched *Prefetched
	// Overlap (the agent's passes on the systemd backend; not with Full):
	// with no Prefetched, the pass starts one itself, reading the
	// backend's state while it loads and renders the manifests, and
	// observes again (from the watch-fed cache, as any pass) only when
	// that read does not cover a desired unit. At 1000 units a pass after
	// an edit spends about 10 ms loading and rendering and 15 ms
	// observing, one after the other without it.
	Overlap bool
	// Ahead (the agent's passes woken by a change; not with Full): the
	// read the loop started before its settle delay. The pass uses it
	// instead of observing when nothing changed since it began (see
	// Ahead); the caller waits for it.
	Ahead *Ahead
	// LoadAhead (the agent's passes woken by a change): the manifests
	// loaded before the settle delay, used when no manifest event came
	// since (see LoadAhead); the caller waits for it.
	LoadAhead *LoadAhead
	// SameDesired (with DryRun) plans against the manifests the previous
	// pass loaded, not loading them again: apply's status read after its
	// steps, which shows what that pass's steps left (a manifest edited
	// meanwhile is the next pass's).
	SameDesired bool
}

// Reconcile runs one pass: load → observe → plan → (apply). It returns an
// error only when the pass could not plan (nothing readable, observe
// failed) or, after applying, a multierror of failed steps.
func (r *Reconciler) Reconcile(ctx context.Context, opts Options) (res Result, err error) {
	r.pass++
	log := r.log.With(zap.Uint64("pass", r.pass))
	res.Started = time.Now()
	r.condNext = map[string]time.Time{}
	defer func() {
		if !opts.Quiet || !opts.DryRun {
			r.conditions = r.condNext
		}
		r.condNext = nil
		res.Took = time.Since(res.Started)
		if p := recover(); p != nil {
			err = fmt.Errorf("reconcile pass %d panicked: %v", r.pass, p)
			log.Error("pass panicked", zap.Any("panic", p), zap.Stack("stack"))
		}
	}()
	pre := opts.Prefetched
	switch {
	case opts.Ahead != nil && opts.Full:
		// Not used; ended before the full read, which must not race it
		// over the cache's marks.
		opts.Ahead.Wait()
	case opts.Ahead != nil:
		pre = opts.Ahead.take(ctx)
		log.Debug("observation read ahead", zap.Bool("used", pre != nil))
	}
	if pre == nil && opts.Overlap && !opts.Full {
		pre = StartPrefetch(ctx, r.cfg.Observer)
		defer pre.Wait()
	}
	d := r.loaded
	if !opts.SameDesired || !opts.DryRun || d == nil {
		d = r.desiredObjects(log, opts.LoadAhead)
		r.loaded = d
	}
	objs, broken, prune, busy, lerr := d.objs, d.broken, d.prune, d.busy, d.err
	protected := maps.Clone(d.protected) // the pass adds to it; d stays as loaded
	res.LoadErr = lerr
	res.Busy = d.busyFiles
	lastGoodSaved := func() {}
	if r.cfg.LastGood != nil && !opts.DryRun {
		// Done before any step (lastGoodSaved): a kill -9 after a step
		// leaves a restarted agent the memory this pass acted on. It is
		// written while the pass renders and observes (1000 objects: 5-8 ms).
		lg := make([]*desired.Object, 0, len(r.lastGood))
		for _, o := range r.lastGood {
			lg = append(lg, o)
		}
		sortObjects(lg)
		saved := make(chan struct{})
		go func() {
			defer close(saved)
			if err := r.cfg.LastGood.Save(lg); err != nil {
				log.Warn("last good objects not persisted", zap.Error(err))
			}
		}()
		lastGoodSaved = func() { <-saved }
		defer lastGoodSaved()
	}
	if objs == nil && !prune && lerr != nil && len(r.lastGood) == 0 && errors.Is(lerr, desired.ErrUnreadable) {
		return res, fmt.Errorf("load manifests: %w", lerr)
	}
	files := map[string][]desired.UnitFile{}
	var names []string
	var effective []*desired.Object
	var unsupported []Finding
	// Renderers are pure (same object, same files): an object the last
	// pass rendered (the loader's cache hands back the same *Object for an
	// unchanged file) keeps its files; the others render on a few
	// goroutines (1000 objects: 12-15 ms a pass on one). Results are taken
	// in order.
	out := make([]rendered, len(objs))
	memo := r.rendered
	par.For(len(objs), renderWorkers, 64, func(i int) {
		if m, ok := memo[objs[i]]; ok {
			out[i] = m
			return
		}
		out[i].files, out[i].err = r.cfg.Render(objs[i])
	})
	r.rendered = make(map[*desired.Object]rendered, len(objs))
	for i, o := range objs {
		r.rendered[o] = out[i]
	}
	for i, o := range objs {
		fs, err := out[i].files, out[i].err
		if errors.Is(err, actuators.ErrUnsupported) {
			// The backend cannot honour it: never applied with less than it
			// asks; what runs of it (a last good version) is left alone.
			// It counts as invalid on this backend (diff exits 2, apply 1).
			unsupported = append(unsupported, Finding{Object: o.ID(), Reason: ReasonUnsupported, Message: err.Error() + "; not applied", Warning: true})
			res.Unsupported = append(res.Unsupported, o)
			res.LoadErr = errors.Join(res.LoadErr, refusalErrors(r.cfg.Manifests, o, err))
			protected[o.ID()] = true
			continue
		}
		if err != nil {
			r.condition(Warning, ReasonInvalid, o.ID(), "", fmt.Sprintf("render: %v", err), "")
			protected[o.ID()] = true
			continue
		}
		files[o.ID()] = fs
		effective = append(effective, o)
		for _, f := range fs {
			if f.Dir == desired.DirUnit {
				names = append(names, f.Name)
			}
		}
	}
	sort.Strings(names)
	res.Objects = len(effective)
	res.Desired = effective
	obs, ok := pre.covering(names)
	switch {
	case ok && !opts.Full:
	case opts.Prefetched != nil && !opts.Full:
		// Read again, in full: the prefetch may have filled a watch-fed
		// cache, and a one-shot command reads everything.
		obs, err = r.observeAgain(ctx, names)
	default:
		obs, err = r.observe(ctx, names, opts.Full)
	}
	if err != nil {
		return res, fmt.Errorf("observe: %w", err)
	}
	var runCands map[string]runCand
	if r.boot != "" {
		runCands = runCandidates(effective, files)
		obs = rememberRuns(obs, runCands, r.runs, r.boot)
	}
	res.Observed = obs
	res.Health = r.probeStatuses()
	safety, expired := r.safetyInput(log, opts, r.cfg.Now())
	in := Input{Objects: effective, Files: files, UnitDir: r.cfg.UnitDir, ManagerDir: r.cfg.ManagerDir,
		Observed: obs, Prune: prune, Protected: protected, BrokenFiles: broken, StateChanged: d.stateChanged, Classify: r.cfg.Classify,
		MarkProcessSince: r.cfg.MarkProcessSince, Health: res.Health, MaxParallelRestarts: r.cfg.MaxParallelRestarts,
		RolloutReadyTimeout: r.cfg.RolloutReadyTimeout, Rollout: r.rolloutInput(log), SafetyInput: safety,
		RestartPending: r.restartPending()}
	res.RestartPending = in.RestartPending
	plan := Compute(in)
	if !opts.DryRun && r.armJitter(plan, safety.Now) {
		in.Rollout.HoldUntil = r.rolloutGate
		plan = Compute(in)
	}
	plan.Findings = slices.Concat(plan.Findings, d.held, d.quiet, busy, unsupported)
	res.Plan = plan
	res.Hash = plan.Hash()
	if !opts.Quiet || !opts.DryRun {
		r.recordFindings(plan.Findings)
	}
	if !opts.DryRun && d.prune { // not when the manifests could not be read at all
		r.noteReleased(d.held, d.neverValid, effective)
	}
	if opts.DryRun {
		log.Debug("planned", zap.Int("steps", len(plan.Steps)), zap.String("hash", res.Hash))
		return res, nil
	}
	if opts.ExpectPlan != "" && opts.ExpectPlan != res.Hash {
		return res, fmt.Errorf("%w: reviewed %s, now %s", ErrExpectPlan, opts.ExpectPlan, res.Hash)
	}
	r.afterPlan(log, safety, expired, plan)
	r.afterRollout(log, plan, safety.Now)
	defer func() {
		res.RequeueAfter = busyWake(r.rolloutWake(wakeAfter(res.RequeueAfter, safety, plan.SafetyReport), plan, safety.Now), d.busy)
		if d.quietWake > 0 && (res.RequeueAfter == 0 || d.quietWake < res.RequeueAfter) {
			res.RequeueAfter = d.quietWake // Config.PruneQuiet: prune once the file is quiet
		}
	}()
	if len(plan.Steps) == 0 {
		log.Debug("converged", zap.Int("objects", res.Objects))
	}
	lastGoodSaved()
	r.saveRestartJournal(log, r.journalBefore(plan))
	res.Outcomes, res.RequeueAfter, err = r.execute(ctx, log, plan)
	r.saveRestartJournal(log, journalAfter(r.journal, obs, plan.RestartIntents, plan.StartsOwed, res.Outcomes))
	if r.boot != "" {
		r.saveRunMemory(log, runsAfter(r.runs, obs, runCands, res.Outcomes, r.boot, usec(r.cfg.Now())))
	}
	res.RequeueAfter = requeueForRollout(plan, res.Outcomes, res.RequeueAfter)
	if err == nil {
		r.finishRolloutUnpaced(log, res.Outcomes, r.cfg.Now())
	}
	return res, err
}

// desiredObjects loads the manifests (or takes la's load, see LoadAhead)
// and applies the last-good rule (loadedDesired says what it returns).
//
// The rule: an object keeps its last good version while the file it came
// from, or one of its drop-ins, is broken, busy (open for writing) or
// empty (no documents). The last good versions survive an agent restart
// through Config.LastGood. Such an object that has no last good version
// (the agent never saw it valid, or has no store) is neither applied nor
// pruned: what is on the host stays. An object disappears only when its file is removed, or it
// is removed from a file that still holds other objects.
func (r *Reconciler) desiredObjects(log *zap.Logger, la *LoadAhead) *loadedDesired {
	protected := map[string]bool{}
	broken := map[string]bool{}
	set, lerr := r.load(la)
	r.loadLastGood(set)
	if set == nil {
		// Nothing readable: keep every last good object, prune nothing.
		r.condition(Warning, ReasonInvalid, "", "", fmt.Sprintf("manifests unreadable, keeping the last good state: %v", lerr), "")
		var objs []*desired.Object
		for id, o := range r.lastGood {
			objs = append(objs, o)
			protected[id] = true
		}
		sortObjects(objs)
		// No finding per object: one condition says it (a symlink swap
		// racing the load reads so for a moment, and every object's event
		// each time would flood the store); resil_invalid_manifests and
		// status's load error show it.
		return &loadedDesired{objs: objs, protected: protected, broken: broken, prune: false, err: lerr}
	}
	for f := range set.Broken {
		broken[f] = true
	}
	// Busy and empty files protect what they held exactly as broken ones
	// do. An empty file is invalid: it joins the load problems.
	var busy []Finding
	var busyFiles []string
	for _, f := range sortedKeys(set.Busy) {
		broken[f] = true
		busyFiles = append(busyFiles, filepath.Join(set.Dir, f))
		by := ""
		if set.BusyBy[f] != "" {
			by = " by " + set.BusyBy[f]
		}
		busy = append(busy, Finding{Reason: ReasonBusy, Warning: true,
			Message: fmt.Sprintf("%q is open for writing%s; it is read once the writer closes it (what it holds keeps its last good version)", filepath.Join(set.Dir, f), by)})
	}
	for _, d := range set.NotRead {
		busy = append(busy, Finding{Reason: ReasonFolderNotRead, Warning: true,
			Message: fmt.Sprintf("%q is a folder, not read: manifests are read from the top level of %s only (NAME.d/ holds the drop-ins of NAME; a folder whose name starts with \".\" is skipped quietly)", filepath.Join(set.Dir, d)+"/", set.Dir)})
	}
	if len(set.Empty) > 0 {
		all := &multierror.Error{ErrorFormat: joinLines}
		if lerr != nil {
			all.Errors = append(all.Errors, lerr)
		}
		for _, f := range sortedKeys(set.Empty) {
			broken[f] = true
			all.Errors = append(all.Errors, &desired.FieldError{File: filepath.Join(set.Dir, f),
				Detail: `holds no objects (empty, only comments or only "---"); what it held keeps its last good version: delete the file to remove its objects`})
		}
		lerr = all
	}
	for _, fe := range desired.FieldErrors(lerr) {
		r.condition(Warning, ReasonInvalid, "", "", fe.Error(), "")
	}
	// An object whose drop-in is broken (unreadable), busy or empty is not
	// applied without it: its last good version stays, or, with none, what
	// is on the host.
	var objs []*desired.Object
	var held []Finding
	neverValid := map[string]bool{}
	seen := map[string]bool{}
	for _, o := range set.Sorted() {
		seen[o.ID()] = true
		file, busy := set.Unsettled(o)
		if file == "" && !set.IsBroken(o) {
			objs = append(objs, o)
			continue
		}
		protected[o.ID()] = true
		why := "a drop-in of it is invalid"
		switch _, fileBroken := set.Broken[o.Source.File]; {
		case file != "":
			why = holdReason(file, busy)
		case fileBroken && !set.BrokenNames[o.Metadata.Name]:
			// Another document of its file is invalid: the file may be
			// half edited, so none of it is applied yet.
			why = o.Source.File + " has an invalid document"
		case set.DeclaredInvalid[o.Metadata.Name] != "" && set.DeclaredInvalid[o.Metadata.Name] != o.Source.File:
			// Another manifest declares its name and is invalid (a file
			// half edited, or an old copy): which one is meant is not
			// known until it is fixed or removed.
			why = set.DeclaredInvalid[o.Metadata.Name] + " declares it too and is invalid"
		}
		if lg := r.lastGood[o.ID()]; lg != nil {
			objs = append(objs, lg)
			held = append(held, retained(o.ID(), why+"; the last good version stays in force"))
		} else {
			held = append(held, retained(o.ID(), why+"; it is not applied, and what is on the host stays"))
			neverValid[o.ID()] = true
		}
	}
	var quietWake time.Duration
	var quiet []Finding
	quietHeld := map[string]bool{}
	for id, o := range r.lastGood {
		if seen[id] {
			continue
		}
		if _, moved := set.NotSelected[id]; moved {
			continue
		}
		if wait := r.quietLeft(set, o); wait > 0 && !set.IsBroken(o) {
			objs = append(objs, o)
			protected[id] = true
			quiet = append(quiet, Finding{Object: id, Reason: ReasonPrunePending, Message: fmt.Sprintf("%s declares it no more and changed less than %s ago: kept at its last version until the file has been unchanged that long (--prune-quiet: a file written in steps may not hold all its documents yet), then pruned",
				o.Source.File, r.cfg.PruneQuiet)})
			if quietWake == 0 || wait < quietWake {
				quietWake = wait
			}
			quietHeld[id] = true
			continue
		}
		if set.IsBroken(o) {
			objs = append(objs, o)
			protected[id] = true
			why := fmt.Sprintf("%s is invalid", o.Source.File)
			if _, fileBroken := set.Broken[o.Source.File]; !fileBroken {
				// Its file declares it no more (or is gone): what holds it
				// is a document of another file that declares it and is
				// invalid (it moved there), or a drop-in of its name, say
				// one left behind when the manifest was removed.
				switch f := set.DeclaredInvalid[o.Metadata.Name]; {
				case f != "":
					why = fmt.Sprintf("%s declares it now and is invalid", f)
				case dropInDir(set.Dir, o.Metadata.Name):
					why = fmt.Sprintf("a drop-in of %q in %s.d/ is invalid, or left without a manifest declaring it (fix it, or remove it to prune the object)", o.Metadata.Name, o.Metadata.Name)
				default:
					why = fmt.Sprintf("no valid manifest declares it now (%s declares it no more) and some manifest of its name is invalid", o.Source.File)
				}
			}
			if file, busy := set.Unsettled(o); file != "" {
				why = holdReason(file, busy)
			}
			held = append(held, retained(id, why+"; the last good version stays in force"))
		}
	}
	for id := range r.quietSince {
		if !quietHeld[id] {
			delete(r.quietSince, id)
		}
	}
	// An object decoded but invalid that has no last good version (never
	// seen valid, or an agent that never saw it): nothing of it is applied,
	// but status and diff name it.
	for _, id := range slices.Sorted(maps.Keys(set.Invalid)) {
		if seen[id] || r.lastGood[id] != nil {
			continue
		}
		seen[id] = true
		held = append(held, retained(id, set.Invalid[id]+" is invalid; it is not applied, and what is on the host stays"))
		neverValid[id] = true
	}
	// Names whose defining file is broken but that never had a good version
	// still must not be pruned if some owned unit carries them; the same
	// for names with a busy or empty drop-in.
	names := map[string]bool{}
	for name := range set.BrokenNames {
		names[name] = true
	}
	for _, m := range []map[string]bool{set.Busy, set.Empty} {
		for f := range m {
			if n := desired.DropInName(f); n != "" {
				names[n] = true
			}
		}
	}
	for name := range names {
		for _, k := range desired.Kinds() {
			protected[string(k)+"/"+name] = true
		}
	}
	// Objects from files that are broken as a whole (parse errors), busy or
	// empty cannot be named; protect what those files owned last time.
	for id, o := range r.lastGood {
		if broken[o.Source.File] {
			protected[id] = true
		}
	}
	sortObjects(objs)
	next := map[string]*desired.Object{}
	var stateChanged map[string]bool
	for _, o := range objs {
		next[o.ID()] = o
		if prev := r.lastGood[o.ID()]; prev != nil && runState(prev) != runState(o) {
			if stateChanged == nil {
				stateChanged = map[string]bool{}
			}
			stateChanged[o.ID()] = true
		}
	}
	r.lastGood = next
	if lerr != nil {
		log.Warn("manifests have errors", zap.Int("broken_files", len(set.Broken)), zap.Int("empty_files", len(set.Empty)), zap.Error(lerr))
	}
	sort.SliceStable(held, func(i, j int) bool { return held[i].Object < held[j].Object })
	return &loadedDesired{objs: objs, protected: protected, broken: broken, stateChanged: stateChanged, prune: true, busy: busy, busyFiles: busyFiles, held: held, neverValid: neverValid, quiet: quiet, quietWake: quietWake, err: lerr}
}

// quietLeft is how long o, which its file declares no more, is still kept
// by Config.PruneQuiet: the rest of the quiet period of that file when it
// is still there and changed less than PruneQuiet ago (a change time in
// the future, a clock stepped back, counts from the first hold: one
// period); 0 otherwise. An object is kept so at most
// pruneQuietMaxHolds quiet periods in a row: a file whose change time
// keeps moving (chmod or touch by configuration management more often
// than PruneQuiet) does not hold it forever.
func (r *Reconciler) quietLeft(set *desired.Set, o *desired.Object) time.Duration {
	if r.cfg.PruneQuiet <= 0 {
		return 0
	}
	changed, ok := set.Changed[o.Source.File]
	if !ok {
		return 0 // removed (or not readable: broken, which keeps it anyway)
	}
	now := r.cfg.Now()
	since, held := r.quietSince[o.ID()]
	if !held {
		since = now
	}
	left := r.cfg.PruneQuiet - now.Sub(changed)
	if changed.After(now) {
		// A change time in the future (the clock set back) tells nothing
		// of when the file settles: one period from the first hold.
		left = r.cfg.PruneQuiet - now.Sub(since)
	}
	if left <= 0 || now.Sub(since) >= pruneQuietMaxHolds*r.cfg.PruneQuiet {
		return 0
	}
	if !held {
		if r.quietSince == nil {
			r.quietSince = map[string]time.Time{}
		}
		r.quietSince[o.ID()] = now
	}
	return left
}

// pruneQuietMaxHolds bounds how many quiet periods an object is kept for
// (quietLeft).
const pruneQuietMaxHolds = 5

// refusalErrors is a backend's refusal of o as load errors, one per
// refused field at the line that sets it (desired.Locate reads o's files
// again from dir for the positions: only for a refused object), or err
// with o's file named when the backend names no field.
func refusalErrors(dir string, o *desired.Object, err error) error {
	rs := actuators.Refusals(err)
	if len(rs) == 0 {
		return &refusedError{&desired.FieldError{File: filepath.Join(dir, o.Source.File), Detail: err.Error()}, err}
	}
	errs := make([]error, len(rs))
	for i, x := range rs {
		errs[i] = desired.Locate(dir, o, x.Field, "this backend cannot honour it: "+x.Reason)
	}
	return &refusedError{errors.Join(errs...), err}
}

// refusedError reads as the positioned errors of a refusal (fields) and
// still is the refusal (errors.Is ErrUnsupported); desired.FieldErrors
// finds the positioned ones.
type refusedError struct{ fields, err error }

func (e *refusedError) Error() string   { return e.fields.Error() }
func (e *refusedError) Unwrap() []error { return []error{e.fields, e.err} }

// busyRecheck is how soon a pass follows one that found a manifest open
// for writing. A writer that closes the file without writing to it (a
// shell's `7>>web.yaml`, an editor that saves nothing) makes no event the
// watch sees (fsnotify does not report IN_CLOSE_WRITE, see desired.Watch),
// so without it the objects of that file would stay held (Invalid) until
// the resync. A pass whose manifests are unchanged reads from the caches:
// a few ms a second while a file stays open.
const busyRecheck = time.Second

// busyWake returns requeue, or busyRecheck when that is sooner and a
// ManifestBusy finding says a file was open for writing.
func busyWake(requeue time.Duration, busy []Finding) time.Duration {
	for _, f := range busy {
		if f.Reason == ReasonBusy && (requeue == 0 || busyRecheck < requeue) {
			return busyRecheck
		}
	}
	return requeue
}

// retained is the LastGoodRetained finding of an object held back.
func retained(id, why string) Finding {
	return Finding{Object: id, Reason: ReasonLastGoodRetained, Message: why, Warning: true}
}

// runState is what an object says about running and enablement, which its
// unit file does not carry: state and enabled.
func runState(o *desired.Object) string {
	switch {
	case o.Service != nil:
		return fmt.Sprintf("%s %v", o.Service.DesiredState(), o.Service.IsEnabled())
	case o.Timer != nil:
		return fmt.Sprintf("%v", o.Timer.IsEnabled())
	}
	return ""
}

// holdReason says why an object's file keeps it at its last good version.
func holdReason(file string, busy bool) string {
	if busy {
		return fmt.Sprintf("%q is open for writing", file)
	}
	return fmt.Sprintf("%q holds no objects", file)
}

func joinLines(es []error) string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortObjects(objs []*desired.Object) {
	sort.Slice(objs, func(i, j int) bool { return objs[i].ID() < objs[j].ID() })
}

// noteReleased records ManifestValid for each object the previous pass
// held back that this one applies from its manifest again (still desired,
// no longer held): the LastGoodRetained it showed is over, and status's
// LAST EVENT says so even when the fix changed nothing to apply.
func (r *Reconciler) noteReleased(held []Finding, neverValid map[string]bool, effective []*desired.Object) {
	now := make(map[string]bool, len(held))
	for _, f := range held {
		now[f.Object] = !neverValid[f.Object]
	}
	if len(r.held) > 0 {
		for _, o := range effective {
			hadGood, was := r.held[o.ID()]
			if _, still := now[o.ID()]; !was || still {
				continue
			}
			msg := "its manifest is valid again: the version it declares is in force"
			if !hadGood {
				msg = "its manifest is valid now: the version it declares is applied"
			}
			r.event(Normal, ReasonManifestValid, o.ID(), "", "", msg)
		}
	}
	r.held = now
}

// recordFindings records each finding as a condition (see condition).
func (r *Reconciler) recordFindings(fs []Finding) {
	for _, f := range fs {
		typ := Normal
		if f.Warning {
			typ = Warning
		}
		r.condition(typ, f.Reason, f.Object, f.Unit, f.Message, f.Occurrence)
	}
}

// condition records what this pass sees as an event at its onset: one the
// previous pass did not see (Reconciler.conditions). A condition that goes
// away for a pass and comes back is a new onset.
func (r *Reconciler) condition(t EventType, reason Reason, object, unit, msg, occurrence string) {
	k := key(Event{Object: object, Reason: reason, Message: msg})
	if occurrence != "" {
		k += "\x00" + occurrence
	}
	now := r.cfg.Now()
	if at, ok := r.conditions[k]; ok && now.Sub(at) < conditionRefresh {
		if r.condNext != nil {
			r.condNext[k] = at
		}
		return
	}
	if r.condNext != nil {
		r.condNext[k] = now
	}
	r.event(t, reason, object, unit, "", msg)
}

func (r *Reconciler) event(t EventType, reason Reason, object, unit, step, msg string) {
	r.cfg.Events.Record(Event{Time: r.cfg.Now(), Type: t, Reason: reason, Object: object, Unit: unit, Step: step, Message: msg})
}

// execute runs the steps. Everything up to the last file, daemon-reload or
// manager step (on systemd the enables and disables too) runs in plan
// order, one at a time or one batch per run of an op. A daemon-reload the
// plan has only for enablement (linksReloadReason) runs only if an enable
// or disable before it changed something. The remaining steps (start,
// restart, stop, reset-failed, on the process backend enable, per unit) run unit by unit in
// plan order within a unit, up to Config.Parallel units at once, so one slow
// start (a pre-start check retrying, a notify service taking its time) does
// not hold back the others. Outcomes come back in plan order. A unit's
// remaining steps stop at its first failure; a failed daemon-reload stops
// the pass; objects in backoff are held back while healthy ones proceed.
func (r *Reconciler) execute(ctx context.Context, log *zap.Logger, plan Plan) ([]StepOutcome, time.Duration, error) {
	ex := &execution{r: r, log: log, now: r.cfg.Now(), failedUnit: map[string]bool{}, failedObj: map[string]bool{}, touched: map[string]bool{}}
	out := make([]StepOutcome, len(plan.Steps))
	split := runtimeStart(plan.Steps)
	ex.fileSteps(ctx, plan.Steps, split, out)
	// Runtime steps, grouped by unit in order of first appearance.
	groups := map[string][]int{}
	var order []string
	for i := split; i < len(plan.Steps); i++ {
		k := plan.Steps[i].Unit
		if k == "" {
			k = fmt.Sprintf("\x00%d", i)
		}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	parallel := r.cfg.Parallel
	if parallel <= 0 {
		parallel = 1
	}
	ex.batches(ctx, plan.Steps, groups, order, out)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, k := range order {
		idx := groups[k]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for _, i := range idx {
				out[i] = ex.step(ctx, i, plan.Steps[i])
			}
		}()
	}
	wg.Wait()
	for obj := range ex.touched {
		if !ex.failedObj[obj] {
			delete(r.failures, obj)
		}
	}
	return out, ex.requeue, ex.merr.ErrorOrNil()
}

// fileSteps runs steps[:split] (prune stops, files, enablement on
// systemd, the daemon-reload, manager settings) in order. A run of unit
// file writes, enables or disables goes through one ApplyBatch when the
// Applier batches that op and Config.Parallel allows more than one at a
// time (the process backend's writes: their fsyncs overlap; systemd's
// enables: one EnableUnitFiles).
func (ex *execution) fileSteps(ctx context.Context, steps []actuators.Step, split int, out []StepOutcome) {
	b, ok := ex.r.cfg.Applier.(BatchApplier)
	batching := func(op actuators.Op) bool {
		switch op {
		case actuators.OpWriteFile, actuators.OpEnable, actuators.OpDisable:
			return ok && ex.r.cfg.Parallel > 1 && b.Batches(op)
		}
		return false
	}
	for i := 0; i < split; {
		if s := steps[i]; s.Op == actuators.OpDaemonReload && s.Reason == linksReloadReason && !linked(steps[:i], out[:i]) {
			// An enable or disable held back or failing costs no reload.
			out[i] = StepOutcome{Step: s, Skipped: "no enablement changed"}
			ex.log.Info("step skipped", zap.Stringer("step", s), zap.String("why", out[i].Skipped))
			i++
			continue
		}
		j := i
		for batching(steps[i].Op) && j < split && steps[j].Op == steps[i].Op {
			j++
		}
		if j-i < 2 {
			out[i] = ex.step(ctx, i, steps[i])
			i++
			continue
		}
		idx := make([]int, 0, j-i)
		for k := i; k < j; k++ {
			idx = append(idx, k)
		}
		ex.batch(ctx, b, steps, idx, out)
		i = j
	}
}

// linked reports whether an enable or disable step among out changed
// something.
func linked(steps []actuators.Step, out []StepOutcome) bool {
	for i, s := range steps {
		if (s.Op == actuators.OpEnable || s.Op == actuators.OpDisable) && out[i].Skipped == "" && out[i].Err == nil && out[i].Result == actuators.Changed {
			return true
		}
	}
	return false
}

// runtimeStart returns the index of the first step after the last file,
// daemon-reload or manager step.
func runtimeStart(steps []actuators.Step) int {
	split := 0
	for i, s := range steps {
		switch s.Op {
		case actuators.OpWriteFile, actuators.OpRemoveFile, actuators.OpDaemonReload, actuators.OpSetManager:
			split = i + 1
		}
	}
	return split
}

// execution is the shared bookkeeping of one execute, guarded by mu; only
// Apply itself runs outside the lock.
type execution struct {
	r            *Reconciler
	log          *zap.Logger
	now          time.Time
	mu           sync.Mutex
	merr         *multierror.Error
	failedUnit   map[string]bool
	failedObj    map[string]bool
	touched      map[string]bool
	requeue      time.Duration
	reloadFailed bool
	// buffered, when set, collects the events record makes (a batch's,
	// recorded together once all its outcomes are in).
	buffered *[]Event
}

// event records an event of a step's outcome, or buffers it during a
// batch; called with mu held.
func (ex *execution) event(t EventType, reason Reason, object, unit, step, msg string) {
	if ex.buffered != nil {
		*ex.buffered = append(*ex.buffered, Event{Time: ex.r.cfg.Now(), Type: t, Reason: reason, Object: object, Unit: unit, Step: step, Message: msg})
		return
	}
	ex.r.event(t, reason, object, unit, step, msg)
}

func (ex *execution) requeueIn(d time.Duration) {
	if ex.requeue == 0 || d < ex.requeue {
		ex.requeue = d
	}
}

// step runs plan step i and then the AfterStep hook, if the step ran.
func (ex *execution) step(ctx context.Context, i int, s actuators.Step) StepOutcome {
	oc := ex.run(ctx, s)
	if h := ex.r.cfg.AfterStep; h != nil && oc.Skipped == "" {
		h(i, s)
	}
	return oc
}

// run executes one step unless an earlier failure, a cancelled pass or the
// object's backoff says to skip it.
func (ex *execution) run(ctx context.Context, s actuators.Step) (oc StepOutcome) {
	oc.Step = s
	if oc.Skipped = ex.admit(ctx, s); oc.Skipped != "" {
		return oc
	}

	start := time.Now()
	oc.Result, oc.Err = ex.apply(ctx, s)
	oc.Duration = time.Since(start)
	ex.record(&oc)
	return oc
}

// admit returns why s is skipped ("" when it runs) and, when it runs,
// marks its object touched.
func (ex *execution) admit(ctx context.Context, s actuators.Step) (skipped string) {
	r, log := ex.r, ex.log
	var oc StepOutcome
	ex.mu.Lock()
	switch {
	case ex.reloadFailed:
		oc.Skipped = "daemon-reload failed"
	case s.Unit != "" && ex.failedUnit[s.Unit]:
		oc.Skipped = "an earlier step for this unit failed"
	case ctx.Err() != nil:
		oc.Skipped = "pass cancelled"
	}
	if b := r.failures[s.Object]; oc.Skipped == "" && s.Object != "" && b != nil && ex.now.Before(b.next) {
		oc.Skipped = fmt.Sprintf("held back after %d failures, retry in %s", b.count, b.next.Sub(ex.now).Round(time.Millisecond))
		ex.requeueIn(b.next.Sub(ex.now))
	}
	if oc.Skipped != "" {
		ex.mu.Unlock()
		log.Info("step skipped", zap.Stringer("step", s), zap.String("why", oc.Skipped))
		return oc.Skipped
	}
	if s.Object != "" {
		ex.touched[s.Object] = true
	}
	ex.mu.Unlock()
	return ""
}

// record logs the outcome of a step that ran, records its event and, on
// failure, its unit's first failure and its object's backoff.
func (ex *execution) record(oc *StepOutcome) {
	r, log, s := ex.r, ex.log, oc.Step
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if oc.Err != nil {
		log.Error("step failed", zap.Stringer("step", s), zap.Error(oc.Err))
		ex.event(Warning, ReasonApplyFailed, s.Object, s.Unit, s.String(), oc.Err.Error())
		ex.merr = multierror.Append(ex.merr, fmt.Errorf("%s: %w", s, oc.Err))
		if s.Unit != "" {
			ex.failedUnit[s.Unit] = true
		}
		if s.Op == actuators.OpDaemonReload {
			ex.reloadFailed = true
		}
		if s.Object != "" && !ex.failedObj[s.Object] {
			ex.failedObj[s.Object] = true
			ex.requeueIn(r.fail(s.Object, ex.now))
		}
		return
	}
	if oc.Result == actuators.Changed {
		log.Info("step applied", zap.Stringer("step", s))
		reason := ReasonApplied
		if s.Op == actuators.OpRemoveFile {
			reason = ReasonPruned
		}
		ex.event(Normal, reason, s.Object, s.Unit, s.String(), s.String())
	} else {
		log.Debug("step unchanged", zap.Stringer("step", s))
	}
}

// apply calls the Applier, turning a panic in a worker into a step error
// (the pass's own recover only covers its goroutine).
func (ex *execution) apply(ctx context.Context, s actuators.Step) (res actuators.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			ex.log.Error("step panicked", zap.Stringer("step", s), zap.Any("panic", p), zap.Stack("stack"))
			res, err = actuators.Unchanged, fmt.Errorf("step panicked: %v", p)
		}
	}()
	return ex.r.cfg.Applier.Apply(ctx, s)
}

// fail records a failure of obj and returns its backoff: capped exponential
// with ±20% jitter.
func (r *Reconciler) fail(obj string, now time.Time) time.Duration {
	b := r.failures[obj]
	if b == nil {
		b = &backoff{}
		r.failures[obj] = b
	}
	b.count++
	d := r.cfg.BackoffBase << min(b.count-1, 20)
	if d > r.cfg.BackoffMax || d <= 0 {
		d = r.cfg.BackoffMax
	}
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	b.next = now.Add(d)
	return d
}

func (r *Reconciler) probeStatuses() []health.Status {
	if r.cfg.Health == nil {
		return nil
	}
	return r.cfg.Health()
}

// dropInDir says whether the manifests directory holds a drop-in folder
// for name.
func dropInDir(dir, name string) bool {
	st, err := os.Stat(filepath.Join(dir, name+".d"))
	return err == nil && st.IsDir()
}
