package process

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

func TestLogRotationNoLineLost(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	logf := filepath.Join(h.dir, "logs", "chatty.log")
	os.MkdirAll(filepath.Dir(logf), 0o755)
	backups := 20
	h.run()
	// ~2.3 MB of numbered lines to stdout and stderr, then a crash mid-line.
	const n = 150000
	h.install(service("chatty", desired.ServiceSpec{
		Command: sh(fmt.Sprintf(`seq 1 %d | sed 's/^/line-/'; seq 1 1000 | sed 's/^/err-/' >&2; printf 'partial-no-newline'; kill -9 $$`, n)),
		Logs:    &desired.Logs{Stdout: logf, MaxSize: "1M", MaxBackups: &backups},
		Restart: &desired.RestartSpec{Policy: desired.RestartNever}}), false)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "chatty.service"})
	h.waitUnit("chatty.service", "crash", func(u *observed.Unit) bool { return u.ActiveState == "failed" })
	if u := h.unit("chatty.service"); u.Result != ResultSignal || u.ExecMainStatus != 9 {
		t.Fatalf("crash result: %+v", u)
	}
	var all []string
	waitFor(t, "all lines", func() bool {
		files, _ := filepath.Glob(filepath.Join(filepath.Dir(logf), "chatty*.log"))
		all = nil
		for _, f := range files {
			all = append(all, lines(t, f)...)
		}
		return len(all) >= n+1000+1
	})
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(logf), "chatty*.log"))
	if len(files) < 2 {
		t.Fatalf("no rotation: %v", files)
	}
	seen := map[string]int{}
	for _, l := range all {
		seen[l]++
	}
	for i := 1; i <= n; i++ {
		if seen["line-"+strconv.Itoa(i)] != 1 {
			t.Fatalf("line-%d seen %d times", i, seen["line-"+strconv.Itoa(i)])
		}
	}
	if seen["err-1000"] != 1 || seen["partial-no-newline"] != 1 {
		t.Fatalf("stderr or partial last line lost: err-1000 %d, partial %d", seen["err-1000"], seen["partial-no-newline"])
	}
	if len(all) != n+1000+1 {
		t.Fatalf("%d lines, want %d", len(all), n+1001)
	}
}

func TestTimerCalendarFires(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	h.run()
	h.install(timer("tick", desired.TimerSpec{Schedule: []string{"*:*:0/2"}, Command: sh(`echo tick >> ` + runs)}), true)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "tick.timer"})
	u := h.unit("tick.timer")
	if u.ActiveState != "active" || u.NextElapseUSecRealtime == 0 || len(u.Triggers) != 1 || u.Triggers[0] != "tick.service" {
		t.Fatalf("timer: %+v", u)
	}
	waitFor(t, "two runs", func() bool { return len(lines(t, runs)) >= 2 })
	if u := h.unit("tick.timer"); u.LastTriggerUSec == 0 {
		t.Fatalf("LastTriggerUSec not set: %+v", u)
	}
	if u := h.unit("tick.service"); u.ActiveState == "failed" {
		t.Fatalf("job: %+v", u)
	}
}

// backdate writes a timer stamp as if the agent last fired it at t.
func backdate(t *testing.T, dir, timer string, at time.Time) {
	os.MkdirAll(filepath.Join(dir, "timers"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "timers", timer+".stamp"), []byte(at.Format(time.RFC3339Nano)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPersistentCatchUpOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	// Two daily schedules, due 90 and 60 minutes ago (so no regular run
	// falls inside the test); last run two hours ago: two misses, one run.
	due := time.Now().UTC().Add(-time.Hour)
	daily := fmt.Sprintf("*-*-* %02d:%02d:00 UTC", due.Hour(), due.Minute())
	alsoDue := time.Now().UTC().Add(-90 * time.Minute)
	daily2 := fmt.Sprintf("*-*-* %02d:%02d:00 UTC", alsoDue.Hour(), alsoDue.Minute())
	backdate(t, h.dir, "nightly.timer", time.Now().Add(-2*time.Hour))
	h.install(timer("nightly", desired.TimerSpec{Schedule: []string{daily, daily2}, Persistent: true,
		Command: sh(`echo run >> ` + runs)}), true)
	h.run()
	waitFor(t, "catch-up run", func() bool { return len(lines(t, runs)) >= 1 })
	time.Sleep(1500 * time.Millisecond)
	if n := len(lines(t, runs)); n != 1 {
		t.Fatalf("catch-up ran %d times, want 1", n)
	}
	if at := h.s.readStamp("nightly.timer"); time.Since(at) > time.Minute {
		t.Fatalf("stamp not advanced: %v", at)
	}
}

func TestCatchUpSkips(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		spec desired.TimerSpec
	}{
		{"maxLateness", desired.TimerSpec{Schedule: []string{"2020-01-01 00:00:00"}, Persistent: true, MaxLateness: "1h"}},
		{"catchUp skip", desired.TimerSpec{Schedule: []string{"2020-01-01 00:00:00"}, Persistent: true, CatchUp: desired.CatchUpSkip}},
		{"not persistent", desired.TimerSpec{Schedule: []string{"2020-01-01 00:00:00"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, "", Options{})
			runs := filepath.Join(h.dir, "runs")
			backdate(t, h.dir, "old.timer", time.Date(2019, 12, 31, 0, 0, 0, 0, time.UTC))
			tc.spec.Command = sh(`echo run >> ` + runs)
			h.install(timer("old", tc.spec), true)
			h.run()
			h.waitUnit("old.timer", "started", func(u *observed.Unit) bool { return u.ActiveState == "active" })
			time.Sleep(time.Second)
			if n := len(lines(t, runs)); n != 0 {
				t.Fatalf("ran %d times, want 0", n)
			}
			h.s.mu.Lock()
			u := h.s.units["old.timer"]
			h.s.mu.Unlock()
			want := 0
			if tc.name == "maxLateness" {
				want = 1
			}
			if got := u.status().Missed; got != want {
				t.Fatalf("missed runs reported = %d, want %d", got, want)
			}
		})
	}
	t.Run("within maxLateness", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, "", Options{})
		runs := filepath.Join(h.dir, "runs")
		backdate(t, h.dir, "old.timer", time.Date(2019, 12, 31, 0, 0, 0, 0, time.UTC))
		h.install(timer("old", desired.TimerSpec{Schedule: []string{"2020-01-01 00:00:00"}, Persistent: true,
			MaxLateness: "87600h", Command: sh(`echo run >> ` + runs)}), true)
		h.run()
		waitFor(t, "catch-up", func() bool { return len(lines(t, runs)) == 1 })
	})
}

func TestJobRetryAttempts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	h.run()
	h.install(timer("flaky", desired.TimerSpec{OnBoot: "1ms", Command: sh(`echo try >> ` + runs + `; exit 2`),
		Retry: &desired.Retry{Attempts: 3, Delay: "100ms"}}), true)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "flaky.timer"})
	u := h.waitUnit("flaky.service", "failed", func(u *observed.Unit) bool { return u.ActiveState == "failed" })
	time.Sleep(500 * time.Millisecond)
	if n := len(lines(t, runs)); n != 3 {
		t.Fatalf("attempts = %d, want 3", n)
	}
	// The retries are within one run, as on systemd: no restarts counted,
	// and the run fails with the last attempt's status.
	if u.NRestarts != 0 || u.ExecMainStatus != 2 || u.Result != ResultExitCode {
		t.Fatalf("job: %+v", u)
	}
}

func TestJobNeverOverlaps(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	runs := filepath.Join(h.dir, "runs")
	h.run()
	// Due every second, runs 2.5 s: starts while running are skipped.
	h.install(timer("long", desired.TimerSpec{Schedule: []string{"*:*:*"},
		Command: sh(`echo start >> ` + runs + `; sleep 2.5; echo end >> ` + runs)}), true)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "long.timer"})
	waitFor(t, "two runs", func() bool { return strings.Count(strings.Join(lines(t, runs), ","), "end") >= 2 })
	l := lines(t, runs)
	for i := 1; i < len(l); i++ {
		if l[i] == l[i-1] {
			t.Fatalf("overlapping runs: %v", l)
		}
	}
}

func TestLockPreventsOverlap(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	lock := filepath.Join(h.dir, "shared.lock")
	h.run()
	h.install(service("first", desired.ServiceSpec{Command: []string{"sleep", "1000"}, Lock: lock}), false)
	h.install(service("second", desired.ServiceSpec{Command: []string{"sleep", "1000"}, Lock: lock}), false)
	ctx := context.Background()
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "first.service"}); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() {
		_, err := h.a.Apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "second.service"})
		started <- err
	}()
	time.Sleep(time.Second)
	if u := h.unit("second.service"); u.ActiveState != "activating" || u.MainPID != 0 {
		t.Fatalf("second runs while first holds the lock: %+v", u)
	}
	// The lock is held by the child (fd 3), not the agent: it survives the
	// agent but goes with the process.
	h.apply(ctx, actuators.Step{Op: actuators.OpStop, Unit: "first.service"})
	if err := <-started; err != nil {
		t.Fatalf("second start: %v", err)
	}
	if u := h.unit("second.service"); !isActive(u) {
		t.Fatalf("second: %+v", u)
	}
}

func TestAdoptionAfterAbandon(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	obj := service("keep", desired.ServiceSpec{Command: sh(`echo run >> ` + runs + `; while :; do echo tick; sleep 0.2; done`)})
	h1 := newHarness(t, dir, Options{})
	h1.install(obj, true)
	h1.run()
	u1 := h1.waitUnit("keep.service", "running", isActive)
	waitFor(t, "output", func() bool { return strings.Contains(h1.out.String(), "keep: tick\n") })
	h1.abandon() // the agent goes away; the process stays
	if !alive(int(u1.MainPID)) {
		t.Fatal("process died with the agent")
	}
	time.Sleep(500 * time.Millisecond) // it keeps writing into the FIFO meanwhile
	// A supervisor that does not run (reconciler diff) sees it running.
	ro, err := New(dir, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := ro.Observe(context.Background(), []string{"keep.service"})
	if err != nil {
		t.Fatal(err)
	}
	if u := st.Units["keep.service"]; !isActive(u) || u.MainPID != u1.MainPID || u.LoadState != "loaded" || u.UnitFileState != "enabled" {
		t.Fatalf("offline observe: %+v", u)
	}
	h2 := newHarness(t, dir, Options{})
	h2.run()
	u2 := h2.waitUnit("keep.service", "adopted", isActive)
	if u2.MainPID != u1.MainPID || u2.ExecMainStartTimestamp != u1.ExecMainStartTimestamp {
		t.Fatalf("not adopted: pid %d -> %d", u1.MainPID, u2.MainPID)
	}
	waitFor(t, "output after adoption", func() bool { return strings.Contains(h2.out.String(), "keep: tick\n") })
	if n := len(lines(t, runs)); n != 1 {
		t.Fatalf("service ran %d times, want 1", n)
	}
	// The new agent controls it: stop works and the exit is seen.
	if _, err := h2.apply(context.Background(), actuators.Step{Op: actuators.OpStop, Unit: "keep.service"}); err != nil {
		t.Fatal(err)
	}
	if alive(int(u1.MainPID)) {
		t.Fatal("adopted process still alive after stop")
	}
}

func TestAdoptedExitRestarts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	h1 := newHarness(t, dir, Options{})
	h1.install(service("short", desired.ServiceSpec{Command: sh(`echo run >> ` + runs + `; exec sleep 1000`),
		Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "0s"}}), true)
	h1.run()
	u1 := h1.waitUnit("short.service", "running", isActive)
	h1.abandon()
	h2 := newHarness(t, dir, Options{})
	h2.run()
	h2.waitUnit("short.service", "adopted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID == u1.MainPID })
	syscallKill(t, int(u1.MainPID))
	u2 := h2.waitUnit("short.service", "restarted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != u1.MainPID })
	if u2.NRestarts != 1 || len(lines(t, runs)) != 2 {
		t.Fatalf("after adopted exit: %+v runs %d", u2, len(lines(t, runs)))
	}
}

func TestStaleGroupCleanup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	h1 := newHarness(t, dir, Options{})
	h1.install(service("grp", desired.ServiceSpec{Command: sh(`echo $$ >> ` + runs + `; sleep 1000 & exec sleep 1001`)}), true)
	h1.run()
	u1 := h1.waitUnit("grp.service", "running", isActive)
	waitFor(t, "helper", func() bool { return len(groupMembers("/proc", int(u1.MainPID), 0)) == 2 })
	old := groupMembers("/proc", int(u1.MainPID), 0)
	h1.abandon()
	// The main process dies while no agent runs; its helper lives on.
	syscallKill(t, int(u1.MainPID))
	waitFor(t, "main gone", func() bool { return !alive(int(u1.MainPID)) })

	h2 := newHarness(t, dir, Options{})
	h2.run()
	u2 := h2.waitUnit("grp.service", "restarted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != u1.MainPID })
	for _, p := range old {
		if alive(p) {
			t.Fatalf("stale process %d still alive", p)
		}
	}
	// The new process is active once it runs, before its shell wrote its line.
	waitFor(t, "second run recorded", func() bool { return len(lines(t, runs)) >= 2 })
	if n := len(lines(t, runs)); n != 2 {
		t.Fatalf("runs = %d", n)
	}
	_ = u2
}

func TestStopOnExitReverseOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{StopOnExit: true})
	order := filepath.Join(h.dir, "order")
	h.run()
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		// The service reports when its TERM trap is set: a start returns
		// once the process runs, before the shell ran a line, and a SIGTERM
		// before the trap kills it without a trace (the old flake: "b,a").
		ready := filepath.Join(h.dir, n+".ready")
		h.install(service(n, desired.ServiceSpec{
			Command:     sh(`trap 'echo ` + n + ` >> ` + order + `; exit 0' TERM; : > ` + ready + `; while :; do sleep 0.05; done`),
			StopTimeout: "5s"}), true)
		if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: n + ".service"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, n+" trap set", func() bool { _, err := os.Stat(ready); return err == nil })
	}
	var pids []int
	for _, n := range []string{"a", "b", "c"} {
		pids = append(pids, int(h.unit(n+".service").MainPID))
	}
	h.abandon() // with StopOnExit, Run stops everything before returning
	if got := strings.Join(lines(t, order), ","); got != "c,b,a" {
		t.Fatalf("stop order %q, want c,b,a", got)
	}
	for _, p := range pids {
		if alive(p) {
			t.Fatalf("pid %d alive after Run returned", p)
		}
	}
	b, _ := os.ReadFile(filepath.Join(h.dir, "processes.json"))
	var tab processTable
	json.Unmarshal(b, &tab)
	if len(tab.Processes) != 0 {
		t.Fatalf("process table not empty: %s", b)
	}
}

func TestObserveListsOwnedFiles(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	h.install(service("listed", desired.ServiceSpec{Command: []string{"true"}}), true)
	os.WriteFile(filepath.Join(h.s.UnitDir(), "foreign.service"), []byte("{}"), 0o644)
	st, err := h.s.Observe(context.Background(), []string{"wanted.service"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range st.Units {
		names = append(names, n)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "listed.service,wanted.service" {
		t.Fatalf("units %v", names)
	}
	if u := st.Units["wanted.service"]; u.LoadState != "not-found" || u.Exists() {
		t.Fatalf("wanted: %+v", u)
	}
	if u := st.Units["listed.service"]; u.UnitFileState != "enabled" || u.Owner != "Service/listed" || u.File == nil {
		t.Fatalf("listed: %+v", u)
	}
	// Removing refuses foreign files and is idempotent for owned ones.
	if _, err := h.a.Apply(context.Background(), actuators.Step{Op: actuators.OpRemoveFile, Path: filepath.Join(h.s.UnitDir(), "foreign.service")}); err == nil {
		t.Fatal("removed a foreign file")
	}
	for i, want := range []actuators.Result{actuators.Changed, actuators.Unchanged} {
		res, err := h.a.Apply(context.Background(), actuators.Step{Op: actuators.OpRemoveFile, Path: filepath.Join(h.s.UnitDir(), "listed.service")})
		if err != nil || res != want {
			t.Fatalf("remove #%d: %v %v", i, res, err)
		}
	}
}

// The stamp is observed like systemd's (so the planner can report
// TimerCatchUp/TimerMissed), and refresh-stamp touches only that stamp.
func TestTimerStampObservedAndRefreshed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	old := time.Date(2019, 12, 31, 0, 0, 0, 0, time.UTC)
	backdate(t, h.dir, "old.timer", old)
	h.install(timer("old", desired.TimerSpec{Schedule: []string{"daily"}, Persistent: true, Command: sh(`true`)}), true)
	u := h.unit("old.timer")
	want := h.s.stampPath("old.timer")
	if u.StampPath != want || u.StampUSec != uint64(old.UnixMicro()) {
		t.Fatalf("observed stamp %q %d, want %q %d", u.StampPath, u.StampUSec, want, old.UnixMicro())
	}
	ctx := context.Background()
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpRefreshStamp, Unit: "old.timer", Path: filepath.Join(h.dir, "elsewhere")}); err == nil {
		t.Fatal("refresh-stamp of a foreign path succeeded")
	}
	before := time.Now()
	if res, err := h.apply(ctx, actuators.Step{Op: actuators.OpRefreshStamp, Unit: "old.timer", Path: want}); err != nil || res != actuators.Changed {
		t.Fatalf("refresh-stamp: %v %v", res, err)
	}
	if got := h.s.readStamp("old.timer"); got.Before(before.Add(-time.Second)) {
		t.Fatalf("stamp %v not refreshed", got)
	}
	if u := h.unit("old.service"); u.StampPath != "" {
		t.Fatalf("a service has a stamp: %q", u.StampPath)
	}
}
