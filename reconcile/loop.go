package reconcile

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// Loop runs passes of a Reconciler, one at a time. Triggers call Kick; any
// number of kicks while a pass is pending collapse into one pass.
type Loop struct {
	R *Reconciler
	// Resync is the periodic full pass (default 5 min).
	Resync time.Duration
	// Settle absorbs a burst of writes after a kick (default 100 ms).
	Settle time.Duration
	// PassTimeout bounds one pass (default 5 min).
	PassTimeout time.Duration
	Log         *zap.Logger
	// AfterPass, if set, is called after every pass with its result (the
	// agent's heartbeat, sd_notify, status).
	AfterPass func(Result, error)
	// Kicked, if set, is called when a kick wakes the loop, before Settle:
	// the backend readies what the pass will need meanwhile (systemd: the
	// connection its first read uses). It must not block.
	Kicked func()
	// AfterSteps: after a pass whose steps changed something, observe
	// again (a dry-run pass on the same manifests, recording nothing) and
	// hand that to AfterPass in Result.After. Without it, what the steps
	// did (the agent's own restarts, a service it stopped) was seen only
	// by the next pass, maybe minutes later or by the next agent, which
	// counted the agent's restarts as manual ones; status meanwhile showed
	// the state from before the steps. With a watch-fed cache it reads
	// again only the units the steps touched.
	AfterSteps bool
	// Overlap sets Options.Overlap on the passes that are not full, and
	// starts an Options.Ahead read when a kick wakes the loop.
	Overlap bool

	kick chan struct{}
}

// loadAheadQuiet is how long the wake-ups after a kick must pause before
// the settle delay's load ahead begins (see LoadAhead).
const loadAheadQuiet = 5 * time.Millisecond

// NewLoop returns a loop with defaults filled in.
func NewLoop(r *Reconciler, log *zap.Logger) *Loop {
	return &Loop{R: r, Resync: 5 * time.Minute, Settle: 100 * time.Millisecond, PassTimeout: 5 * time.Minute,
		Log: log.Named("loop"), kick: make(chan struct{}, 1)}
}

// Kick asks for a pass; it never blocks.
func (l *Loop) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Run runs a first pass at once, then one per kick (after Settle), per
// Resync, and when a failing object's backoff ends. It returns when ctx is
// done; the only goroutines it starts are an Ahead read (Overlap) and a
// LoadAhead (Reconciler with a ManifestSeq), which it waits for after the
// pass that used them.
//
// The first pass does not wait for a kick that came before it (a backend
// or a watch kicks as it starts): it covers that kick. A select between
// the two picked the kick half the time and waited Settle for it (a
// process backend's cold start of 100 services began 100 ms late in half
// its runs).
func (l *Loop) Run(ctx context.Context) error {
	resync := time.NewTimer(l.Resync)
	defer resync.Stop()
	var requeue *time.Timer
	requeueC := func() <-chan time.Time {
		if requeue == nil {
			return nil
		}
		return requeue.C
	}
	var lastFull time.Time
	// wait returns when the next pass is due (full: the resync's), or
	// false when ctx is done; ahead is the read and la the load started
	// at a kick (the caller waits for them).
	wait := func() (full bool, ahead *Ahead, la *LoadAhead, ok bool) {
		select {
		case <-ctx.Done():
			return false, nil, nil, false
		case <-resync.C:
			return true, nil, nil, true
		case <-requeueC():
			requeue = nil
		case <-l.kick:
			if l.Kicked != nil {
				l.Kicked()
			}
			if l.Overlap && time.Since(lastFull) < l.Resync {
				// Not before a pass that will be full (it reads
				// everything itself).
				ahead = l.R.ObserveAhead(ctx)
			}
			if l.Settle > 0 {
				// The load ahead begins once the wake-ups have been
				// quiet for loadAheadQuiet (an editor's temporary file,
				// its rename and the renamed file are three events a few
				// µs apart: one load, not three), if the delay leaves
				// time for it.
				t := time.NewTimer(l.Settle)
				defer t.Stop()
				var quiet *time.Timer
				var quietC <-chan time.Time
				if l.Settle >= 2*loadAheadQuiet {
					quiet = time.NewTimer(loadAheadQuiet)
					defer quiet.Stop()
					quietC = quiet.C
				}
			settle:
				for {
					select {
					case <-ctx.Done():
						return false, ahead, la, false
					case <-l.kick:
						// Covered by the pass after the delay, as a kick
						// before it is; a load ahead begun before its
						// event begins again.
						switch {
						case la != nil:
							la = l.R.restartLoadAhead(la)
						case quietC != nil:
							quiet.Reset(loadAheadQuiet)
						}
					case <-quietC:
						quietC = nil
						la = l.R.StartLoadAhead()
					case <-t.C:
						break settle
					}
				}
			}
		}
		return false, ahead, la, true
	}
	for first := true; ; first = false {
		full := first
		var ahead *Ahead
		var la *LoadAhead
		if !first {
			var ok bool
			full, ahead, la, ok = wait()
			if !ok {
				ahead.Wait()
				la.Wait()
				return nil
			}
		}
		// Drain a kick that arrived before this pass (while settling, or
		// before the first): the pass covers it.
		select {
		case <-l.kick:
		default:
		}
		if ctx.Err() != nil {
			ahead.Wait()
			la.Wait()
			return nil
		}
		// Kicks reset the resync timer: a full read is also due when the
		// last one is a resync interval old.
		if full || time.Since(lastFull) >= l.Resync {
			full, lastFull = true, time.Now()
		}
		res, err := l.once(ctx, full, ahead, la)
		ahead.Wait()
		la.Wait()
		if l.AfterSteps && res.Changed() {
			res.After = l.afterSteps(ctx)
		}
		if l.AfterPass != nil {
			l.AfterPass(res, err)
		}
		if ctx.Err() != nil {
			return nil
		}
		resync.Reset(l.Resync)
		if res.RequeueAfter > 0 {
			if requeue != nil {
				requeue.Stop()
			}
			requeue = time.NewTimer(res.RequeueAfter)
		} else if err != nil && res.Plan.Empty() {
			// Could not even plan (observe failed): try again soon.
			if requeue == nil {
				requeue = time.NewTimer(5 * time.Second)
			}
		}
	}
}

// afterStepsTimeout bounds the observation after a pass's steps.
const afterStepsTimeout = 30 * time.Second

// afterSteps observes what the pass's steps left (AfterSteps). A stop of
// the agent does not cut it short: the steps happened whether or not the
// agent is stopping, and their restarts are the agent's. nil when the
// read failed (the next pass sees the steps' effects, as without it).
func (l *Loop) afterSteps(ctx context.Context) *Result {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), afterStepsTimeout)
	defer cancel()
	after, err := l.R.Reconcile(actx, Options{DryRun: true, Quiet: true, SameDesired: true})
	if err != nil || after.Observed == nil {
		l.Log.Warn("state after the pass's steps not observed", zap.Error(err))
		return nil
	}
	return &after
}

// once runs one pass; full (the first pass and each resync) asks the
// Observer for a full read past any watch-fed cache.
func (l *Loop) once(ctx context.Context, full bool, ahead *Ahead, la *LoadAhead) (Result, error) {
	pctx, cancel := context.WithTimeout(ctx, l.PassTimeout)
	defer cancel()
	start := time.Now()
	res, err := l.R.Reconcile(pctx, Options{Full: full, Overlap: l.Overlap, Ahead: ahead, LoadAhead: la})
	fields := []zap.Field{zap.Duration("took", time.Since(start)), zap.Int("objects", res.Objects),
		zap.Int("steps", len(res.Plan.Steps)), zap.Int("failed", res.Failed())}
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		l.Log.Warn("pass finished with errors", append(fields, zap.Error(err))...)
	case len(res.Plan.Steps) > 0:
		l.Log.Info("pass applied changes", fields...)
	default:
		l.Log.Debug("pass converged", fields...)
	}
	return res, err
}
