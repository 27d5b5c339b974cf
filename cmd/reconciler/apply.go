package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/ledger"
	"resil.dev/resil/reconcile/store"
)

func newApplyCmd(g *globals) *cobra.Command {
	var expect string
	var allowPrune int
	var stayUp time.Duration
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Run one reconcile pass, then exit",
		Long: "Load, observe, plan and execute once. Each step is printed with its outcome.\n" +
			"Exit status: 0 converged, 1 some step failed, a unit it started did not stay up (failed, in\n" +
			"auto-restart or restarted when read after the steps) or a manifest is invalid, 2 error.\n" +
			"--expect-plan HASH refuses to act when the plan differs from the one `diff` showed.\n" +
			"--stay-up D is how long after its last start or restart apply reads the host again to judge\n" +
			"whether what it started stayed up (0: read at once, catching only what failed by then).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if stayUp < 0 {
				return exitCode(2, fmt.Errorf("--stay-up %s: must not be negative", stayUp))
			}
			return runApply(cmd, g, reconcile.Options{ExpectPlan: expect, AllowPrune: allowPrune}, stayUp)
		},
	}
	cmd.Flags().StringVar(&expect, "expect-plan", "", "refuse to act unless the plan hash equals HASH (from diff)")
	cmd.Flags().IntVar(&allowPrune, "allow-prune", 0, "let a prune of at most N objects through the mass-prune guard, this once")
	cmd.Flags().DurationVar(&stayUp, "stay-up", reconcile.StayUpWindow, "how long after its last start apply waits before judging that what it started stayed up (0: no wait)")
	addSafetyFlags(g, cmd)
	return cmd
}

// runApply runs one applying pass and prints its outcomes (apply, and
// prune --confirm with no agent running). stayUp: see statusAfter.
func runApply(cmd *cobra.Command, g *globals, opts reconcile.Options, stayUp time.Duration) error {
	c, done, err := g.openCommand("warn", true, false, 2)
	if err != nil {
		return err
	}
	defer done()
	ctx, log, be := c.ctx, c.log, c.be
	// The pass's reads are kept for the status snapshot's second read
	// after the steps (statusAfter): that one reads again only the units
	// whose status, files or main process changed (observed/systemd
	// KeepReads).
	recheck := func() {}
	if k, ok := be.Observer.(rechecker); ok {
		k.KeepReads()
		recheck = k.Recheck
	}
	// systemd's state is read while the store opens and the manifests
	// load (reconcile/prefetch.go).
	if be.Name == "systemd" && opts.Prefetched == nil {
		opts.Prefetched = reconcile.StartPrefetch(ctx, be.Observer)
		defer opts.Prefetched.Wait()
	}
	// Events of a one-shot pass are recorded in the agent's store too,
	// so `reconciler events` shows what apply did.
	var rec reconcile.Recorder = reconcile.NewRing(1024, log)
	var snapshot func(reconcile.Result, error)
	var (
		restartsPass  func(pass reconcile.Result)
		restartsAfter func(pass, after reconcile.Result)
	)
	if s, err := store.Open(storePath(g), store.Options{Log: log}); err != nil {
		log.Warn("event store unavailable, events go to the log only", zap.Error(err))
	} else {
		defer s.Close()
		rec = reconcile.Fanout{rec, s}
		// `reconciler status` then shows what this pass saw.
		t := newTelemetry(s, nil, rec, log, be.Name, ledger.Policy{}, 0)
		t.command = "apply"
		if g.safety != nil {
			t.maxLease = g.safety.maxLease
		}
		snapshot = func(res reconcile.Result, err error) { t.snapshot(ctx, res, err, time.Now()) }
		restartsPass = func(pass reconcile.Result) { ledgerPass(ctx, t.ledger, pass, time.Now()) }
		restartsAfter = func(pass, after reconcile.Result) { ledgerAfter(ctx, t.ledger, pass, after, time.Now()) }
	}
	// With a git source in the state dir (and no --manifests), apply
	// converges on its deployed revision, as the agent does (source.go).
	if _, _, err := diffSource(ctx, cmd, g, ""); err != nil {
		return exitCode(2, err)
	}
	if be.SetEvents != nil {
		be.SetEvents(rec)
	}
	r, err := newReconciler(g, be, log, rec, false)
	if err != nil {
		return exitCode(2, err)
	}
	// The process backend's supervisor must run while the pass acts;
	// afterwards its processes keep running for `run` to adopt.
	bgCtx, stopBg := context.WithCancel(ctx)
	var bg errgroup.Group
	for _, task := range be.Background {
		bg.Go(func() error { return task(bgCtx, func() {}) })
	}
	defer func() { stopBg(); _ = bg.Wait() }()
	start := time.Now()
	res, err := r.Reconcile(ctx, opts)
	if be.Release != nil {
		be.Release() // the held starts (timers) run the files the pass left
	}
	// The manifest cache file and the restart ledger's record of what the
	// pass saw before its steps are written while the host is read again
	// after them: none needs the others.
	var side errgroup.Group
	side.Go(func() error { g.saveManifestCache(log); return nil })
	if restartsPass != nil {
		side.Go(func() error { restartsPass(res); return nil })
	}
	// The read after the steps (status snapshot, restart ledger) also
	// tells whether what the pass started stayed up.
	var notUp []reconcile.Finding
	if res.Observed != nil {
		after, aerr, rerr := statusAfter(ctx, r, res, err, recheck, stayUp, log)
		_ = side.Wait()
		if snapshot != nil {
			restartsAfter(res, after)
			snapshot(after, aerr)
		}
		switch {
		case rerr != nil && reconcile.StartedSomething(res):
			// Not judged is not judged up: the exit says so.
			notUp = []reconcile.Finding{{Reason: reconcile.ReasonNotStayedUp, Warning: true,
				Message: fmt.Sprintf("the host could not be read after the steps (%v): whether what apply started stayed up is unknown", rerr)}}
		case aerr == nil && after.Observed != res.Observed:
			notUp = reconcile.NotStayedUp(res, after.Observed)
		}
		for _, f := range notUp {
			rec.Record(reconcile.Event{Type: reconcile.Warning, Reason: f.Reason, Object: f.Object, Unit: f.Unit, Message: f.Message})
		}
	}
	_ = side.Wait()
	out := cmd.OutOrStdout()
	if errors.Is(err, reconcile.ErrExpectPlan) {
		printPlan(out, be.Name, res)
		return exitCode(1, err)
	}
	if err != nil && len(res.Outcomes) == 0 {
		return exitCode(2, err)
	}
	for _, o := range res.Outcomes {
		switch {
		case o.Skipped != "":
			fmt.Fprintf(out, "skipped  %s: %s\n", desired.EscapeControl(o.Step.String()), desired.EscapeControl(o.Skipped))
		case o.Err != nil:
			fmt.Fprintf(out, "FAILED   %s: %s\n", desired.EscapeControl(o.Step.String()), desired.EscapeControl(o.Err.Error()))
		default:
			fmt.Fprintf(out, "%-8s %s\n", o.Result, desired.EscapeControl(o.Step.String()))
		}
	}
	for _, f := range slices.Concat(res.Plan.Findings, notUp) {
		if f.Warning {
			what := string(f.Reason)
			if f.Object != "" { // PruneBlocked is about the host, not one object
				what += " " + desired.EscapeControl(f.Object)
			}
			fmt.Fprintf(out, "warning  %s: %s\n", what, desired.EscapeControl(f.Message))
		}
	}
	fmt.Fprintf(out, "%d steps, %d failed, %d objects, %s (plan %s)\n", len(res.Outcomes), res.Failed(), res.Objects,
		time.Since(start).Round(time.Millisecond), res.Hash)
	if res.LoadErr != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "invalid manifests (their last good version, if any, stays in force):\n%v\n", res.LoadErr)
		return exitCode(1, nil)
	}
	if err != nil || res.Failed() > 0 || len(notUp) > 0 {
		return exitCode(1, nil)
	}
	return nil
}

// rechecker is an Observer that can keep a command's reads for a second,
// narrower one (observed/systemd.Observer).
type rechecker interface {
	KeepReads()
	Recheck()
}

// ledgerApply records in the restart ledger what the pass saw: the
// restarts since the last agent's (or apply's) baseline, as the pass saw
// them before its steps, then, when a step changed something, its own
// restarts and starts (cause agent) from its observation after the
// steps; the baseline the next agent continues from is that last one.
// Without the second, the next agent found a new main process and no step
// of its own, and counted apply's restart as a manual one. A pass that
// changed nothing records too: on a host driven only by `apply` (cron, a
// CI job) the restarts since the last one are counted with the time they
// were seen, not at the next apply that happens to change something (an
// unchanged baseline is not written again). The agent does the same
// after each pass that changed something (reconcile.Loop.AfterSteps,
// telemetry.afterPass).
func ledgerApply(ctx context.Context, k *ledger.Keeper, pass, after reconcile.Result, now time.Time) {
	ledgerPass(ctx, k, pass, now)
	ledgerAfter(ctx, k, pass, after, now)
}

// ledgerPass is ledgerApply's first half: what the pass saw before its
// steps. apply runs it while it reads the host again.
func ledgerPass(ctx context.Context, k *ledger.Keeper, pass reconcile.Result, now time.Time) {
	if pass.Observed != nil {
		k.Observe(ctx, pass, now)
	}
}

// ledgerAfter is ledgerApply's second half, after ledgerPass: the
// observation after the steps, when a step changed something.
func ledgerAfter(ctx context.Context, k *ledger.Keeper, pass, after reconcile.Result, now time.Time) {
	if pass.Observed != nil && pass.Changed() && after.Observed != nil && after.Observed != pass.Observed {
		k.Observe(ctx, reconcile.Result{Observed: after.Observed, Desired: pass.Desired}, now)
	}
}

// statusAfter is what `reconciler status` should show after an apply pass:
// the pass planned from what it observed before its steps, so when a step
// changed something the host is observed again (a dry-run pass: nothing is
// written or executed) and that is the snapshot; a failed step keeps the
// pass's own result, which names it. The same read tells apply whether
// the units it started stayed up (reconcile.NotStayedUp): a Type=exec
// service's start is done once its process exec'd, so one that exits at
// once is failed or in auto-restart here, read stayUp (apply --stay-up,
// default reconcile.StayUpWindow) after the pass's last start; one that
// dies later is not seen by this apply (status and run see it). stayUp 0
// reads at once: what the read itself takes is then the whole window
// (issue 12's "one changed manifest" budget has no room for a wait).
//
// readErr is that read's failure (the snapshot then shows the pass):
// apply cannot judge, and says so with exit 1.
//
// recheck is called before that second read: with the systemd backend it
// reads the properties only of the units a step's job touched or whose
// status, files or main process's start changed, the rest as the pass
// read them (KeepReads); at 1000 units the full read it replaces took
// ~70 ms of each `apply` that acted.
func statusAfter(ctx context.Context, r *reconcile.Reconciler, res reconcile.Result, err error, recheck func(), stayUp time.Duration, log *zap.Logger) (_ reconcile.Result, _ error, readErr error) {
	if err != nil {
		return res, err, nil
	}
	for _, o := range res.Outcomes {
		if o.Err != nil {
			return res, err, nil
		}
	}
	if !res.Changed() {
		return res, err, nil
	}
	if stayUp > 0 && reconcile.StartedSomething(res) {
		// What is left of the window since the pass's last start.
		t := time.NewTimer(stayUp - time.Since(res.Started.Add(res.Took)))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	recheck()
	after, aerr := r.Reconcile(ctx, reconcile.Options{DryRun: true, Quiet: true, SameDesired: true})
	if aerr != nil || after.Observed == nil {
		log.Warn("state after the pass not observed; status shows the pass", zap.Error(aerr))
		if aerr == nil {
			aerr = errors.New("nothing observed")
		}
		return res, err, aerr
	}
	return after, nil, nil
}
