package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/ledger"
	"resil.dev/resil/reconcile/store"
)

// metrics are the agent's Prometheus metrics. Per-object series exist only
// for objects the agent manages; Forget deletes them when an object goes.
type metrics struct {
	reg            *prometheus.Registry
	passDuration   prometheus.Histogram
	passes         *prometheus.CounterVec
	objects        *prometheus.GaugeVec
	drift          *prometheus.CounterVec
	restarts       *prometheus.CounterVec
	reloadDuration prometheus.Histogram
	lastSuccess    prometheus.Gauge
	storms         *prometheus.CounterVec
	paused         *prometheus.GaugeVec
	objectReady    *prometheus.GaugeVec
	// rollout: services by rollout state, 1 while halted
	rolloutServices *prometheus.GaugeVec
	rolloutHalted   prometheus.Gauge
	invalidFiles    prometheus.Gauge
	// git source (registered by enableSource; methods in source.go)
	sourceRevision    *prometheus.GaugeVec
	sourceLastFetch   prometheus.Gauge
	sourceFetchErrors prometheus.Counter
	sourceRejected    *prometheus.CounterVec

	// health
	mu        sync.Mutex
	heartbeat time.Time
	ready     bool
	stale     time.Duration
	now       func() time.Time
	// findings of the previous pass, for drift onsets
	prevFindings map[string]bool
}

func newMetrics(stale time.Duration, now func() time.Time) *metrics {
	if now == nil {
		now = time.Now
	}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		passDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "resil_reconcile_duration_seconds", Help: "Duration of reconcile passes (load, observe, plan, apply).",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resil_reconcile_passes_total", Help: "Reconcile passes by result (success, error).",
		}, []string{"result"}),
		objects: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "resil_objects", Help: "Desired objects by kind and state (Converged, Converging, Drifted, Failed, Invalid) after the last pass.",
		}, []string{"kind", "state"}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resil_drift_events_total", Help: "Drift and failure findings by reason, counted when a finding appears (not on every pass it persists).",
		}, []string{"reason"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resil_service_restarts_total", Help: "Restarts of managed services by object and cause (auto, watchdog, agent, liveness, manual).",
		}, []string{"object", "cause"}),
		reloadDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "resil_daemon_reload_duration_seconds", Help: "Duration of daemon-reload steps.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "resil_last_successful_reconcile_timestamp_seconds", Help: "Unix time of the last pass that finished without error.",
		}),
		storms: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resil_restart_storms_total", Help: "Restart-storm alerts fired, by object.",
		}, []string{"object"}),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "resil_object_paused", Help: "1 while a pause lease holds the object (reconciler pause), else 0.",
		}, []string{"object"}),
		objectReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "resil_object_ready", Help: "1 when a service desired running is ready (active, and its readiness probe passing), 0 when not or not known yet, after the last pass.",
		}, []string{"object"}),
		rolloutServices: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "resil_rollout_services", Help: "Services of the rollout in flight after the last pass: pending (keeping their previous version), unready (restarted, not ready yet), failed (halting it).",
		}, []string{"state"}),
		rolloutHalted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "resil_rollout_halted", Help: "1 while a failed service halts the rollout of the agent's restarts (reconciler rollout status), else 0.",
		}),
		invalidFiles: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "resil_invalid_manifests", Help: "Manifest files (or drop-ins) that failed to load in the last pass: broken, empty, refused by the owner check, or open for writing (not read); 1 when the directory is unreadable. What they held keeps its last good version.",
		}),
		sourceRevision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "resil_source_revision_info", Help: "The revision (short commit) of the followed ref the git source deployed: 1 for the deployed one.",
		}, []string{"revision", "ref"}),
		sourceLastFetch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "resil_source_last_fetch_timestamp_seconds", Help: "Unix time of the git source's last successful fetch.",
		}),
		sourceFetchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "resil_source_fetch_errors_total", Help: "Failed fetches of the git source.",
		}),
		sourceRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resil_source_revisions_rejected_total", Help: "Head revisions the git source refused (unsigned, badly signed, force-pushed, or invalid manifests), once per revision.",
		}, []string{"ref"}),
		stale:        stale,
		now:          now,
		prevFindings: map[string]bool{},
	}
	m.heartbeat = now()
	m.reg.MustRegister(m.passDuration, m.passes, m.objects, m.drift, m.restarts, m.reloadDuration, m.lastSuccess, m.storms, m.objectReady, m.paused,
		m.rolloutServices, m.rolloutHalted, m.invalidFiles, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"success", "error"} {
		m.passes.WithLabelValues(r)
	}
	m.observeRollout(nil)
	return m
}

// observePass records one pass: duration, result, daemon-reload timings,
// drift onsets, and the heartbeat.
func (m *metrics) observePass(res reconcile.Result, err error) {
	if res.Took > 0 {
		m.passDuration.Observe(res.Took.Seconds())
	}
	if err != nil {
		m.passes.WithLabelValues("error").Inc()
	} else {
		m.passes.WithLabelValues("success").Inc()
		m.lastSuccess.Set(float64(m.now().UnixNano()) / 1e9)
	}
	if err == nil || res.LoadErr != nil {
		m.invalidFiles.Set(float64(invalidFiles(res.LoadErr) + len(res.Busy)))
	}
	for _, o := range res.Outcomes {
		if o.Step.Op == actuators.OpDaemonReload && o.Skipped == "" {
			m.reloadDuration.Observe(o.Duration.Seconds())
		}
	}
	if res.Observed != nil {
		cur := map[string]bool{}
		for _, f := range res.Plan.Findings {
			if !f.Warning {
				continue
			}
			k := f.Object + "\x00" + f.Unit + "\x00" + string(f.Reason)
			cur[k] = true
			if !m.prevFindings[k] {
				m.drift.WithLabelValues(string(f.Reason)).Inc()
			}
		}
		m.prevFindings = cur
		m.observeRollout(res.Plan.Rollout)
	}
	m.mu.Lock()
	m.heartbeat = m.now()
	m.ready = true
	m.mu.Unlock()
}

// observeRollout sets the rollout gauges from a pass's report (nil: none).
func (m *metrics) observeRollout(rep *reconcile.RolloutReport) {
	var pending, unready, failed, halted float64
	if rep != nil {
		pending, unready, failed = float64(len(rep.Pending())), float64(len(rep.NotReady)), float64(len(rep.Failed))
		if rep.Halted {
			halted = 1
		}
	}
	m.rolloutServices.WithLabelValues("pending").Set(pending)
	m.rolloutServices.WithLabelValues("unready").Set(unready)
	m.rolloutServices.WithLabelValues("failed").Set(failed)
	m.rolloutHalted.Set(halted)
}

func (m *metrics) restarted(object string, cause ledger.Cause, n int) {
	m.restarts.WithLabelValues(object, string(cause)).Add(float64(n))
}

func (m *metrics) storm(object string) { m.storms.WithLabelValues(object).Inc() }

// invalidFiles counts the files a load error names (1 for an error that
// names none: the directory unreadable).
func invalidFiles(err error) int {
	if err == nil {
		return 0
	}
	files := map[string]bool{}
	for _, fe := range desired.FieldErrors(err) {
		files[fe.File] = true
	}
	return max(len(files), 1)
}

// setObjects sets resil_objects from the snapshot and deletes the series
// of objects that are no longer desired.
func (m *metrics) setObjects(objs []store.ObjectStatus, gone []string) {
	counts := map[[2]string]int{}
	kinds := map[string]bool{}
	for _, k := range desired.Kinds() {
		kinds[string(k)] = true
	}
	for _, o := range objs {
		counts[[2]string{o.Kind, o.State}]++
		kinds[o.Kind] = true
	}
	for k := range kinds {
		// Every state of every kind (0 when none), so a state that
		// empties reads 0, not stale.
		for _, s := range reconcile.States {
			m.objects.WithLabelValues(k, string(s)).Set(float64(counts[[2]string{k, string(s)}]))
		}
	}
	for _, o := range objs {
		v := 0.0
		if o.State == string(reconcile.StatePaused) {
			v = 1
		}
		m.paused.WithLabelValues(o.Object).Set(v)
		switch o.Ready {
		case "":
			m.objectReady.DeleteLabelValues(o.Object)
		case reconcile.ReadyYes:
			m.objectReady.WithLabelValues(o.Object).Set(1)
		default:
			m.objectReady.WithLabelValues(o.Object).Set(0)
		}
	}
	for _, obj := range gone {
		m.objectReady.DeleteLabelValues(obj)
		m.restarts.DeletePartialMatch(prometheus.Labels{"object": obj})
		m.storms.DeleteLabelValues(obj)
		m.paused.DeleteLabelValues(obj)
	}
}

// healthy reports whether the loop finished a pass recently.
func (m *metrics) healthy() (bool, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	age := m.now().Sub(m.heartbeat)
	return age < m.stale, age
}

func (m *metrics) isReady() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready
}

// handler serves /metrics, /healthz and /readyz.
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		ok, age := m.healthy()
		if !ok {
			http.Error(w, fmt.Sprintf("loop stalled: last pass %s ago (limit %s)", age.Round(time.Second), m.stale), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok: last pass %s ago\n", age.Round(time.Millisecond))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.isReady() {
			http.Error(w, "first pass not done", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	addDebugHandlers(mux) // RESIL_DEBUG_PPROF=1 only (debugpprof.go)
	return mux
}

// serveMetrics returns the metrics server's goroutine body for run's
// errgroup: it listens on addr and serves until ctx is done, then shuts
// down and returns. A failed listen (port taken) is logged and retried
// every retry, like kubelet's healthz server: a busy port must not stop
// the agent from converging the host.
func serveMetrics(addr string, h http.Handler, log *zap.Logger, retry time.Duration) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		for {
			ln, err := net.Listen("tcp", addr)
			if err == nil {
				return serveOn(ctx, ln, h, log)
			}
			log.Error("metrics listener failed, retrying", zap.String("addr", addr), zap.Duration("retry", retry), zap.Error(err))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(retry):
			}
		}
	}
}

func serveOn(ctx context.Context, ln net.Listener, h http.Handler, log *zap.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Info("metrics listening", zap.String("addr", ln.Addr().String()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}
