package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/ledger"
	"resil.dev/resil/reconcile/store"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// scrape fetches url and parses it with the exposition-format parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// value returns the value of the series of family name with exactly the
// given labels (nil when absent).
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) *float64 {
	f := fams[name]
	if f == nil {
		return nil
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		ok := true
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				ok = false
			}
		}
		if !ok {
			continue
		}
		var v float64
		switch {
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Histogram != nil:
			v = float64(m.GetHistogram().GetSampleCount())
		}
		return &v
	}
	return nil
}

func want(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string, w float64) {
	t.Helper()
	v := value(fams, name, labels)
	switch {
	case v == nil:
		t.Errorf("%s%v: absent, want %g", name, labels, w)
	case *v != w:
		t.Errorf("%s%v = %g, want %g", name, labels, *v, w)
	}
}

func webUnit(n, pid uint32, start uint64) *observed.State {
	return &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{
		"web.service": {Name: "web.service", Owner: "Service/web", File: []byte("x"), LoadState: "loaded", ActiveState: "active", SubState: "running",
			Result: "success", NRestarts: n, MainPID: pid, ExecMainStartTimestamp: start},
	}}
}

// TestTelemetryLedgerAlertsMetrics drives the after-pass hook through a
// crash loop with an injected clock: ledger rows and Restarted events, one
// storm (event, metric, hook run) per window, a manual restart, and the
// metrics as scraped over HTTP; pruning the object deletes its series.
func TestTelemetryLedgerAlertsMetrics(t *testing.T) {
	log := zaptest.NewLogger(t)
	dir := t.TempDir()
	clk := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s, err := store.Open(filepath.Join(dir, store.FileName), store.Options{Now: clk.Now, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := newMetrics(time.Minute, clk.Now)
	srv := httptest.NewServer(m.handler())
	defer srv.Close()
	ring := reconcile.NewRing(64, log)
	rec := reconcile.Fanout{ring, s}
	tel := newTelemetry(s, m, rec, log, "systemd", ledger.Policy{Restarts: 100, Within: time.Hour}, 10*time.Second)
	tel.now = clk.Now
	hookOut := filepath.Join(dir, "hook.out")
	web := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"},
		Service: &desired.ServiceSpec{Command: []string{"/bin/sleep", "infinity"}, Alert: &desired.Alert{Restarts: 3, Within: "1h",
			Command: []string{"/bin/sh", "-c", `read -r json; echo "$RESIL_REASON $RESIL_OBJECT $json" >> ` + hookOut}}}}
	ctx, cancel := context.WithCancel(context.Background())
	hooksDone := make(chan error, 1)
	go func() { hooksDone <- tel.runHooks(ctx) }()
	defer func() { cancel(); <-hooksDone }()

	if code := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("readyz before the first pass: %d", code)
	}
	pass := func(obs *observed.State, outcomes []reconcile.StepOutcome, objs ...*desired.Object) {
		t.Helper()
		tel.afterPass(reconcile.Result{Observed: obs, Desired: objs, Outcomes: outcomes, Took: 20 * time.Millisecond}, nil)
	}
	hookLines := func() []string {
		data, _ := os.ReadFile(hookOut)
		return strings.Fields(strings.TrimSpace(strings.ReplaceAll(string(data), "\n", " \n ")))
	}
	pass(webUnit(0, 100, 1000), nil, web) // baseline
	clk.Add(time.Minute)
	pass(webUnit(2, 102, 3000), []reconcile.StepOutcome{{Step: actuators.Step{Op: actuators.OpDaemonReload}, Duration: 70 * time.Millisecond}}, web)
	clk.Add(time.Minute)
	pass(webUnit(3, 103, 4000), nil, web) // third restart within 1h: storm
	clk.Add(time.Minute)
	pass(webUnit(6, 106, 7000), nil, web) // same window: no second storm
	clk.Add(time.Minute)
	pass(webUnit(6, 107, 8000), nil, web) // manual restart: NRestarts stays
	waitFor(t, "first hook run", func() bool { return strings.Count(readFile(hookOut), "\n") == 1 })

	fams := scrape(t, srv.URL+"/metrics")
	want(t, fams, "resil_service_restarts_total", map[string]string{"object": "Service/web", "cause": "auto"}, 6)
	want(t, fams, "resil_service_restarts_total", map[string]string{"object": "Service/web", "cause": "manual"}, 1)
	want(t, fams, "resil_restart_storms_total", map[string]string{"object": "Service/web"}, 1)
	want(t, fams, "resil_reconcile_passes_total", map[string]string{"result": "success"}, 5)
	want(t, fams, "resil_reconcile_passes_total", map[string]string{"result": "error"}, 0)
	want(t, fams, "resil_reconcile_duration_seconds", nil, 5)
	want(t, fams, "resil_daemon_reload_duration_seconds", nil, 1)
	want(t, fams, "resil_objects", map[string]string{"kind": "Service", "state": string(reconcile.StateConverged)}, 1)
	want(t, fams, "resil_objects", map[string]string{"kind": "Service", "state": string(reconcile.StateFailed)}, 0)
	want(t, fams, "resil_object_ready", map[string]string{"object": "Service/web"}, 1)
	want(t, fams, "resil_last_successful_reconcile_timestamp_seconds", nil, float64(clk.Now().Unix()))

	// A window after the storm, with 3 more restarts in the last hour: one more.
	clk.Add(61 * time.Minute)
	pass(webUnit(9, 110, 9000), nil, web)
	waitFor(t, "second hook run", func() bool { return strings.Count(readFile(hookOut), "\n") == 2 })
	clk.Add(time.Minute)
	pass(webUnit(12, 113, 9900), nil, web)
	time.Sleep(200 * time.Millisecond)
	if lines := strings.Split(strings.TrimSpace(readFile(hookOut)), "\n"); len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "RestartStorm Service/web {") || !strings.Contains(lines[0], `"reason":"RestartStorm"`) {
		t.Errorf("hook runs: %q", hookLines())
	}
	ledgerRows, err := s.Restarts(context.Background(), "Service/web", time.Time{})
	if err != nil || len(ledgerRows) != 13 {
		t.Errorf("ledger: %d rows, %v; want 13", len(ledgerRows), err)
	}
	evs, err := s.Events(context.Background(), store.Query{Object: "web"})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, e := range evs {
		counts[string(e.Reason)+" "+e.Message] = e.Count
	}
	if counts["Restarted web.service restarted (cause auto)"] != 12 || counts["Restarted web.service restarted (cause manual)"] != 1 ||
		counts["RestartStorm 3 or more restarts within 1h0m0s"] != 2 {
		t.Errorf("events: %v", counts)
	}

	// Health: fresh heartbeat; stale after the limit.
	if code := get(t, srv.URL+"/healthz"); code != http.StatusOK {
		t.Errorf("healthz: %d", code)
	}
	if code := get(t, srv.URL+"/readyz"); code != http.StatusOK {
		t.Errorf("readyz: %d", code)
	}
	clk.Add(2 * time.Minute)
	if code := get(t, srv.URL+"/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("healthz with a stale heartbeat: %d", code)
	}

	// The object is pruned: its series go.
	pass(&observed.State{Backend: "systemd", Units: map[string]*observed.Unit{}}, nil)
	fams = scrape(t, srv.URL+"/metrics")
	if v := value(fams, "resil_service_restarts_total", map[string]string{"object": "Service/web", "cause": "auto"}); v != nil {
		t.Errorf("series of a pruned object still exported: %g", *v)
	}
	if v := value(fams, "resil_restart_storms_total", map[string]string{"object": "Service/web"}); v != nil {
		t.Errorf("storm series of a pruned object still exported")
	}
	objs, _, err := s.Status(context.Background())
	if err != nil || len(objs) != 0 {
		t.Errorf("snapshot after prune: %+v %v", objs, err)
	}
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func readFile(p string) string {
	data, _ := os.ReadFile(p)
	return string(data)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestObjectStatuses(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	svcObj := func(name string, drift desired.DriftPolicy) *desired.Object {
		return &desired.Object{Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: name}, Service: &desired.ServiceSpec{Drift: drift}}
	}
	unit := func(name, active, sub, result string) *observed.Unit {
		return &observed.Unit{Name: name, File: []byte("x"), LoadState: "loaded", ActiveState: active, SubState: sub, Result: result}
	}
	res := reconcile.Result{
		Desired: []*desired.Object{svcObj("ok", ""), svcObj("fixing", ""), svcObj("quiet", desired.DriftReport), svcObj("crash", ""), svcObj("broken", ""), svcObj("applyfail", ""), svcObj("new", ""), svcObj("masked", "")},
		Observed: &observed.State{Units: map[string]*observed.Unit{
			"ok.service": unit("ok.service", "active", "running", "success"), "fixing.service": unit("fixing.service", "inactive", "dead", "success"),
			"quiet.service": unit("quiet.service", "inactive", "dead", "success"), "crash.service": unit("crash.service", "failed", "failed", "exit-code"),
			"broken.service": unit("broken.service", "active", "running", "success"), "applyfail.service": unit("applyfail.service", "active", "running", "success"),
			"masked.service":     {Name: "masked.service", LoadState: "masked", ActiveState: "inactive", SubState: "dead"},
			"nolastgood.service": {Name: "nolastgood.service", File: []byte("x"), LoadState: "loaded", ActiveState: "failed", SubState: "failed", Result: "exit-code", Owner: "Service/nolastgood"},
		}},
		Plan: reconcile.Plan{Findings: []reconcile.Finding{
			{Object: "Service/fixing", Reason: reconcile.ReasonStopped, Message: "inactive; starting", Warning: true, Enforced: true},
			{Object: "Service/quiet", Reason: reconcile.ReasonStopped, Message: "inactive; left as is", Warning: true},
			{Object: "Service/crash", Reason: reconcile.ReasonFailed, Message: "failed", Warning: true},
			{Object: "Service/broken", Reason: reconcile.ReasonLastGoodRetained, Message: "broken.yaml is invalid", Warning: true},
			// Broken before the agent ever saw it valid: in no list of
			// objects, and still a row, Invalid, showing what runs of it.
			{Object: "Service/nolastgood", Reason: reconcile.ReasonLastGoodRetained, Message: "nolastgood.yaml is invalid; it is not applied", Warning: true},
			// Paused too: still one row, Invalid.
			{Object: "Service/nolastgood", Reason: reconcile.ReasonPaused, Message: "paused until 14:32 by alice: hotfix"},
		}},
		Outcomes: []reconcile.StepOutcome{
			{Step: actuators.Step{Op: actuators.OpStart, Object: "Service/fixing", Unit: "fixing.service"}, Result: actuators.Changed},
			{Step: actuators.Step{Op: actuators.OpStart, Object: "Service/applyfail", Unit: "applyfail.service"}, Err: errors.New("boom")},
			{Step: actuators.Step{Op: actuators.OpStart, Object: "Service/new", Unit: "new.service"}, Result: actuators.Changed},
		},
	}
	var got []string
	for _, s := range objectStatuses(res, now) {
		got = append(got, fmt.Sprintf("%s %s %s %q", s.Name, s.State, s.Observed, s.Desired))
	}
	wantRows := []string{
		`applyfail Failed active (running) "running"`,
		`broken Invalid active (running) "running"`,
		`crash Failed failed (exit-code) "running"`,
		`fixing Converging inactive (dead) "running"`,
		`masked Converged masked "running"`,
		`new Converging absent "running"`,
		`nolastgood Invalid failed (exit-code) "invalid"`,
		`ok Converged active (running) "running"`,
		`quiet Drifted inactive (dead) "running"`,
	}
	if strings.Join(got, "\n") != strings.Join(wantRows, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantRows, "\n"))
	}
}

// The metrics server retries a busy port, serves once it is free, and
// returns when ctx is done.
func TestServeMetricsRetriesBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := busy.Addr().String()
	m := newMetrics(time.Minute, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveMetrics(addr, m.handler(), zaptest.NewLogger(t), 50*time.Millisecond)(ctx) }()
	time.Sleep(150 * time.Millisecond)
	busy.Close()
	waitFor(t, "metrics served after the port freed", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable // no pass yet
	})
	_ = scrape(t, "http://"+addr+"/metrics")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not return after ctx was done")
	}
}

// resil_invalid_manifests counts the files that failed to load, so a broken
// file that names no object (no Invalid row) still raises the alert.
func TestInvalidManifestsMetric(t *testing.T) {
	m := newMetrics(time.Minute, nil)
	srv := httptest.NewServer(m.handler())
	defer srv.Close()
	twoFiles := errors.Join(&desired.FieldError{File: "/etc/resil.d/a.yaml", Line: 3, Detail: "x"},
		&desired.FieldError{File: "/etc/resil.d/a.yaml", Line: 9, Detail: "y"}, &desired.FieldError{File: "/etc/resil.d/b.yaml", Detail: "z"})
	for _, tc := range []struct {
		name    string
		loadErr error
		busy    []string
		passErr error
		want    float64
	}{
		{"two files, three errors", twoFiles, nil, nil, 2},
		{"a failed pass that read nothing keeps the count", nil, nil, errors.New("observe: boom"), 2},
		{"unreadable directory", fmt.Errorf("%w: permission denied", desired.ErrUnreadable), nil, nil, 1},
		{"all valid", nil, nil, nil, 0},
		// A new manifest open for writing (QA: not counted).
		{"a file open for writing", nil, []string{"/etc/resil.d/new.yaml"}, nil, 1},
		{"and two invalid files", twoFiles, []string{"/etc/resil.d/new.yaml"}, nil, 3},
	} {
		m.observePass(reconcile.Result{LoadErr: tc.loadErr, Busy: tc.busy}, tc.passErr)
		want(t, scrape(t, srv.URL+"/metrics"), "resil_invalid_manifests", nil, tc.want)
	}
}
