package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/health"
)

// backend is what the CLI needs from systemd or the process supervisor.
type backend struct {
	Name       string
	UnitDir    string
	ManagerDir string
	Render     reconcile.Renderer
	// Health are the probe statuses each pass plans from (run only).
	Health func() []health.Status
	// Classify says whether a rewritten unit file needs a restart (nil:
	// systemd unit files).
	Classify reconcile.Classifier
	// MarkProcessSince: see reconcile.Input.MarkProcessSince.
	MarkProcessSince bool
	// RestartJournal: see reconcile.Config.RestartJournal.
	RestartJournal bool
	// RunMemory: see reconcile.Config.RunMemory.
	RunMemory bool
	Observer  reconcile.Observer
	Applier   reconcile.Applier
	// Background tasks run beside every pass that acts (the process
	// backend's supervisor). Each returns when ctx is done, after its
	// goroutines exit; wake must not block.
	Background []func(ctx context.Context, wake func()) error
	// Release, if set, is called once the first pass of a command that
	// acts (run, apply) is done, whatever its result: the process
	// supervisor holds the starts it decides itself from the unit files
	// it found (enabled units, owed restarts, timer runs) until then, so
	// they run what the manifests say (process.Options.HoldUntilRelease).
	Release func()
	// Watches run beside `run`'s loop only: subscriptions to state changes
	// that wake it and feed the observer's cache. A one-shot `apply` reads
	// everything anyway and needs no wake-ups, so it does not subscribe:
	// on systemd's private socket that saves Subscribe, Unsubscribe and
	// PID 1's copy of every signal of the pass.
	Watches []func(ctx context.Context, wake func()) error
	// ProbeRunner runs exec health probes (nil: in the agent's process).
	ProbeRunner health.Runner
	// StoppedAll, if set, returns after the background tasks ended the
	// state they left when they stopped every service on the way out (the
	// process backend's --stop-on-exit), nil when they did not.
	StoppedAll func() *observed.State
	// SetEvents, if set, gives the backend the recorder of the events it
	// reports itself (the process supervisor's timer catch-up decisions).
	SetEvents func(reconcile.Recorder)
	// Reset clears a unit's failed state (reconciler reset) and, with
	// start, starts it (the process backend leaves the start to the
	// agent's next pass).
	Reset func(ctx context.Context, unit string, start bool) error
	// Prepare, if set, readies what the next pass will need, without
	// blocking (the loop's Kicked: called when a change wakes the agent).
	Prepare func()
	// Close releases connections.
	Close func()
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// opened is what a command that acts through a backend starts with.
type opened struct {
	ctx context.Context
	log *zap.Logger
	be  *backend
}

// openCommand opens, in order, a context cancelled by SIGINT or SIGTERM,
// the logger (defaultLevel unless --log-level), the state-dir lock when
// lock is set, and the backend (readOnly: for diff). A lock or backend
// error carries exit status code. done releases all of it in reverse order.
func (g *globals) openCommand(defaultLevel string, lock, readOnly bool, code int) (c *opened, done func(), err error) {
	var undo []func()
	// release, not done: an error return sets the named done to nil
	// before the deferred call below reads it.
	release := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	ctx, cancel := signalContext()
	undo = append(undo, cancel)
	log, err := g.logger(defaultLevel)
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() { _ = log.Sync() })
	if lock {
		unlock, err := lockState(g.stateDir)
		if err != nil {
			return nil, nil, exitCode(code, err)
		}
		undo = append(undo, unlock)
	}
	be, err := openBackend(ctx, g, log, readOnly)
	if err != nil {
		return nil, nil, exitCode(code, err)
	}
	undo = append(undo, be.Close)
	return &opened{ctx: ctx, log: log, be: be}, release, nil
}

// openBackend picks and opens the backend. readOnly is for diff: it must not
// need root and must not change anything.
func openBackend(ctx context.Context, g *globals, log *zap.Logger, readOnly bool) (*backend, error) {
	name := g.backend
	if name == "auto" || name == "" {
		name = detectBackend(ctx)
		log.Info("backend selected", zap.String("backend", name))
	}
	switch name {
	case "systemd":
		return openSystemd(ctx, g, log, readOnly)
	case "process":
		return openProcess(ctx, g, log, readOnly)
	}
	return nil, fmt.Errorf("--backend must be auto, systemd or process, got %q", g.backend)
}

// detectBackend says systemd when the host booted with it
// (/run/systemd/system exists, sd_booted(3)) and it answers on D-Bus.
func detectBackend(ctx context.Context) string {
	if st, err := os.Stat("/run/systemd/system"); err != nil || !st.IsDir() {
		return "process"
	}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if !systemdAnswers(dctx) {
		return "process"
	}
	return "systemd"
}

// newReconciler wires a Reconciler. readOnly is for diff: the last good
// objects in the state dir are read, never written (nor the dir created).
func newReconciler(g *globals, be *backend, log *zap.Logger, events reconcile.Recorder, readOnly bool) (*reconcile.Reconciler, error) {
	opts, err := g.loadOptions()
	if err != nil {
		return nil, err
	}
	// A pass parses only the manifests changed since the last; the cache
	// file carries that from one command to the next (desired/cache_file.go).
	cache, cerr := desired.LoadFileCache(g.manifestCachePath(), binaryStamp())
	if cerr != nil && !errors.Is(cerr, fs.ErrNotExist) {
		log.Debug("manifest cache file not used", zap.Error(cerr))
	}
	opts.Cache = cache
	if !readOnly {
		g.cache = cache
	}
	manifests, err := filepath.Abs(g.manifests)
	if err != nil {
		return nil, fmt.Errorf("manifests path: %w", err)
	}
	afterStep, err := crashAfterStep() // test hook (testhook.go)
	if err != nil {
		return nil, err
	}
	safety, err := g.safety.config(g.stateDir, readOnly) // safety.go
	if err != nil {
		return nil, err
	}
	return reconcile.New(reconcile.Config{
		Manifests: manifests, Load: opts, ManifestSeq: g.manifestSeq, UnitDir: be.UnitDir, ManagerDir: be.ManagerDir,
		Render: be.Render, Classify: be.Classify, MarkProcessSince: be.MarkProcessSince, RestartJournal: be.RestartJournal, RunMemory: be.RunMemory, Observer: be.Observer, Applier: be.Applier, Events: events, Log: log,
		AfterStep: afterStep, Health: be.Health, MaxParallelRestarts: g.maxParallelRestarts, RolloutReadyTimeout: g.rolloutReadyTimeout, Rollout: g.rollout, LastGood: reconcile.NewLastGoodFile(g.stateDir, readOnly),
		Safety: safety, PruneQuiet: g.pruneQuiet,
	}), nil
}

// manifestCachePath is the manifest cache file in the state directory.
func (g *globals) manifestCachePath() string { return filepath.Join(g.stateDir, desired.CacheFileName) }

// saveManifestCache writes the manifest cache file when the last pass
// changed what it holds (apply, and run after each pass). Not for read-only
// commands (diff), which have no g.cache. A failure costs only speed.
func (g *globals) saveManifestCache(log *zap.Logger) {
	if g.cache == nil {
		return
	}
	if err := g.cache.Save(g.manifestCachePath()); err != nil {
		log.Warn("manifest cache file not saved", zap.Error(err))
	}
}

// binaryStamp identifies this executable for the manifest cache file: a
// cache written by another build is not used, as that build may parse
// manifests differently. The identity is the executable file's inode,
// size and modification time, and the Go version.
func binaryStamp() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	fi, err := os.Stat(exe)
	if err != nil {
		return ""
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf("%s %d %d %d %s", buildVersion(), ino, fi.Size(), fi.ModTime().UnixNano(), runtime.Version())
}
