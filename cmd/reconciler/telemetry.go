package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/journald"
	"resil.dev/resil/reconcile/ledger"
	"resil.dev/resil/reconcile/store"
)

// telemetry is the agent's after-pass hook for everything observability:
// the restart ledger, restart-storm alerts and their hooks, the status
// snapshot and the metrics. It runs on the loop goroutine; alert hooks run
// on the goroutine of runHooks, which run's errgroup owns.
type telemetry struct {
	store   *store.Store
	metrics *metrics // nil when --metrics-addr is empty
	events  reconcile.Recorder
	log     *zap.Logger
	now     func() time.Time
	backend string
	// def is the host-wide alert policy of services without spec.alert.
	def         ledger.Policy
	hookTimeout time.Duration
	hooks       chan hookJob

	prev    *observed.State
	between []reconcile.StepOutcome
	last    []store.ObjectStatus
	known   map[string]bool
	// bootID tags the saved baseline: counters from another boot are no baseline.
	bootID       string
	baselineRead bool
}

type hookJob struct {
	command []string
	event   reconcile.Event
}

func newTelemetry(s *store.Store, m *metrics, events reconcile.Recorder, log *zap.Logger, backend string, def ledger.Policy, hookTimeout time.Duration) *telemetry {
	return &telemetry{store: s, metrics: m, events: events, log: log.Named("telemetry"), now: time.Now, backend: backend,
		def: def, hookTimeout: hookTimeout, hooks: make(chan hookJob, 16), known: map[string]bool{}, bootID: readBootID()}
}

func readBootID() string {
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// baselineUnit is what the ledger needs of a unit across an agent restart.
type baselineUnit struct {
	Owner       string `json:"owner"`
	ActiveState string `json:"activeState"`
	SubState    string `json:"subState"`
	Result      string `json:"result"`
	NRestarts   uint32 `json:"nRestarts"`
	MainPID     uint32 `json:"mainPID"`
	Start       uint64 `json:"start"`
}

// saveBaseline stores the managed units' counters so that a restarted
// agent counts the restarts that happened while it was down.
func (t *telemetry) saveBaseline(ctx context.Context, obs *observed.State) {
	if t.bootID == "" {
		return
	}
	units := map[string]baselineUnit{}
	for n, u := range obs.Units {
		if ledger.Managed(u) {
			units[n] = baselineUnit{Owner: u.Owner, ActiveState: u.ActiveState, SubState: u.SubState, Result: u.Result,
				NRestarts: u.NRestarts, MainPID: u.MainPID, Start: u.ExecMainStartTimestamp}
		}
	}
	data, err := json.Marshal(units)
	if err == nil {
		err = t.store.PutBaseline(ctx, t.bootID, data)
	}
	if err != nil {
		t.log.Warn("ledger baseline not saved", zap.Error(err))
	}
}

// loadBaseline returns the last agent's final observation when it is from
// this boot (nil otherwise: after a reboot every start is a first start).
func (t *telemetry) loadBaseline(ctx context.Context) *observed.State {
	boot, data, err := t.store.Baseline(ctx)
	if err != nil || boot == "" || boot != t.bootID {
		return nil
	}
	var units map[string]baselineUnit
	if err := json.Unmarshal(data, &units); err != nil {
		return nil
	}
	st := &observed.State{Units: map[string]*observed.Unit{}}
	for n, b := range units {
		st.Units[n] = &observed.Unit{Name: n, Owner: b.Owner, ActiveState: b.ActiveState, SubState: b.SubState, Result: b.Result,
			NRestarts: b.NRestarts, MainPID: b.MainPID, ExecMainStartTimestamp: b.Start}
	}
	t.log.Info("restart ledger continues from the last agent's observation", zap.Int("units", len(st.Units)))
	return st
}

// parseAlertPolicy reads --alert-default: "N/DURATION" (10/1h) or "off".
func parseAlertPolicy(s string) (ledger.Policy, error) {
	if s == "" || s == "off" || s == "0" {
		return ledger.Policy{}, nil
	}
	n, d, ok := strings.Cut(s, "/")
	if !ok {
		return ledger.Policy{}, fmt.Errorf("--alert-default must be RESTARTS/WITHIN like 10/1h, or off; got %q", s)
	}
	restarts, err := strconv.Atoi(n)
	if err != nil || restarts < 1 {
		return ledger.Policy{}, fmt.Errorf("--alert-default: restarts must be a positive number, got %q", n)
	}
	within, err := time.ParseDuration(d)
	if err != nil || within <= 0 {
		return ledger.Policy{}, fmt.Errorf("--alert-default: bad window %q", d)
	}
	return ledger.Policy{Restarts: restarts, Within: within}, nil
}

// policy returns the alert policy of a service object.
func (t *telemetry) policy(o *desired.Object) ledger.Policy {
	if o == nil || o.Service == nil {
		return t.def
	}
	if a := o.Service.Alert; a != nil {
		return ledger.Policy{Restarts: a.Restarts, Within: a.Within.D(), Command: a.Command}
	}
	return t.def
}

func (t *telemetry) afterPass(res reconcile.Result, err error) {
	now := t.now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if t.metrics != nil {
		t.metrics.observePass(res, err)
	}
	if res.Observed != nil {
		t.ledger(ctx, res, now)
	} else {
		// No observation this pass: the steps (if any) still happened
		// before the next one.
		t.between = append(t.between, res.Outcomes...)
	}
	t.snapshot(ctx, res, err, now)
}

// ledger records the restarts since the previous observation and fires
// storm alerts.
func (t *telemetry) ledger(ctx context.Context, res reconcile.Result, now time.Time) {
	if t.prev == nil && !t.baselineRead {
		t.baselineRead = true
		t.prev = t.loadBaseline(ctx)
	}
	found := ledger.Detect(ledger.Input{Prev: t.prev, Cur: res.Observed, Between: t.between})
	t.prev, t.between = res.Observed, res.Outcomes
	// The baseline moves on only once the restarts it covers are recorded:
	// an agent killed in between counts them again on restart (at least
	// once) instead of losing them (found by the torture suite).
	defer t.saveBaseline(ctx, res.Observed)
	if len(found) == 0 {
		return
	}
	var rows []store.Restart
	objs := map[string]*desired.Object{}
	for _, o := range res.Desired {
		objs[o.ID()] = o
	}
	touched := map[string]string{}
	for _, r := range found {
		for range r.Count {
			rows = append(rows, store.Restart{Time: now, Object: r.Object, Unit: r.Unit, Cause: string(r.Cause)})
		}
		typ := reconcile.Warning
		if r.Cause == ledger.CauseAgent {
			typ = reconcile.Normal
		}
		t.events.Record(reconcile.Event{Time: now, Type: typ, Reason: reconcile.ReasonRestarted, Object: r.Object, Unit: r.Unit,
			Message: fmt.Sprintf("%s restarted (cause %s)", r.Unit, r.Cause), Count: r.Count})
		if t.metrics != nil {
			t.metrics.restarted(r.Object, r.Cause, r.Count)
		}
		touched[r.Object] = r.Unit
		t.known[r.Object] = true // its series go with the object
	}
	if err := t.store.AddRestarts(ctx, rows); err != nil {
		t.log.Error("restart ledger not written", zap.Error(err))
		return
	}
	for obj, unit := range touched {
		t.alert(ctx, objs[obj], obj, unit, now)
	}
}

// alert fires the storm alert of obj when its policy says so.
func (t *telemetry) alert(ctx context.Context, o *desired.Object, obj, unit string, now time.Time) {
	p := t.policy(o)
	if !p.Enabled() {
		return
	}
	count, err := t.store.RestartCount(ctx, obj, now.Add(-p.Within))
	if err != nil {
		t.log.Error("restart count", zap.Error(err))
		return
	}
	last, err := t.store.AlertFired(ctx, obj)
	if err != nil {
		t.log.Error("alert state", zap.Error(err))
		return
	}
	if !ledger.Storm(p, count, last, now) {
		return
	}
	if err := t.store.SetAlertFired(ctx, obj, now); err != nil {
		// Without the mark the alert could fire again next pass: skip it.
		t.log.Error("alert state not written; alert skipped", zap.String("object", obj), zap.Error(err))
		return
	}
	ev := reconcile.Event{Time: now, Type: reconcile.Warning, Reason: reconcile.ReasonRestartStorm, Object: obj, Unit: unit,
		Message: fmt.Sprintf("%d or more restarts within %s", p.Restarts, p.Within), Count: 1}
	t.events.Record(ev)
	t.log.Warn("restart storm", zap.String("object", obj), zap.Int("restarts", count), zap.Duration("within", p.Within))
	if t.metrics != nil {
		t.metrics.storm(obj)
	}
	if len(p.Command) == 0 {
		return
	}
	ev.Message = fmt.Sprintf("%d restarts within %s (threshold %d)", count, p.Within, p.Restarts)
	select {
	case t.hooks <- hookJob{command: p.Command, event: ev}:
	default:
		t.events.Record(reconcile.Event{Time: now, Type: reconcile.Warning, Reason: reconcile.ReasonAlertHookFailed, Object: obj, Unit: unit,
			Message: "alert hook not run: too many hooks pending"})
	}
}

// runHooks runs alert commands one at a time until ctx is done.
func (t *telemetry) runHooks(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-t.hooks:
			if err := runHook(ctx, j, t.hookTimeout); err != nil && ctx.Err() == nil {
				t.log.Warn("alert hook failed", zap.String("object", j.event.Object), zap.Error(err))
				t.events.Record(reconcile.Event{Type: reconcile.Warning, Reason: reconcile.ReasonAlertHookFailed, Object: j.event.Object,
					Unit: j.event.Unit, Message: fmt.Sprintf("alert hook %s: %v", j.command[0], err)})
			}
		}
	}
}

// runHook runs one alert command with the event as RESIL_* environment
// variables and as JSON on stdin, bounded by timeout.
func runHook(ctx context.Context, j hookJob, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, j.command[0], j.command[1:]...)
	cmd.WaitDelay = 2 * time.Second
	e := j.event
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	cmd.Stdin = bytes.NewReader(append(data, '\n'))
	cmd.Env = append(os.Environ(),
		"RESIL_OBJECT="+e.Object, "RESIL_REASON="+string(e.Reason), "RESIL_UNIT="+e.Unit, "RESIL_TYPE="+string(e.Type),
		"RESIL_MESSAGE="+e.Message, "RESIL_TIME="+e.Time.UTC().Format(time.RFC3339), "RESIL_COUNT="+strconv.Itoa(e.Count))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if hctx.Err() == context.DeadlineExceeded {
			return fmt.Errorf("timed out after %s", timeout)
		}
		msg := strings.TrimSpace(out.String())
		if len(msg) > 200 {
			msg = msg[len(msg)-200:]
		}
		if msg != "" {
			return fmt.Errorf("%w: %s", err, msg)
		}
		return err
	}
	return nil
}

// snapshot writes the status rows and agent facts, and the object metrics.
func (t *telemetry) snapshot(ctx context.Context, res reconcile.Result, err error, now time.Time) {
	if res.Observed != nil {
		t.last = objectStatuses(res, now)
	}
	a := store.Agent{LastPass: now, PID: os.Getpid(), Backend: t.backend, Version: buildVersion()}
	if err != nil {
		a.PassError = err.Error()
	}
	if res.LoadErr != nil {
		a.LoadError = res.LoadErr.Error()
	}
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
}

// open opens the event store, the journal recorder and the metrics
// listener. stale is how old the last pass may be before /healthz fails.
func (o *obsFlags) open(g *globals, log *zap.Logger, backend string, ring *reconcile.Ring, stale time.Duration) (*observability, error) {
	def, err := parseAlertPolicy(o.alertDefault)
	if err != nil {
		return nil, exitCode(2, err)
	}
	s, err := store.Open(storePath(g), store.Options{Retention: o.retention, MaxRows: o.maxRows, Log: log})
	if err != nil {
		return nil, err
	}
	rec := reconcile.Fanout{ring, s}
	if o.journal && journald.Enabled() {
		rec = append(rec, journald.New(nil, log))
		log.Info("events go to the journal too")
	}
	ob := &observability{recorder: rec, close: func() { s.Close() }}
	var m *metrics
	if o.metricsAddr != "" {
		m = newMetrics(stale, nil)
		ob.background = append(ob.background, serveMetrics(o.metricsAddr, m.handler(), log.Named("metrics"), 5*time.Second))
	}
	t := newTelemetry(s, m, rec, log, backend, def, o.hookTimeout)
	ob.afterPass = t.afterPass
	ob.background = append(ob.background, t.runHooks, func(ctx context.Context) error { return s.RunRetention(ctx, 10*time.Minute) })
	return ob, nil
}
