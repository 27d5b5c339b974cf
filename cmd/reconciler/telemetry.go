package main

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"resil.dev/resil/actuators/process"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/journald"
	"resil.dev/resil/reconcile/ledger"
	"resil.dev/resil/reconcile/store"
)

// telemetry is the agent's after-pass hook for everything observability:
// the restart ledger with its storm alerts and hooks (reconcile/ledger),
// the status snapshot and the metrics. It runs on the loop goroutine;
// alert hooks run on the goroutine of runHooks, which run's errgroup owns.
type telemetry struct {
	store   *store.Store
	metrics *metrics // nil when --metrics-addr is empty
	ledger  *ledger.Keeper
	log     *zap.Logger
	now     func() time.Time
	backend string
	// start is this process's start time (store.Agent.PIDStart).
	start uint64
	// command is "run" or "apply" (store.Agent.Command); maxLease the
	// command's --max-lease (store.Agent.MaxLease).
	command  string
	maxLease time.Duration

	last  []store.ObjectStatus
	known map[string]bool
}

func newTelemetry(s *store.Store, m *metrics, events reconcile.Recorder, log *zap.Logger, backend string, def ledger.Policy, hookTimeout time.Duration) *telemetry {
	t := &telemetry{store: s, metrics: m, log: log.Named("telemetry"), now: time.Now, backend: backend, known: map[string]bool{}}
	t.start, _ = process.StartTime(os.Getpid())
	t.ledger = ledger.NewKeeper(ledger.Config{Store: s, Events: events, Sink: t, Log: log, Default: def, HookTimeout: hookTimeout,
		BootID: ledger.ReadBootID(ledger.BootIDPath)})
	return t
}

// Restarted implements ledger.Sink.
func (t *telemetry) Restarted(object string, cause ledger.Cause, n int) {
	if t.metrics != nil {
		t.metrics.restarted(object, cause, n)
	}
	t.known[object] = true // its series go with the object
}

// Storm implements ledger.Sink.
func (t *telemetry) Storm(object string) {
	if t.metrics != nil {
		t.metrics.storm(object)
	}
}

func (t *telemetry) afterPass(res reconcile.Result, err error) {
	now := t.now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if t.metrics != nil {
		t.metrics.observePass(res, err)
	}
	if res.After == nil || res.Observed == nil {
		t.ledger.Observe(ctx, res, now)
		t.snapshot(ctx, res, err, now)
		return
	}
	// The steps' effects, observed right after them (Loop.AfterSteps):
	// the ledger counts the agent's own restarts now, as apply does, and
	// status shows what the steps left. A failed step keeps the pass's
	// own result in status, which names it.
	ledgerApply(ctx, t.ledger, res, *res.After, now)
	shown := *res.After
	if err != nil || res.Failed() > 0 {
		shown = res
	}
	t.snapshot(ctx, shown, err, now)
}

// runHooks runs alert commands until ctx is done.
func (t *telemetry) runHooks(ctx context.Context) error { return t.ledger.RunHooks(ctx) }

// snapshot writes the status rows and agent facts, and the object metrics.
func (t *telemetry) snapshot(ctx context.Context, res reconcile.Result, err error, now time.Time) {
	if res.Observed != nil {
		t.last = objectStatuses(res, now)
	}
	a := store.Agent{LastPass: now, PID: os.Getpid(), PIDStart: t.start, Backend: t.backend, Version: buildVersion(), Command: t.command, MaxLease: t.maxLease}
	if err != nil {
		a.PassError = err.Error()
	}
	if res.LoadErr != nil {
		a.LoadError = res.LoadErr.Error()
	}
	a.Busy = strings.Join(res.Busy, "\n")
	if perr := t.store.PutStatus(ctx, t.last, a); perr != nil {
		t.log.Error("status snapshot not written", zap.Error(perr))
	}
	if t.metrics == nil || res.Observed == nil {
		return
	}
	cur := map[string]bool{}
	for _, o := range t.last {
		cur[o.Object] = true
	}
	var gone []string
	for o := range t.known {
		if !cur[o] {
			gone = append(gone, o)
		}
	}
	t.known = cur
	t.metrics.setObjects(t.last, gone)
}

// obsFlags are run's flags for events, metrics and alerts.
type obsFlags struct {
	metricsAddr  string
	alertDefault string
	hookTimeout  time.Duration
	retention    time.Duration
	maxRows      int
	journal      bool
}

func addObsFlags(f *pflag.FlagSet) *obsFlags {
	o := &obsFlags{}
	f.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:9469", "serve Prometheus /metrics, /healthz and /readyz here (empty: off)")
	f.StringVar(&o.alertDefault, "alert-default", "10/1h", "restart-storm alert of services without spec.alert: RESTARTS/WITHIN, or off")
	f.DurationVar(&o.hookTimeout, "alert-hook-timeout", 30*time.Second, "upper bound of one spec.alert.command run")
	f.DurationVar(&o.retention, "event-retention", store.DefaultRetention, "keep events this long after their last repeat")
	f.IntVar(&o.maxRows, "event-max-rows", store.DefaultMaxRows, "keep at most this many events (oldest go first)")
	f.BoolVar(&o.journal, "journal", true, "also send events to the systemd journal (RESIL_* fields) when its socket answers")
	return o
}

// observability is what run wires in: the recorder fan-out, an after-pass
// hook, goroutines for run's errgroup, and a close.
type observability struct {
	recorder   reconcile.Recorder
	afterPass  func(reconcile.Result, error)
	background []func(ctx context.Context) error
	close      func()
	metrics    *metrics // nil when --metrics-addr is empty
	// stopped records, in the restart ledger, the state the backend left
	// after stopping every service at exit (ledger.Keeper.SaveFinal).
	stopped func(ctx context.Context, st *observed.State)
}

// open opens the event store, the journal recorder and the metrics
// listener. stale is how old the last pass may be before /healthz fails.
func (o *obsFlags) open(g *globals, log *zap.Logger, backend string, ring *reconcile.Ring, stale time.Duration) (*observability, error) {
	def, err := ledger.ParsePolicy(o.alertDefault)
	if err != nil {
		return nil, exitCode(2, err)
	}
	s, err := store.Open(storePath(g), store.Options{Retention: o.retention, MaxRows: o.maxRows, Log: log})
	if err != nil {
		return nil, err
	}
	// The store's commits happen beside the pass, not between its steps
	// (reconcile.Queue); every pass's events are in it before the
	// after-pass hooks run. The hooks record theirs at once (direct): an
	// alert's command may read the store as soon as it starts.
	q := reconcile.NewQueue(s)
	rec, direct := reconcile.Fanout{ring, q}, reconcile.Fanout{ring, s}
	if o.journal && journald.Enabled() {
		j := journald.New(nil, log)
		rec, direct = append(rec, j), append(direct, j)
		log.Info("events go to the journal too")
	}
	ob := &observability{recorder: rec, close: func() { q.Flush(); s.Close() }}
	var m *metrics
	if o.metricsAddr != "" {
		m = newMetrics(stale, nil)
		ob.background = append(ob.background, serveMetrics(o.metricsAddr, m.handler(), log.Named("metrics"), 5*time.Second))
	}
	ob.metrics = m
	t := newTelemetry(s, m, direct, log, backend, def, o.hookTimeout)
	t.command = "run"
	if g.safety != nil {
		t.maxLease = g.safety.maxLease
	}
	ob.afterPass = func(res reconcile.Result, err error) {
		q.Flush()
		t.afterPass(res, err)
	}
	ob.stopped = t.ledger.SaveFinal
	ob.background = append(ob.background, q.Run, t.runHooks, func(ctx context.Context) error { return s.RunRetention(ctx, 10*time.Minute) })
	return ob, nil
}
