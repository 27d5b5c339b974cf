package ledger

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
)

// u builds an observed service unit owned by Service/web.
func u(active, sub, result string, n uint32, pid uint32, start uint64) *observed.Unit {
	return &observed.Unit{Name: "web.service", Owner: "Service/web", LoadState: "loaded", ActiveState: active, SubState: sub,
		Result: result, NRestarts: n, MainPID: pid, ExecMainStartTimestamp: start}
}

func state(units ...*observed.Unit) *observed.State {
	s := &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{}}
	for _, x := range units {
		s.Units[x.Name] = x
	}
	return s
}

func restartStep(unit string, err error, skipped string) reconcile.StepOutcome {
	return reconcile.StepOutcome{Step: actuators.Step{Op: actuators.OpRestart, Object: "Service/web", Unit: unit}, Err: err, Skipped: skipped}
}

// livenessStep is a restart the planner made for a failed liveness probe.
func livenessStep() reconcile.StepOutcome {
	return reconcile.StepOutcome{Step: actuators.Step{Op: actuators.OpRestart, Object: "Service/web", Unit: "web.service",
		Reason: reconcile.LivenessRestartReason + " 3 times: tcp probe: connection refused"}}
}

func TestDetect(t *testing.T) {
	running := u("active", "running", "success", 0, 100, 1000)
	for _, tc := range []struct {
		name    string
		prev    *observed.Unit
		cur     *observed.Unit
		between []reconcile.StepOutcome
		want    string
	}{
		{"steady", running, running, nil, "[]"},
		// A unit the previous observation did not have was started since
		// (by the agent, from NRestarts 0): every automatic restart it
		// shows happened since. An agent killed between starting a new
		// unit and observing it leaves no baseline row for it (found by
		// the torture suite: the next agent's supervisor restarted the
		// killed process and no event said so).
		{"new since the previous observation", nil, u("active", "running", "success", 7, 100, 1000), nil, "[web.service auto 7]"},
		{"new since the previous observation, never restarted", nil, u("active", "running", "success", 0, 100, 1000), nil, "[]"},
		{"new since the previous observation, in its restart delay", nil, u("activating", "auto-restart", "watchdog", 2, 0, 1000), nil, "[web.service watchdog 2]"},
		{"systemd restarted it 3 times", running, u("active", "running", "success", 3, 130, 4000), nil, "[web.service auto 3]"},
		{"caught in auto-restart", running, u("activating", "auto-restart", "exit-code", 0, 0, 1000), nil, "[]"},
		{"from auto-restart to running", u("activating", "auto-restart", "exit-code", 1, 0, 1000), u("active", "running", "success", 2, 140, 5000), nil, "[web.service auto 1]"},
		// The restart a pending auto-restart owed happened, but the count
		// did not move or started again (torture seed 1796159261286330423:
		// the process backend's agent killed in the restart delay, the next
		// one started the unit afresh).
		{"from auto-restart to running, count reset", u("activating", "auto-restart", "exit-code", 4, 0, 1000), u("active", "running", "success", 0, 140, 5000), nil, "[web.service auto 1]"},
		// systemd adds to NRestarts as it queues the restart, while the unit
		// is still in auto-restart: an observation that read both already
		// counted that restart.
		{"from auto-restart to running, same count (systemd)", u("activating", "auto-restart", "exit-code", 1, 0, 1000), u("active", "running", "success", 1, 140, 5000), nil, "[]"},
		// A restart job in the delay (systemctl restart, or an agent's):
		// systemd drops the pending restart uncounted and the job's start
		// leaves 0; 0 on both sides is no automatic restart, yet the
		// process died and runs again (torture seed 1796451154833655304).
		{"restart job in the restart delay (systemd)", u("activating", "auto-restart", "signal", 0, 0, 1000), u("active", "running", "success", 0, 140, 5000), nil, "[web.service manual 1]"},
		{"from auto-restart to running, count reset, watchdog", u("activating", "auto-restart", "watchdog", 1, 0, 1000), u("active", "running", "success", 0, 140, 5000), nil, "[web.service watchdog 1]"},
		{"crash loop ends failed", u("activating", "auto-restart", "exit-code", 1, 0, 1000), u("failed", "failed", "exit-code", 3, 0, 6000), nil, "[web.service auto 2]"},
		{"watchdog kill seen before the restart", u("activating", "auto-restart", "watchdog", 0, 0, 1000), u("active", "running", "success", 1, 150, 2000), nil, "[web.service watchdog 1]"},
		{"watchdog result still shown", running, u("active", "running", "watchdog", 1, 150, 2000), nil, "[web.service watchdog 1]"},
		{"manual restart: NRestarts stays 0", running, u("active", "running", "success", 0, 101, 2000), nil, "[web.service manual 1]"},
		{"manual restart resets NRestarts", u("active", "running", "success", 4, 100, 1000), u("active", "running", "success", 0, 101, 2000), nil, "[web.service manual 1]"},
		{"manual restart then 2 crashes", u("active", "running", "success", 4, 100, 1000), u("active", "running", "success", 2, 103, 3000), nil, "[web.service manual 1 web.service auto 2]"},
		{"same start time, new pid (pid-only backend)", running, u("active", "running", "success", 0, 222, 1000), nil, "[web.service manual 1]"},
		{"agent restart", u("active", "running", "success", 4, 100, 1000), u("active", "running", "success", 0, 101, 2000), []reconcile.StepOutcome{restartStep("web.service", nil, "")}, "[web.service agent 1]"},
		{"agent restart then a crash", running, u("active", "running", "success", 1, 102, 3000), []reconcile.StepOutcome{restartStep("web.service", nil, "")}, "[web.service agent 1 web.service auto 1]"},
		{"liveness restart", running, u("active", "running", "success", 0, 101, 2000), []reconcile.StepOutcome{livenessStep()}, "[web.service liveness 1]"},
		{"liveness restart then a crash", running, u("active", "running", "success", 1, 102, 3000), []reconcile.StepOutcome{livenessStep()}, "[web.service liveness 1 web.service auto 1]"},
		{"failed restart step is not a restart", running, u("active", "running", "success", 0, 101, 2000), []reconcile.StepOutcome{restartStep("web.service", errors.New("boom"), "")}, "[web.service manual 1]"},
		{"skipped restart step", running, running, []reconcile.StepOutcome{restartStep("web.service", nil, "held back")}, "[]"},
		{"start after a stop out of band is not a restart", u("inactive", "dead", "success", 0, 0, 1000), u("active", "running", "success", 0, 101, 2000), nil, "[]"},
		{"reset-failed and start of a failed unit", u("failed", "failed", "exit-code", 3, 0, 1000), u("active", "running", "success", 0, 105, 9000), nil, "[]"},
		{"stopped by the manifest", running, u("inactive", "dead", "success", 0, 0, 1000), nil, "[]"},
		{"unit gone (pruned)", running, nil, nil, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Prev: state(), Cur: state(), Between: tc.between}
			if tc.prev != nil {
				in.Prev = state(tc.prev)
			}
			if tc.cur != nil {
				in.Cur = state(tc.cur)
			}
			var got []string
			for _, r := range Detect(in) {
				if r.Object != "Service/web" {
					t.Errorf("object %q", r.Object)
				}
				got = append(got, fmt.Sprintf("%s %s %d", r.Unit, r.Cause, r.Count))
			}
			if s := fmt.Sprint(got); s != tc.want {
				t.Errorf("got %s, want %s", s, tc.want)
			}
		})
	}
}

// On the process backend a restart the previous observation saw pending
// that happened with the same count is one (a next agent started it
// afresh); on systemd it was counted when NRestarts moved.
func TestDetectAutoRestartSameCount(t *testing.T) {
	for _, tc := range []struct {
		backend string
		want    string
	}{
		{"process", "[web.service auto 1]"},
		{"systemd", "[]"},
	} {
		prev, cur := state(u("activating", "auto-restart", "exit-code", 1, 0, 1000)), state(u("active", "running", "success", 1, 140, 5000))
		prev.Backend, cur.Backend = tc.backend, tc.backend
		var got []string
		for _, r := range Detect(Input{Prev: prev, Cur: cur}) {
			got = append(got, fmt.Sprintf("%s %s %d", r.Unit, r.Cause, r.Count))
		}
		if s := fmt.Sprint(got); s != tc.want {
			t.Errorf("%s: got %s, want %s", tc.backend, s, tc.want)
		}
	}
}

func TestDetectOnlyManagedServices(t *testing.T) {
	prev := state(
		&observed.Unit{Name: "foreign.service", NRestarts: 0, MainPID: 1, ExecMainStartTimestamp: 1, ActiveState: "active"},
		&observed.Unit{Name: "job.service", Owner: "Timer/job", NRestarts: 0, MainPID: 1, ExecMainStartTimestamp: 1, ActiveState: "active"},
		&observed.Unit{Name: "job.timer", Owner: "Timer/job", ActiveState: "active"},
	)
	cur := state(
		&observed.Unit{Name: "foreign.service", NRestarts: 5, MainPID: 2, ExecMainStartTimestamp: 2, ActiveState: "active"},
		&observed.Unit{Name: "job.service", Owner: "Timer/job", NRestarts: 1, MainPID: 2, ExecMainStartTimestamp: 2, ActiveState: "active"},
		&observed.Unit{Name: "job.timer", Owner: "Timer/job", ActiveState: "active"},
	)
	if got := Detect(Input{Prev: prev, Cur: cur}); len(got) != 0 {
		t.Errorf("counted unmanaged units: %+v", got)
	}
	if got := Detect(Input{Prev: nil, Cur: cur}); got != nil {
		t.Errorf("no previous observation: %+v", got)
	}
}

// TestStormWindow walks an injected clock through a crash loop: the alert
// fires when the threshold is reached, stays silent for the rest of the
// window however many restarts follow, and fires once more in the next
// window only if the storm goes on.
func TestStormWindow(t *testing.T) {
	p := Policy{Restarts: 3, Within: time.Hour}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var restarts []time.Time
	var fired time.Time
	var firings []string
	step := func(at time.Duration, n int) {
		now := t0.Add(at)
		for range n {
			restarts = append(restarts, now)
		}
		count := 0
		for _, r := range restarts {
			if r.After(now.Add(-p.Within)) {
				count++
			}
		}
		if Storm(p, count, fired, now) {
			fired = now
			firings = append(firings, fmt.Sprintf("%s@%d", at, count))
		}
	}
	step(0, 1)
	step(10*time.Minute, 1)
	step(20*time.Minute, 1)  // third restart in the window: fires
	step(30*time.Minute, 5)  // still storming: silent (same window)
	step(79*time.Minute, 1)  // 59 min after firing: silent
	step(80*time.Minute, 1)  // a window after the firing, still ≥3 in the last hour: fires again
	step(200*time.Minute, 1) // calm: one restart in the last hour
	step(300*time.Minute, 0)
	want := "[20m0s@3 1h20m0s@7]"
	if got := fmt.Sprint(firings); got != want {
		t.Errorf("firings %s, want %s", got, want)
	}
}

func TestStormTable(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	p := Policy{Restarts: 5, Within: 24 * time.Hour}
	for _, tc := range []struct {
		name  string
		p     Policy
		count int
		last  time.Time
		want  bool
	}{
		{"below", p, 4, time.Time{}, false},
		{"at threshold", p, 5, time.Time{}, true},
		{"above, fired in this window", p, 9, now.Add(-23 * time.Hour), false},
		{"above, window since firing over", p, 9, now.Add(-24 * time.Hour), true},
		{"disabled", Policy{}, 100, time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Storm(tc.p, tc.count, tc.last, now); got != tc.want {
				t.Errorf("Storm = %v, want %v", got, tc.want)
			}
		})
	}
}

// A restart the restart journal records, made after its record, is the
// agent's though no step outcome says so: the agent that made it was
// killed before its ledger saw it (kill -9 during its startup probe), and
// the next one read manual. One made before the record stays manual. On
// the process backend the supervisor that finished such a restart says
// so (observed.Unit.OwedRestart).
//
// The same when the killed service was in its restart delay when the
// agent's restart job ran (torture seeds 1796451154833655304 and
// 1796456510820976863: killed out of band, then its changed unit written,
// reloaded and restarted by an agent killed before its ledger ran).
func TestDetectJournaledRestart(t *testing.T) {
	running := u("active", "running", "success", 0, 100, 1000)
	delay := u("activating", "auto-restart", "signal", 0, 0, 1000)
	cur := u("active", "running", "success", 0, 101, 2000)
	for _, tc := range []struct {
		name   string
		prev   *observed.Unit
		record time.Time
		want   string
	}{
		{"made after the record", running, time.UnixMicro(1500), "[web.service agent 1]"},
		{"made before the record", running, time.UnixMicro(3000), "[web.service manual 1]"},
		{"no record", running, time.Time{}, "[web.service manual 1]"},
		{"owed (process backend)", running, time.Time{}, "[web.service agent 1]"},
		{"in the restart delay, made after the record", delay, time.UnixMicro(1500), "[web.service agent 1]"},
		{"in the restart delay, no record", delay, time.Time{}, "[web.service manual 1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := *cur
			cur.OwedRestart = tc.name == "owed (process backend)"
			in := Input{Prev: state(tc.prev), Cur: state(&cur)}
			if !tc.record.IsZero() {
				in.Journaled = map[string]time.Time{"web.service": tc.record}
			}
			var got []string
			for _, r := range Detect(in) {
				got = append(got, fmt.Sprintf("%s %s %d", r.Unit, r.Cause, r.Count))
			}
			if s := fmt.Sprint(got); s != tc.want {
				t.Errorf("got %s, want %s", s, tc.want)
			}
		})
	}
}
