package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/reconcile/store"
)

const metricsURL = "http://127.0.0.1:9469/metrics"

// storedEvents runs `reconciler events -o json` with args inside the sandbox.
func (e *env) storedEvents(args ...string) []store.StoredEvent {
	e.t.Helper()
	out, errOut, code := e.reconciler(append([]string{"events", "-o", "json"}, args...)...)
	if code != 0 {
		e.t.Fatalf("events exit %d: %s%s", code, out, errOut)
	}
	var evs []store.StoredEvent
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		e.t.Fatalf("events output: %v\n%s", err, out)
	}
	return evs
}

// eventCount sums the counts of stored events with the reason whose
// message contains substr.
func (e *env) eventCount(object, reason, substr string) int {
	n := 0
	for _, ev := range e.storedEvents("--object", object) {
		if string(ev.Reason) == reason && strings.Contains(ev.Message, substr) {
			n += ev.Count
		}
	}
	return n
}

// journalEntries returns the sandbox journal's entries matching the
// journalctl field matches (FIELD=value), parsed from -o json.
func (e *env) journalEntries(matches ...string) []map[string]any {
	e.t.Helper()
	out, err := e.sb.Journal(e.ctx, append([]string{"-o", "json"}, matches...)...)
	if err != nil && !strings.Contains(err.Error(), "No entries") {
		e.t.Fatalf("journalctl: %v", err)
	}
	var entries []map[string]any
	for _, l := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			entries = append(entries, m)
		}
	}
	return entries
}

// metrics scrapes the agent's /metrics from inside the sandbox (its own
// network namespace) and parses the exposition format.
func (e *env) metrics() map[string]*dto.MetricFamily {
	e.t.Helper()
	out, err := e.sb.Run(e.ctx, "curl", "-sf", metricsURL)
	if err != nil {
		e.t.Fatalf("scrape: %v", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		e.t.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// metric returns the value of the series with exactly these labels (-1: absent).
func metric(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

// A crash-looping service: every systemd restart lands in the ledger as a
// Restarted event, the storm alert fires once at the threshold (one
// RestartStorm event, one hook run, the metric), and not again within the
// window however long the loop goes on.
func TestCrashLoopRestartStormAlert(t *testing.T) {
	sandbox.RequireProgram(t, "curl", "curl") // scrapes /metrics inside the sandbox
	e := newEnv(t)
	e.write("crash.yaml", fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: crash}
spec:
  command: ["/bin/sh", "-c", "sleep 0.3; exit 3"]
  restart: {policy: always, delay: 300ms, limit: {burst: 1000, interval: 60s}}
  alert:
    restarts: 3
    within: 1h
    command: ["/bin/sh", "-c", "read -r json; echo \"$RESIL_REASON $RESIL_OBJECT $RESIL_UNIT $json\" >> %s/hook.out"]
`, hostMount))
	a := e.startAgent()
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	e.eventually("Restarted events", 30*time.Second, func() bool { return e.eventCount("crash", "Restarted", "cause auto") >= 1 })
	e.eventually("RestartStorm event", 30*time.Second, func() bool { return e.eventCount("crash", "RestartStorm", "") == 1 })
	hookOut := filepath.Join(e.host, "hook.out")
	e.eventually("hook run", 20*time.Second, func() bool { data, _ := os.ReadFile(hookOut); return len(data) > 0 })
	// Let the loop run well past the threshold.
	nAt := func() int { n := 0; fmt.Sscan(e.prop("crash.service", "NRestarts"), &n); return n }
	start := nAt()
	e.eventually("several more restarts", 30*time.Second, func() bool { return nAt() >= start+4 })
	time.Sleep(3 * time.Second) // a resync or two
	data, _ := os.ReadFile(hookOut)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "RestartStorm Service/crash crash.service {") {
		t.Errorf("hook runs, want exactly one:\n%s", data)
	} else {
		var ev map[string]any
		if err := json.Unmarshal([]byte(strings.SplitN(lines[0], " ", 4)[3]), &ev); err != nil || ev["reason"] != "RestartStorm" || ev["object"] != "Service/crash" {
			t.Errorf("hook stdin JSON: %v %v", ev, err)
		}
	}
	if n := e.eventCount("crash", "RestartStorm", ""); n != 1 {
		t.Errorf("RestartStorm events = %d, want 1 per window", n)
	}
	restarts := e.eventCount("crash", "Restarted", "cause auto")
	if restarts < start+4-1 {
		t.Errorf("Restarted count %d lags NRestarts (%d at the storm, now ≥ %d)", restarts, start, start+4)
	}
	fams := e.metrics()
	if v := metric(fams, "resil_restart_storms_total", map[string]string{"object": "Service/crash"}); v != 1 {
		t.Errorf("resil_restart_storms_total = %g, want 1", v)
	}
	if v := metric(fams, "resil_service_restarts_total", map[string]string{"object": "Service/crash", "cause": "auto"}); v < 3 {
		t.Errorf("resil_service_restarts_total{cause=auto} = %g, want ≥ 3", v)
	}
	// The storm is in the journal with its fields.
	var storm map[string]any
	for _, j := range e.journalEntries("RESIL_REASON=RestartStorm") {
		storm = j
	}
	if storm == nil || storm["RESIL_OBJECT"] != "Service/crash" || storm["PRIORITY"] != "4" || storm["RESIL_UNIT"] != "crash.service" {
		t.Errorf("journal RestartStorm entry: %v", storm)
	}
	// status shows the restarts.
	out, _, _ := e.reconciler("status", "-o", "json", "crash")
	var rep struct {
		Objects []struct {
			Name        string `json:"name"`
			Restarts24h int    `json:"restarts24h"`
		} `json:"objects"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Objects) != 1 || rep.Objects[0].Restarts24h < 3 {
		t.Errorf("status: %v\n%s", err, out)
	}
}

// A manual `systemctl restart` resets NRestarts (it stays 0), yet the
// ledger counts it from the new MainPID and start time.
func TestManualRestartCountsInLedger(t *testing.T) {
	sandbox.RequireProgram(t, "curl", "curl") // scrapes /metrics inside the sandbox
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	a := e.startAgent()
	e.eventually("web active", 30*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	time.Sleep(2500 * time.Millisecond) // a pass that saw it running: the baseline
	pid := e.prop("web.service", "MainPID")
	e.systemctl("restart", "web.service")
	p := e.show("web.service", "NRestarts", "MainPID")
	if p["NRestarts"] != "0" || p["MainPID"] == pid {
		t.Fatalf("after systemctl restart: %v (pid was %s)", p, pid)
	}
	e.eventually("manual restart in the ledger", 20*time.Second, func() bool { return e.eventCount("web", "Restarted", "cause manual") == 1 })
	time.Sleep(3 * time.Second)
	if n := e.eventCount("web", "Restarted", ""); n != 1 {
		t.Errorf("Restarted events = %d, want 1 (manual only)", n)
	}
	if v := metric(e.metrics(), "resil_service_restarts_total", map[string]string{"object": "Service/web", "cause": "manual"}); v != 1 {
		t.Errorf("resil_service_restarts_total{cause=manual} = %g, want 1", v)
	}
	if n := e.prop("web.service", "NRestarts"); n != "0" {
		t.Errorf("NRestarts = %s, want 0", n)
	}
	// A manifest change: the agent's own restart step is booked as cause
	// agent, and not also as manual.
	pid = e.prop("web.service", "MainPID")
	e.write("web.yaml", svc("web", "  environment: {MODE: two}\n"))
	e.eventually("agent restart in the ledger", 20*time.Second, func() bool { return e.eventCount("web", "Restarted", "cause agent") == 1 })
	time.Sleep(3 * time.Second)
	if p := e.show("web.service", "MainPID", "Environment"); p["MainPID"] == pid || p["Environment"] != "MODE=two" {
		t.Errorf("not restarted by the agent: %v", p)
	}
	if m, a := e.eventCount("web", "Restarted", "cause manual"), e.eventCount("web", "Restarted", "cause agent"); m != 1 || a != 1 {
		t.Errorf("ledger: %d manual, %d agent; want 1 and 1", m, a)
	}
}

// A `systemctl restart` of a service in its restart delay: systemd drops
// the pending automatic restart without counting it, and the job's start
// leaves NRestarts at 0, so the counter says nothing happened though the
// process died and runs again. The ledger counts it (manual). An agent's
// restart in the delay, made by an agent killed before its ledger saw it,
// went uncounted the same way (torture seeds 1796451154833655304 and
// 1796456510820976863).
func TestRestartInRestartDelayCounted(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: web}
spec:
  command: ["/bin/sleep", "infinity"]
  restart: {policy: always, delay: 60s}
`)
	a := e.startAgent()
	e.eventually("web active", 30*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	time.Sleep(2500 * time.Millisecond) // a pass that saw it running
	pid := e.prop("web.service", "MainPID")
	if _, err := e.sb.Run(e.ctx, "kill", "-9", pid); err != nil {
		t.Fatal(err)
	}
	e.eventually("web in its restart delay", 10*time.Second, func() bool { return e.prop("web.service", "SubState") == "auto-restart" })
	time.Sleep(2500 * time.Millisecond) // a pass that saw it in the delay
	if p := e.show("web.service", "SubState", "NRestarts"); p["SubState"] != "auto-restart" || p["NRestarts"] != "0" {
		t.Fatalf("not waiting in the restart delay with NRestarts 0: %v", p)
	}
	e.systemctl("restart", "web.service")
	if p := e.show("web.service", "ActiveState", "NRestarts", "MainPID"); p["ActiveState"] != "active" || p["NRestarts"] != "0" || p["MainPID"] == pid {
		t.Fatalf("after systemctl restart in the delay: %v (pid was %s)", p, pid)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _, _ := e.reconciler("events")
			t.Logf("events:\n%s", out)
		}
	})
	e.eventually("the restart in the ledger", 20*time.Second, func() bool { return e.eventCount("web", "Restarted", "cause manual") == 1 })
	time.Sleep(3 * time.Second)
	if n := e.eventCount("web", "Restarted", ""); n != 1 {
		t.Errorf("Restarted events = %d, want 1", n)
	}
}

// Drift and invalid manifests appear in `reconciler events`, in the
// journal with structured fields, in the metrics, and in status's exit code.
func TestDriftEventsJournalStatusMetrics(t *testing.T) {
	sandbox.RequireProgram(t, "curl", "curl") // scrapes /metrics inside the sandbox
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	e.write("quiet.yaml", svc("quiet", "  drift: report\n"))
	a := e.startAgent()
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	e.eventually("converged status", 30*time.Second, func() bool { _, _, code := e.reconciler("status"); return code == 0 })
	e.eventually("resil_objects{Service,Converged} = 2", 20*time.Second, func() bool {
		return metric(e.metrics(), "resil_objects", map[string]string{"kind": "Service", "state": "Converged"}) == 2
	})

	e.systemctl("stop", "web.service", "quiet.service")
	e.eventually("drift events", 20*time.Second, func() bool {
		return e.eventCount("web", "StoppedOutOfBand", "starting") >= 1 && e.eventCount("quiet", "StoppedOutOfBand", "drift policy report") >= 1
	})
	e.eventually("web active again", 20*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	// quiet stays stopped (report): status exits 1 and names it.
	e.eventually("status exit 1", 20*time.Second, func() bool { _, _, code := e.reconciler("status"); return code == 1 })
	out, _, _ := e.reconciler("status")
	t.Logf("status while quiet drifts:\n%s", out)
	if !strings.Contains(out, "quiet") || !strings.Contains(out, "[Drifted]") {
		t.Errorf("status while drifting:\n%s", out)
	}
	if _, _, code := e.reconciler("status", "web"); code != 0 {
		t.Errorf("status web alone: exit %d, want 0", code)
	}
	fams := e.metrics()
	if v := metric(fams, "resil_drift_events_total", map[string]string{"reason": "StoppedOutOfBand"}); v < 2 {
		t.Errorf("resil_drift_events_total{StoppedOutOfBand} = %g, want ≥ 2", v)
	}
	if v := metric(fams, "resil_objects", map[string]string{"kind": "Service", "state": "Drifted"}); v != 1 {
		t.Errorf("resil_objects{Service,Drifted} = %g, want 1", v)
	}

	// An invalid manifest.
	e.write("bad.yaml", "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: bad\nspec: [\n")
	e.eventually("InvalidManifest event", 20*time.Second, func() bool {
		for _, ev := range e.storedEvents("--type", "Warning", "--since", "1h") {
			if ev.Reason == "InvalidManifest" && strings.Contains(ev.Message, "bad.yaml") {
				return true
			}
		}
		return false
	})

	// Journal: structured fields for drift and the invalid manifest.
	e.eventually("journal entries", 10*time.Second, func() bool {
		return len(e.journalEntries("RESIL_REASON=InvalidManifest")) > 0 && len(e.journalEntries("RESIL_OBJECT=Service/quiet", "RESIL_REASON=StoppedOutOfBand")) > 0
	})
	for _, j := range e.journalEntries("RESIL_REASON=StoppedOutOfBand") {
		if j["PRIORITY"] != "4" || j["SYSLOG_IDENTIFIER"] != "reconciler" || (j["RESIL_OBJECT"] != "Service/web" && j["RESIL_OBJECT"] != "Service/quiet") ||
			!strings.HasSuffix(fmt.Sprint(j["RESIL_UNIT"]), ".service") {
			t.Errorf("journal entry: %v", j)
		}
	}
	inv := e.journalEntries("RESIL_REASON=InvalidManifest")
	if len(inv) == 0 || !strings.Contains(fmt.Sprint(inv[len(inv)-1]["MESSAGE"]), "bad.yaml") {
		t.Errorf("InvalidManifest journal entries: %v", inv)
	}

	// Repair everything: status goes back to 0.
	e.remove("bad.yaml")
	e.systemctl("start", "quiet.service")
	e.eventually("status exit 0", 30*time.Second, func() bool { _, _, code := e.reconciler("status"); return code == 0 })
	evOut, _, _ := e.reconciler("events", "--since", "1h")
	t.Logf("events:\n%s", evOut)
	if v := metric(e.metrics(), "resil_objects", map[string]string{"kind": "Service", "state": "Drifted"}); v != 0 {
		t.Errorf("resil_objects{Service,Drifted} = %g after repair, want 0", v)
	}
	// Readiness and health from inside.
	for _, path := range []string{"/healthz", "/readyz"} {
		if out, err := e.sb.Run(e.ctx, "curl", "-sf", "http://127.0.0.1:9469"+path); err != nil || !strings.HasPrefix(out, "ok") {
			t.Errorf("%s: %q %v", path, out, err)
		}
	}
}

// A service that stops pinging is killed by systemd's watchdog and
// restarted: the ledger books those restarts as cause watchdog.
func TestWatchdogRestartsInLedger(t *testing.T) {
	sandbox.RequireProgram(t, "curl", "curl") // scrapes /metrics inside the sandbox
	e := newEnv(t)
	e.write("wd.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: wd}
spec:
  command: ["/bin/sh", "-c", "systemd-notify --ready; exec sleep infinity"]
  watchdog: {timeout: 1s, notifyAccess: all}
  restart: {policy: always, delay: 1s, limit: {burst: 100, interval: 60s}}
`)
	a := e.startAgent()
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	e.eventually("a watchdog restart in the ledger", 40*time.Second, func() bool { return e.eventCount("wd", "Restarted", "cause watchdog") >= 1 })
	time.Sleep(3 * time.Second)
	auto, wd := e.eventCount("wd", "Restarted", "cause auto"), e.eventCount("wd", "Restarted", "cause watchdog")
	t.Logf("restarts booked: %d watchdog, %d auto; NRestarts %s", wd, auto, e.prop("wd.service", "NRestarts"))
	if auto > 0 {
		t.Errorf("%d watchdog restarts booked as auto", auto)
	}
	if v := metric(e.metrics(), "resil_service_restarts_total", map[string]string{"object": "Service/wd", "cause": "watchdog"}); v < 1 {
		t.Errorf("resil_service_restarts_total{cause=watchdog} = %g, want ≥ 1", v)
	}
}
