package reconcile

import (
	"strings"
	"testing"
	"time"

	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// timerChange: which restart-class changes of an active timer are left to
// daemon-reload, by the timer's state and the keys changed.
func TestTimerChange(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	last := uint64(time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC).UnixMicro())
	cases := []struct {
		name        string
		sub         string
		keys        []string
		schedule    string
		lastTrigger uint64
		wantRestart bool
		wantWhy     string
		passthrough map[string]string // the manifest's systemd: Timer: keys
	}{
		{"waiting, accuracy", "waiting", []string{"AccuracySec"}, "*-*-* 09:00:00 UTC", last, false, "", nil},
		{"running, accuracy", "running", []string{"AccuracySec"}, "*-*-* 09:00:00 UTC", last, false, "", nil},
		// The old job's end no longer reaches the timer: it would stay running.
		{"running, Unit", "running", []string{"Unit"}, "*-*-* 09:00:00 UTC", last, true, "Unit= changed", nil},
		{"waiting, Unit", "waiting", []string{"Unit"}, "*-*-* 09:00:00 UTC", last, false, "", nil},
		{"elapsed", "elapsed", []string{"AccuracySec"}, "*-*-* 09:00:00 UTC", last, true, "elapsed, only a start", nil},
		// onBoot only, fired: a start would fire it again for nothing.
		{"elapsed, nothing to schedule", "elapsed", []string{"AccuracySec"}, "", last, false, "", nil},
		{"elapsed, onBoot changed", "elapsed", []string{"OnBootSec"}, "", last, true, "elapsed, only a start", nil},
		// A trigger added through the systemd: passthrough schedules
		// something: only a start arms it.
		{"elapsed, OnUnitInactiveSec added through systemd", "elapsed", []string{"OnUnitInactiveSec"}, "", last, true, "elapsed, only a start",
			map[string]string{"OnUnitInactiveSec": "1h"}},
		{"elapsed, OnCalendar through systemd, accuracy", "elapsed", []string{"AccuracySec"}, "", last, true, "elapsed, only a start",
			map[string]string{"OnCalendar": "daily"}},
		// Removed: nothing new to schedule.
		{"elapsed, OnCalendar removed from systemd", "elapsed", []string{"OnCalendar"}, "", last, false, "", nil},
		// A one-time trigger through systemd, unchanged: a start would
		// fire it again.
		{"elapsed, OnStartupSec through systemd, accuracy", "elapsed", []string{"AccuracySec"}, "", last, false, "",
			map[string]string{"OnStartupSec": "5m"}},
		{"elapsed, OnStartupSec through systemd changed", "elapsed", []string{"OnStartupSec"}, "", last, true, "elapsed, only a start",
			map[string]string{"OnStartupSec": "10m"}},
		{"waiting, schedule, run passed", "waiting", []string{"OnCalendar"}, "*-*-* 09:00:00 UTC", last, true, "would fire at once on reload", nil},
		{"waiting, schedule, run ahead", "waiting", []string{"OnCalendar"}, "*-*-* 12:00:00 UTC", last, false, "", nil},
		{"waiting, schedule, never triggered", "waiting", []string{"OnCalendar"}, "*-*-* 12:00:00 UTC", 0, true, "not triggered since it started", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := &desired.Object{Kind: desired.KindTimer, Metadata: desired.ObjectMeta{Name: "report"}, Timer: &desired.TimerSpec{}}
			if c.schedule != "" {
				o.Timer.Schedule = []string{c.schedule}
			}
			if c.schedule == "" {
				o.Timer.OnBoot = "5m" // what an elapsed timer without a schedule has
			}
			if c.passthrough != nil {
				o.Timer.Systemd = map[string]map[string]string{"Timer": c.passthrough}
			}
			p := &planner{in: Input{Observed: &observed.State{ReadAt: now}}}
			u := &observed.Unit{Name: "report.timer", ActiveState: "active", SubState: c.sub, LastTriggerUSec: c.lastTrigger}
			got := p.timerChange(o, UnitChange{Restart: true, Keys: c.keys}, u)
			if got.Restart != c.wantRestart || !strings.Contains(got.Why, c.wantWhy) || strings.Join(got.Keys, ",") != strings.Join(c.keys, ",") {
				t.Errorf("timerChange = %+v, want restart %v, why containing %q", got, c.wantRestart, c.wantWhy)
			}
		})
	}
}
