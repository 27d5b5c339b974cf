package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"resil.dev/resil/desired"
	sdobserve "resil.dev/resil/observed/systemd"
	"resil.dev/resil/reconcile"
)

// defaultRunParallelRestarts is run's --max-parallel-restarts unless set.
const defaultRunParallelRestarts = 2

func newRunCmd(g *globals) *cobra.Command {
	var resync, settle, passTimeout time.Duration
	var obsf *obsFlags
	var srcf *sourceFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent: keep the host converged until stopped",
		Long: "Level-triggered loop: every pass re-reads all manifests and all observed state. Changes in the\n" +
			"manifests directory (and its drop-in folders, and symlink swaps of it), backend state changes and a\n" +
			"periodic resync wake it; bursts collapse into one pass after --settle.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("max-parallel-restarts") {
				// The agent paces its restarts by default: a commit touching
				// 40 services does not restart 40 services in the same second.
				g.maxParallelRestarts = defaultRunParallelRestarts
			}
			g.agent = true
			c, done, err := g.openCommand("info", true, false, 1)
			if err != nil {
				return err
			}
			defer done()
			ctx, log, be := c.ctx, c.log, c.be
			ring := reconcile.NewRing(4096, log)
			// Events, restart ledger, alerts, status snapshot, metrics (telemetry.go).
			obs, err := obsf.open(g, log, be.Name, ring, 2*resync+passTimeout)
			if err != nil {
				return exitCode(1, err)
			}
			defer obs.close()
			src, err := srcf.open(g, log, obs.recorder, obs.metrics, be.Render) // --source git: g.manifests is its link (source.go)
			if err != nil {
				return err
			}
			if src != nil {
				src.Prime(ctx, 30*time.Second) // the first revision before the first pass
			}
			hp := newProbes(log, be.ProbeRunner) // liveness and readiness (health.go)
			be.Health = hp.status
			// The manifest watch's events: a load started when the loop
			// wakes stands in for the pass's own only while none came
			// (reconcile.LoadAhead).
			var manifestEvents atomic.Uint64
			g.manifestSeq = manifestEvents.Load
			if be.SetEvents != nil {
				be.SetEvents(obs.recorder)
			}
			r, err := newReconciler(g, be, log, obs.recorder, false)
			if err != nil {
				return exitCode(2, err)
			}
			loop := reconcile.NewLoop(r, log)
			loop.Kicked = be.Prepare
			loop.Overlap = be.Name == "systemd" // see reconcile.Options.Overlap
			sd := newSDNotifier(log)
			defer sd.stopping()
			loop.Resync, loop.Settle, loop.PassTimeout = sd.watchdogResync(resync), settle, passTimeout
			loop.AfterSteps = true // ledger and status see what each pass's steps did (telemetry.afterPass)
			// Each after-pass hook sees every pass result (heartbeat, sd_notify,
			// metrics); add one per concern.
			trim := newMemTrim(250 * time.Millisecond) // heap back to the kernel once quiet (memtrim.go)
			// The manifest cache file, for the next agent or command: at
			// most every cacheSaveEvery (an edit changes it twice: the
			// file is parsed, then cached once older than 2 s), and at exit.
			var cacheSaved time.Time
			saveCache := func(reconcile.Result, error) {
				if now := time.Now(); now.Sub(cacheSaved) >= cacheSaveEvery {
					cacheSaved = now
					g.saveManifestCache(log)
				}
			}
			defer g.saveManifestCache(log)
			afterPass := []func(reconcile.Result, error){firstPassLog(log), releaseAfterFirst(be.Release), sd.afterPass, newTimerLog(log).afterPass, obs.afterPass, hp.afterPass, saveCache, trim.afterPass}
			loop.AfterPass = func(res reconcile.Result, err error) {
				for _, h := range afterPass {
					h(res, err)
				}
			}
			log.Info("agent starting", zap.String("backend", be.Name), zap.String("manifests", g.manifests),
				zap.String("unit_dir", be.UnitDir), zap.String("state_dir", g.stateDir), zap.String("version", buildVersion()))
			eg, ctx := errgroup.WithContext(ctx)
			hp.wake = loop.Kick
			eg.Go(func() error { return loop.Run(ctx) })
			eg.Go(func() error { return hp.run(ctx) })
			eg.Go(func() error { return trim.run(ctx) })
			// Watch opens files only as Load would; the labels were read
			// once, by newReconciler, and are not read again.
			wopts, err := g.fileOptions()
			if err != nil {
				return exitCode(2, err)
			}
			manifestChanged := func() { manifestEvents.Add(1) }
			eg.Go(func() error {
				return desired.Watch(ctx, g.manifests, wopts, log.Named("watch"), loop.Kick, manifestChanged)
			})
			if src != nil {
				eg.Go(func() error { return src.Run(ctx, func() { manifestChanged(); loop.Kick() }) })
			}
			for _, bg := range slices.Concat(be.Background, be.Watches, []func(context.Context, func()) error{watchSafety(g.stateDir, time.Second)}) {
				eg.Go(func() error { return bg(ctx, loop.Kick) })
			}
			for _, bg := range obs.background {
				eg.Go(func() error { return bg(ctx) })
			}
			err = eg.Wait()
			if be.StoppedAll != nil {
				// Stopped, not restarted: the next agent's starts are first starts.
				obs.stopped(context.Background(), be.StoppedAll())
			}
			log.Info("agent stopped", zap.Error(err))
			if err != nil && ctx.Err() == nil {
				return exitCode(1, err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&resync, "resync", 5*time.Minute, "periodic full pass")
	f.DurationVar(&settle, "settle", 100*time.Millisecond, "wait after a change for more changes before a pass")
	f.DurationVar(&passTimeout, "pass-timeout", 5*time.Minute, "upper bound of one pass")
	f.DurationVar(&g.pruneQuiet, "prune-quiet", 2*time.Second, "prune an object its manifest file declares no more only once that file has been unchanged this long (a file written in steps holds some of its documents for a moment); 0: at once")
	obsf = addObsFlags(f)
	srcf = addSourceFlags(f)
	addSafetyFlags(g, cmd)
	f.BoolVar(&g.stopOnExit, "stop-on-exit", false, "process backend: on SIGTERM stop all services in reverse start order and exit when all are down (always on as PID 1); otherwise they keep running for the next agent to adopt")
	return cmd
}

// cacheSaveEvery bounds how often run writes the manifest cache file.
const cacheSaveEvery = 30 * time.Second

// firstPassLog logs once, after the first pass, that the agent has converged
// (or tried to) for the first time.
func firstPassLog(log *zap.Logger) func(reconcile.Result, error) {
	log = log.Named("agent")
	first := true
	return func(res reconcile.Result, err error) {
		if first {
			first = false
			log.Info("first pass done", zap.Int("objects", res.Objects), zap.Int("steps", len(res.Plan.Steps)), zap.Error(err))
		}
	}
}

// releaseAfterFirst calls release (backend.Release) after the first pass,
// whatever its result; nil release: nothing.
func releaseAfterFirst(release func()) func(reconcile.Result, error) {
	return func(reconcile.Result, error) {
		if release != nil {
			release()
			release = nil
		}
	}
}

func newResetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reset NAME...",
		Short: "Clear a unit's failed / start-limit state so it is started again",
		Long: `Clear a unit's failed / start-limit state and start it again, as its
manifest says: a unit no manifest declares is refused; a service whose
manifest says state: stopped, a timer's job and a disabled timer only have
their failed state cleared (the timer starts its job). NAME is a unit
(web.service, job.timer), an object ID (Service/web, Timer/job; the kind in
any case), which resets every unit the object owns (a timer and its job),
or a name (web: every object of that name).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := g.openCommand("warn", false, false, 2)
			if err != nil {
				return err
			}
			defer done()
			ctx, be := c.ctx, c.be
			_, cleanup, err := diffSource(ctx, cmd, g, "") // source.go: the git source's manifests
			if err != nil {
				return exitCode(2, err)
			}
			defer cleanup()
			set, loadErr := loadDeclared(g)
			for _, a := range args {
				units, err := resetUnits(set, g.manifests, a)
				if err != nil {
					return exitCode(1, fmt.Errorf("reset %s: %w", a, err))
				}
				for _, unit := range units {
					start, why, err := resetTarget(set, loadErr, g.manifests, unit)
					if err != nil {
						return exitCode(1, fmt.Errorf("reset %s: %w", unit, err))
					}
					rctx, cancel := context.WithTimeout(ctx, time.Minute)
					err = be.Reset(rctx, unit, start)
					cancel()
					if err != nil {
						return exitCode(1, fmt.Errorf("reset %s: %w", unit, err))
					}
					if why != "" {
						fmt.Fprintf(cmd.OutOrStdout(), "reset %s (failed state cleared; not started: %s)\n", unit, why)
						continue
					}
					fmt.Fprintf(cmd.OutOrStdout(), "reset %s\n", unit)
				}
			}
			return nil
		},
	}
}

// resetUnits are the units reset acts on for an argument: a unit name
// (web.service, job.timer) is itself; an object ID as status and pause
// print it (Service/web, Timer/job; the kind in any case) is every unit
// the object owns (a timer and its inline job: a failed job is what fails
// the timer); a name (web) is the units of every object of that name, or
// web.service when the manifests declare none. An ID no manifest declares
// is refused, unless the manifests cannot be read or an invalid one may
// declare it (then its own unit: resetTarget only clears it).
func resetUnits(set *desired.Set, dir, arg string) ([]string, error) {
	if sdobserve.HasUnitSuffix(arg) {
		return []string{arg}, nil
	}
	kindArg, name, isID := strings.Cut(arg, "/")
	var kind desired.Kind
	if isID {
		for _, k := range []desired.Kind{desired.KindService, desired.KindTimer, desired.KindWatchdog} {
			if strings.EqualFold(kindArg, string(k)) {
				kind = k
			}
		}
		switch {
		case kind == "" || name == "":
			return nil, fmt.Errorf("%q is not a unit (web.service), an object ID (Service/web, Timer/job) or a name (web)", arg)
		case kind == desired.KindWatchdog:
			return nil, fmt.Errorf("a Watchdog has no unit to reset")
		}
	}
	var objs []*desired.Object
	if set != nil {
		objs = set.Sorted()
		for _, id := range slices.Sorted(maps.Keys(set.NotSelected)) {
			objs = append(objs, set.NotSelected[id])
		}
	}
	var units []string
	for _, o := range objs {
		match := o.Metadata.Name == arg
		if isID {
			match = o.Kind == kind && o.Metadata.Name == name
		}
		for _, u := range o.OwnedUnits() {
			if match && !slices.Contains(units, u) {
				units = append(units, u)
			}
		}
	}
	switch {
	case len(units) > 0:
		return units, nil
	case !isID:
		return []string{arg + ".service"}, nil
	case set == nil || len(set.Broken) > 0 || len(set.Busy) > 0 || len(set.Empty) > 0 || len(set.BrokenNames) > 0 || set.Invalid[string(kind)+"/"+name] != "":
		o := desired.Object{Kind: kind, Metadata: desired.ObjectMeta{Name: name}}
		return []string{o.UnitName()}, nil
	}
	return nil, fmt.Errorf("no such object: no manifest in %s declares %s/%s", dir, kind, name)
}

// loadDeclared reads the manifests for reset (nil and the error when they
// cannot be read).
func loadDeclared(g *globals) (*desired.Set, error) {
	opts, err := g.loadOptions()
	if err != nil {
		return nil, err
	}
	set, err := desired.Load(g.manifests, opts)
	if err != nil && (set == nil || errors.Is(err, desired.ErrUnreadable)) {
		return nil, err
	}
	return set, nil
}

// resetTarget decides what reset does with unit: start it again (its
// manifest declares it running), only clear its failed state (why says
// why it is not started), or refuse it (no manifest declares it: resil
// starts only what it manages). Manifests that cannot be read, or that
// have an invalid file which may declare the unit, only clear the failed
// state: the agent's next pass starts what its manifests say.
func resetTarget(set *desired.Set, loadErr error, dir, unit string) (start bool, why string, err error) {
	if set == nil {
		return false, fmt.Sprintf("the manifests cannot be read (%v)", loadErr), nil
	}
	for _, o := range set.Sorted() {
		switch {
		case o.Kind == desired.KindService && o.UnitName() == unit:
			if o.Service.DesiredState() == desired.StateStopped {
				return false, "its manifest says state: stopped", nil
			}
			return true, "", nil
		case o.Kind == desired.KindTimer && o.UnitName() == unit:
			if !o.Timer.IsEnabled() {
				return false, "its manifest says enabled: false", nil
			}
			return true, "", nil
		case o.Kind == desired.KindTimer && o.Timer.Service == "" && o.Timer.TriggeredService(o.Metadata.Name) == unit:
			return false, "it is the job of " + o.UnitName() + ", which starts it", nil
		}
	}
	for _, o := range set.NotSelected {
		if o.UnitName() == unit {
			return false, "", fmt.Errorf("%s declares it for other hosts (hosts: does not select this one): resil does not manage it here", o.Source.File)
		}
	}
	if len(set.Broken) > 0 || len(set.Busy) > 0 || len(set.Empty) > 0 || len(set.BrokenNames) > 0 {
		return false, "no valid manifest declares it, and an invalid one may (the agent keeps its last good version)", nil
	}
	return false, "", fmt.Errorf("no manifest in %s declares it: resil resets only the units it manages", dir)
}
