package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
)

func usecAt(s string) uint64 {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return uint64(t.UnixMicro())
}

func timerState() *observed.State {
	return &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{
		"backup.timer": {Name: "backup.timer", File: []byte("x"), ActiveState: "active", Triggers: []string{"backup.service"},
			LastTriggerUSec: usecAt("2026-11-26T03:00:00Z"), NextElapseUSecRealtime: usecAt("2026-11-27T03:00:00Z")},
		"backup.service": {Name: "backup.service", File: []byte("x"), ActiveState: "failed", Result: "exit-code", ExecMainStatus: 3, NRestarts: 2,
			ExecMainStartTimestamp: usecAt("2026-11-26T03:00:05Z"), ExecMainExitTimestamp: usecAt("2026-11-26T03:00:06Z")},
		"boot.timer":    {Name: "boot.timer", File: []byte("x"), ActiveState: "active", NextElapseUSecMonotonic: 90_000_000},
		"boot.service":  {Name: "boot.service", File: []byte("x"), ActiveState: "inactive"},
		"foreign.timer": {Name: "foreign.timer"},
	}}
}

// diff prints last and next runs even when the plan is empty.
func TestTimerNotesWhenConverged(t *testing.T) {
	var b bytes.Buffer
	printPlan(&b, "systemd", reconcile.Result{Objects: 2, Observed: timerState()})
	want := `Timers:
  timer backup.timer: active, last 2026-11-26T03:00:00Z, next 2026-11-27T03:00:00Z; backup.service failed (exit-code, status 3, 2 restarts)
  timer boot.timer: active, last -, next monotonic +1m30s; boot.service never ran
No changes: 2 objects converged on the systemd backend`
	if got := b.String(); !strings.HasPrefix(got, want) {
		t.Errorf("diff output:\n%s\nwant prefix:\n%s", got, want)
	}
}

// The run log has one line per timer run, not one per pass.
func TestTimerLogOncePerRun(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	l := newTimerLog(zap.New(core))
	st := timerState()
	for i := 0; i < 3; i++ {
		l.afterPass(reconcile.Result{Observed: st}, nil)
	}
	if n := logs.FilterMessage("timer state").Len(); n != 2 {
		t.Fatalf("%d lines after 3 passes, want 2 (one per timer)", n)
	}
	st.Units["backup.timer"].LastTriggerUSec = usecAt("2026-11-27T03:00:00Z")
	l.afterPass(reconcile.Result{Observed: st}, nil)
	lines := logs.FilterMessage("timer state").FilterField(zap.String("timer", "backup.timer")).All()
	if len(lines) != 2 || lines[1].ContextMap()["last"] != "2026-11-27T03:00:00Z" {
		t.Errorf("backup.timer lines: %v", lines)
	}
}
