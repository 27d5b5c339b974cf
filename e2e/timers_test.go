package e2e

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

func timer(name, spec string) string {
	return fmt.Sprintf("apiVersion: resil.dev/v1\nkind: Timer\nmetadata: {name: %s}\nspec:\n%s", name, spec)
}

// lines returns the non-empty lines of a file in the sandbox ("" if absent).
func (e *env) lines(path string) []string {
	data, err := e.sb.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// A timer every 2 s fires: LastTriggerUSec advances, the job runs on the
// schedule (AccuracySec=1ms), and diff shows last and next run while
// nothing changes.
func TestTimerFires(t *testing.T) {
	e := newEnv(t)
	e.write("tick.yaml", timer("tick", `  schedule: ["*:*:0/2"]
  accuracy: 1ms
  command: ["/bin/sh", "-c", "date +%s.%N >> /run/ticks"]
`))
	out := e.apply(0)
	if !strings.Contains(out, "start tick.timer") || strings.Contains(out, "start tick.service") {
		t.Fatalf("apply should start the timer, not its job:\n%s", out)
	}
	p := e.show("tick.timer", "ActiveState", "UnitFileState", "AccuracyUSec", "Unit")
	if p["ActiveState"] != "active" || p["UnitFileState"] != "enabled" || p["AccuracyUSec"] != "1ms" || p["Unit"] != "tick.service" {
		t.Fatalf("tick.timer: %v", p)
	}
	first := e.prop("tick.timer", "LastTriggerUSecMonotonic")
	e.eventually("4 runs", 15*time.Second, func() bool { return len(e.lines("/run/ticks")) >= 4 })
	if again := e.prop("tick.timer", "LastTriggerUSecMonotonic"); again == first {
		t.Errorf("LastTriggerUSec did not advance: %s", again)
	}
	// Fire accuracy: how long after each even second the job's command ran.
	var lat []time.Duration
	for _, l := range e.lines("/run/ticks") {
		f, err := strconv.ParseFloat(l, 64)
		if err != nil {
			t.Fatalf("tick %q: %v", l, err)
		}
		sec := int64(f)
		off := time.Duration((f - float64(sec-sec%2)) * float64(time.Second))
		lat = append(lat, off)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("job start after the scheduled second (n=%d): min %s, median %s, max %s", len(lat), lat[0], lat[len(lat)/2], lat[len(lat)-1])
	// The latency is logged, not bounded (no timing assertions: a loaded
	// machine delays a start); a run before its scheduled second would be
	// a wrong schedule.
	if lat[0] < 0 {
		t.Errorf("a run started %s before its schedule", -lat[0])
	}
	if s := e.prop("tick.service", "ActiveState"); s == "failed" {
		t.Errorf("job failed")
	}
	// Converged: diff changes nothing (the job inactive between runs is not
	// drift) and still shows the last and next run.
	out, _, code := e.reconciler("diff")
	if code != 0 || !strings.Contains(out, "Timers:") || !strings.Contains(out, "timer tick.timer: active, last 20") ||
		!strings.Contains(out, ", next 20") || !strings.Contains(out, "tick.service") {
		t.Errorf("diff exit %d:\n%s", code, out)
	}
}

// A persistent timer whose stamp says it missed a run catches up once on
// start; with maxLateness the same miss (30 h late) is skipped: the agent
// refreshes the stamp before starting the timer and records TimerMissed.
func TestTimerPersistentCatchUp(t *testing.T) {
	e := newEnv(t)
	spec := `  schedule: ["*-*-* 03:00:00 UTC"]
  persistent: true
  catchUp: once
  accuracy: 1ms
  command: ["/bin/sh", "-c", "date +%%s >> /run/%s"]
%s`
	e.write("catchup.yaml", timer("catchup", fmt.Sprintf(spec, "catchup", "")))
	e.write("late.yaml", timer("late", fmt.Sprintf(spec, "late", "  maxLateness: 1h\n")))
	// Both last ran two days ago (a host that was down).
	old := time.Now().Add(-54 * time.Hour).UTC().Format("2006-01-02 15:04:05")
	for _, n := range []string{"catchup", "late"} {
		stamp := "/var/lib/systemd/timers/stamp-" + n + ".timer"
		if _, err := e.sb.Run(e.ctx, "/bin/sh", "-c", "mkdir -p /var/lib/systemd/timers && touch -d '"+old+" UTC' "+stamp); err != nil {
			t.Fatal(err)
		}
	}
	out, _, code := e.reconciler("diff")
	if code != 1 || !strings.Contains(out, "TimerCatchUp Timer/catchup") || !strings.Contains(out, "TimerMissed Timer/late") ||
		!strings.Contains(out, "refresh-stamp late.timer") || strings.Contains(out, "refresh-stamp catchup.timer") {
		t.Fatalf("diff exit %d:\n%s", code, out)
	}
	start := time.Now()
	out = e.apply(0)
	if !strings.Contains(out, "changed  refresh-stamp late.timer") || !strings.Contains(out, "TimerMissed Timer/late") {
		t.Errorf("apply:\n%s", out)
	}
	e.eventually("catch-up run", 10*time.Second, func() bool { return len(e.lines("/run/catchup")) == 1 })
	t.Logf("catch-up run %s after apply started", time.Since(start).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	if n := len(e.lines("/run/catchup")); n != 1 {
		t.Errorf("catch-up ran %d times, want once", n)
	}
	if l := e.lines("/run/late"); l != nil {
		t.Errorf("a run later than maxLateness fired: %v", l)
	}
	for _, n := range []string{"catchup.timer", "late.timer"} {
		p := e.show(n, "ActiveState", "NextElapseUSecRealtime", "LastTriggerUSec")
		if p["ActiveState"] != "active" || !strings.Contains(p["NextElapseUSecRealtime"], "03:00:00") {
			t.Errorf("%s: %v", n, p)
		}
	}
	st, err := e.sb.Run(e.ctx, "stat", "-c", "%Y", "/var/lib/systemd/timers/stamp-late.timer")
	if v, _ := strconv.ParseInt(strings.TrimSpace(st), 10, 64); err != nil || time.Since(time.Unix(v, 0)) > time.Minute {
		t.Errorf("late stamp not refreshed: %q %v", st, err)
	}
	// A second pass changes nothing: the timers are active and the skip is done.
	if out := e.apply(0); !strings.HasPrefix(out, "0 steps") {
		t.Errorf("second pass:\n%s", out)
	}
}

// A failing inline job with retry.attempts 3 runs three times (delay apart,
// within one run), ends failed, and the running agent reports TimerFailed with the
// exit status once for that run, not on every pass.
func TestTimerRetryThenReported(t *testing.T) {
	e := newEnv(t)
	e.write("flaky.yaml", timer("flaky", `  onBoot: 1ms
  accuracy: 1ms
  command: ["/bin/sh", "-c", "echo run >> /run/flaky; exit 3"]
  retry: {attempts: 3, delay: 300ms}
`))
	a := e.startAgent()
	e.eventually("flaky.service failed", 30*time.Second, func() bool { return e.prop("flaky.service", "ActiveState") == "failed" })
	p := e.show("flaky.service", "Result", "ExecMainStatus", "NRestarts", "Restart", "RestartUSec", "StartLimitBurst")
	t.Logf("job after its retries: %v", p)
	if n := len(e.lines("/run/flaky")); n != 3 {
		t.Errorf("job ran %d times, want 3 (attempts)", n)
	}
	// The attempts are one run (a retry loop in ExecStart), not restarts.
	if p["ExecMainStatus"] != "3" || p["Restart"] != "no" || p["NRestarts"] != "0" {
		t.Errorf("job: %v", p)
	}
	e.eventually("TimerFailed event", 20*time.Second, func() bool { return a.hasEvent("TimerFailed", "exit status 3") })
	time.Sleep(5 * time.Second) // two resyncs
	n := 0
	for _, ev := range a.events() {
		if ev["reason"] == "TimerFailed" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("TimerFailed recorded %d times, want once per failed run", n)
	}
	if a.countLogsBy("timers", "timer state") == 0 {
		t.Errorf("no timer state log line")
	}
	if s := e.prop("flaky.timer", "ActiveState"); s != "active" && s != "inactive" {
		t.Errorf("flaky.timer %s", s)
	}
	if len(e.lines("/run/flaky")) != 3 {
		t.Errorf("the agent started the job again")
	}
}

// A changed timer is not restarted while it waits: a start forgets the
// last trigger, so its OnBootSec (past) would fire the job again at once.
// Moving the manifest to another file (only the X-Resil-Source comment
// changes) and changing the schedule both keep the timer's activation and
// last trigger, and the new schedule is in force after the daemon-reload
// alone. An elapsed timer with a new schedule is restarted: nothing else
// schedules it.
func TestTimerChangeKeepsLastTrigger(t *testing.T) {
	e := newEnv(t)
	spec := `  onBoot: 1ms
  schedule: ["*-*-* %s:00:00 UTC"]
  accuracy: 1ms
  command: ["/bin/sh", "-c", "echo run >> /run/boot"]
`
	e.write("boot.yaml", timer("boot", fmt.Sprintf(spec, "03")))
	e.apply(0)
	e.eventually("the boot run", 10*time.Second, func() bool { return len(e.lines("/run/boot")) == 1 })
	e.eventually("the job done", 10*time.Second, func() bool { return e.prop("boot.timer", "SubState") == "waiting" })
	before := e.show("boot.timer", "ActiveEnterTimestampMonotonic", "LastTriggerUSecMonotonic")
	kept := func(step string) {
		t.Helper()
		time.Sleep(1500 * time.Millisecond)
		if n := len(e.lines("/run/boot")); n != 1 {
			t.Errorf("%s: the job ran %d times, want once (timer restarted?)", step, n)
		}
		if now := e.show("boot.timer", "ActiveEnterTimestampMonotonic", "LastTriggerUSecMonotonic"); now["ActiveEnterTimestampMonotonic"] != before["ActiveEnterTimestampMonotonic"] ||
			now["LastTriggerUSecMonotonic"] != before["LastTriggerUSecMonotonic"] {
			t.Errorf("%s: timer restarted: %v, before %v", step, now, before)
		}
	}

	// The manifest moves to another file.
	e.write("jobs.yaml", timer("boot", fmt.Sprintf(spec, "03")))
	e.remove("boot.yaml")
	out := e.apply(0)
	if !strings.Contains(out, "write /etc/systemd/system/boot.timer") || strings.Contains(out, "restart boot.timer") {
		t.Errorf("moved manifest, apply:\n%s", out)
	}
	kept("moved manifest")

	// The schedule changes while the timer waits: daemon-reload alone.
	e.write("jobs.yaml", timer("boot", fmt.Sprintf(spec, "04")))
	out, _, code := e.reconciler("diff")
	if code != 1 || !strings.Contains(out, "reload only: OnCalendar changed") || strings.Contains(out, "restart boot.timer") {
		t.Errorf("schedule change, diff exit %d:\n%s", code, out)
	}
	e.apply(0)
	kept("schedule change")
	if next := e.prop("boot.timer", "NextElapseUSecRealtime"); !strings.Contains(next, " 04:00:00") {
		t.Errorf("NextElapseUSecRealtime %q after the reload, want the new schedule (04:00)", next)
	}
	if out, _, code := e.reconciler("diff"); code != 0 {
		t.Errorf("not converged, diff exit %d:\n%s", code, out)
	}

	// An elapsed timer (only onBoot, fired) given a schedule: restarted.
	e.write("once.yaml", timer("once", `  onBoot: 1ms
  accuracy: 1ms
  command: ["/bin/true"]
`))
	e.apply(0)
	e.eventually("once.timer elapsed", 10*time.Second, func() bool { return e.prop("once.timer", "SubState") == "elapsed" })
	e.write("once.yaml", timer("once", `  onBoot: 1ms
  schedule: ["*-*-* 05:00:00 UTC"]
  accuracy: 1ms
  command: ["/bin/true"]
`))
	out = e.apply(0)
	if !strings.Contains(out, "restart once.timer (unit file changed: OnCalendar; elapsed, only a start schedules it)") {
		t.Errorf("elapsed timer given a schedule, apply:\n%s", out)
	}
	e.eventually("once.timer waiting for 05:00", 10*time.Second, func() bool {
		p := e.show("once.timer", "SubState", "NextElapseUSecRealtime")
		return p["SubState"] == "waiting" && strings.Contains(p["NextElapseUSecRealtime"], " 05:00:00")
	})
}

// A schedule moved to a time between the timer's last trigger and now:
// on daemon-reload systemd counts from the last trigger and would run the
// job at once, outside both schedules (a restart after the reload is too
// late). The timer is not persistent, so the agent stops it before the
// reload and starts it after (a start counts from now): the job does not
// run.
func TestTimerScheduleMovedBeforeNow(t *testing.T) {
	e := newEnv(t)
	e.write("slot.yaml", timer("slot", `  schedule: ["*:*:0/10"]
  accuracy: 1ms
  command: ["/bin/sh", "-c", "date -u +%s >> /run/slot"]
`))
	e.apply(0)
	e.eventually("the first run", 20*time.Second, func() bool { return len(e.lines("/run/slot")) == 1 })
	ran, err := strconv.ParseInt(e.lines("/run/slot")[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	// A daily run one second after the trigger, already past when applied
	// (the old schedule's next run is 10 s after the first).
	slot := time.Unix(ran+1, 0).UTC()
	time.Sleep(time.Until(slot.Add(500 * time.Millisecond)))
	e.write("slot.yaml", timer("slot", fmt.Sprintf(`  schedule: ["*-*-* %s UTC"]
  accuracy: 1ms
  command: ["/bin/sh", "-c", "date -u +%%s >> /run/slot"]
`, slot.Format("15:04:05"))))
	out := e.apply(0)
	if !strings.Contains(out, "stop slot.timer (unit file changed: OnCalendar; the new schedule's run due") || !strings.Contains(out, "start slot.timer") {
		t.Errorf("apply:\n%s", out)
	}
	time.Sleep(1500 * time.Millisecond)
	if n := len(e.lines("/run/slot")); n != 1 {
		t.Errorf("the job ran %d times, want once (the reload fired the moved run at once)", n)
	}
	if p := e.show("slot.timer", "SubState", "NextElapseUSecRealtime"); p["SubState"] != "waiting" || !strings.Contains(p["NextElapseUSecRealtime"], slot.Format("15:04:05")) {
		t.Errorf("after the restart: %v, want waiting for %s tomorrow", p, slot.Format("15:04:05"))
	}
}

// A timer the agent stops for a schedule change (disable, reload, stop
// before the files; enable before the reload, start after it) and was
// killed in between is stopped if need be, enabled again and started by
// the next agent, even under drift: report: the restart journal names it,
// so the disable and the stop read as the agent's own, not as someone's.
// Killed after the disable (still loaded, still referenced), after its
// reload, and after the stop; each time the next apply's start does not
// run the job (the new schedule's run is already past).
func TestTimerStoppedForScheduleSurvivesCrash(t *testing.T) {
	for _, k := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("after-step-%d", k), func(t *testing.T) { timerStoppedForScheduleCrash(t, k) })
	}
}

func timerStoppedForScheduleCrash(t *testing.T, k int) {
	e := newEnv(t)
	spec := func(at string) string {
		return fmt.Sprintf("  schedule: [\"*-*-* %s UTC\"]\n  drift: report\n  accuracy: 1ms\n  command: [\"/bin/sh\", \"-c\", \"date -u +%%s >> /run/slot\"]\n", at)
	}
	e.write("slot.yaml", timer("slot", spec("03:00:00")))
	e.apply(0)
	// Not triggered since it started: a reload would schedule from that
	// start, so the change stops the timer first. The new run (the
	// second one second ago, more than one after the start) is past since
	// its start.
	time.Sleep(2100 * time.Millisecond)
	e.write("slot.yaml", timer("slot", spec(time.Now().UTC().Add(-time.Second).Format("15:04:05"))))
	cmd := e.sb.Command(e.ctx, agentBin, "apply", "--backend", "systemd", "--state-dir", "/var/lib/resil",
		"--log-format", "console", "--manifests", manifestsDir)
	cmd.Env = append(cmd.Env, fmt.Sprintf("RESIL_TEST_CRASH_AFTER_STEP=%d", k))
	out, errOut, code := runCLI(t, cmd)
	if code == 0 {
		t.Fatalf("the crashing apply: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	wantState := map[int]string{1: "active", 2: "active", 3: "inactive"}[k]
	if p := e.show("slot.timer", "ActiveState", "UnitFileState"); p["ActiveState"] != wantState || p["UnitFileState"] != "disabled" {
		t.Fatalf("after a crash after step %d: slot.timer %v, want %s and disabled", k, p, wantState)
	}
	out = e.apply(0)
	if !strings.Contains(out, "start slot.timer") || !strings.Contains(out, "enable slot.timer (disabled for a schedule change's stop by an interrupted pass)") {
		t.Errorf("apply after the crash:\n%s", out)
	}
	if k == 3 && !strings.Contains(out, "start slot.timer (start owed by an interrupted pass)") {
		t.Errorf("apply after the crash:\n%s", out)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(e.lines("/run/slot")); n != 0 {
		t.Errorf("the job ran %d times, want never (the start counted from the timer's earlier start)", n)
	}
	if p := e.show("slot.timer", "ActiveState", "UnitFileState", "NextElapseUSecRealtime"); p["ActiveState"] != "active" || p["UnitFileState"] != "enabled" {
		t.Errorf("slot.timer %v, want active and enabled", p)
	}
	if out, _, code := e.reconciler("diff"); code != 0 {
		t.Errorf("not converged, diff exit %d:\n%s", code, out)
	}
	// Settled: the record is gone, a manual stop is drift again (report).
	e.systemctl("stop", "slot.timer")
	if out := e.apply(0); strings.Contains(out, "start slot.timer") {
		t.Errorf("a manual stop under drift: report was undone:\n%s", out)
	}
}
