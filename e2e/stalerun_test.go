package e2e

// A run-once service that systemd keeps loaded (enabled: its [Install]
// links reference it), whose manifest changed, against a real systemd: an
// agent killed after any step of the pass that rewrites its unit file
// (before or after the daemon-reload, before the start) leaves the old
// run's history in place. The next agent must see that run as older than
// the file (observed.Unit.StaleRun) and run the new version exactly once,
// not take the old run for the new version's and call the service done.
// The same for a failed service whose manifest changed (the restart
// journal keeps its start owed): not left failed until the next change.

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestRunOnceChangeSurvivesCrashAfterEveryStep(t *testing.T) {
	crashEachStepOfChange(t, "once-crash", `["/bin/sh", "-c", "echo run $V >> /var/tmp/once-crash.runs; sleep 0.3"]`, "",
		"once-crash.service is inactive", "whose start was lost")
}

func TestFailedServiceChangeSurvivesCrashAfterEveryStep(t *testing.T) {
	// Version 1 fails; every later version runs and exits 0.
	crashEachStepOfChange(t, "failed-crash", `["/bin/sh", "-c", "echo run $V >> /var/tmp/failed-crash.runs; sleep 0.3; [ $V != 1 ]"]`, "",
		"failed-crash.service failed", "rewritten by an interrupted pass that did not start it")
}

// Not enabled, so systemd unloads it after each run (it reads as never
// run), under drift: report (a service found inactive is left as is):
// the restart journal keeps the start owed.
func TestUnloadedReportServiceChangeSurvivesCrashAfterEveryStep(t *testing.T) {
	crashEachStepOfChange(t, "report-crash", `["/bin/sh", "-c", "echo run $V >> /var/tmp/report-crash.runs; sleep 0.3"]`,
		"  enabled: false\n  drift: report\n", "report-crash.service is inactive", "rewritten by an interrupted pass that did not start it")
}

// A start that a false Condition*= skips leaves the last run's history in
// place, older than the unit file: the start was made, and is not made
// again on every pass.
func TestConditionSkippedStartNotRetried(t *testing.T) {
	e := newEnv(t)
	const allow = "/var/tmp/cond-once.allow"
	manifest := func(v int) string {
		return fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: cond-once}
spec:
  command: ["/bin/sh", "-c", "echo run $V >> /var/tmp/cond-once.runs"]
  environment: {V: "%d"}
  restart: {policy: never}
  systemd:
    Unit: {ConditionPathExists: "%s"}
`, v, allow)
	}
	runs := func() int {
		b, err := e.sb.ReadFile("/var/tmp/cond-once.runs")
		if err != nil {
			return 0
		}
		return strings.Count(string(b), "run ")
	}
	if err := e.sb.WriteFile(allow, []byte("yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.write("cond-once.yaml", manifest(1))
	e.apply(0)
	e.eventually("version 1 ran and exited", 30*time.Second, func() bool {
		return runs() == 1 && e.prop("cond-once.service", "ActiveState") == "inactive"
	})
	if err := e.sb.Remove(allow); err != nil {
		t.Fatal(err)
	}
	e.write("cond-once.yaml", manifest(2))
	out, errOut, code := e.reconciler("apply")
	t.Logf("apply of version 2 (its start skipped): exit %d\n%s%s", code, out, errOut)
	time.Sleep(300 * time.Millisecond)
	if p := e.show("cond-once.service", "ConditionResult", "ActiveState"); p["ConditionResult"] != "no" {
		t.Fatalf("the start was not skipped by its condition: %v", p)
	}
	for i := range 2 {
		if dout, _, dcode := e.reconciler("diff"); dcode != 0 || strings.Contains(dout, "start cond-once.service") {
			t.Fatalf("diff %d after the skipped start: exit %d, want 0 (no start again)\n%s", i, dcode, dout)
		}
		e.apply(0)
	}
	if n := runs(); n != 1 {
		t.Fatalf("ran %d times, want 1", n)
	}
}

// crashEachStepOfChange applies a run-once service (restart policy never)
// whose command appends "run $V" to /var/tmp/NAME.runs, then, for each
// step k but the last (the start) of the pass that applies a change of V,
// kills an apply after step k and checks that the next apply reports
// found (a finding of the owed start) and runs the new version exactly
// once, and that diff then has nothing to do.
func crashEachStepOfChange(t *testing.T, name, command, extra, first, found string) {
	e := newEnv(t)
	unit := name + ".service"
	runsFile := "/var/tmp/" + name + ".runs"
	manifest := func(v int) string {
		return fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: %s}
spec:
  command: %s
  environment: {V: "%d"}
  restart: {policy: never}
%s`, name, command, v, extra)
	}
	runs := func(v int) int {
		t.Helper()
		b, err := e.sb.ReadFile(runsFile)
		if err != nil {
			return 0
		}
		return strings.Count(string(b), fmt.Sprintf("run %d\n", v))
	}
	settled := func() string {
		p := e.show(unit, "ActiveState", "ExecMainStatus")
		switch {
		case p["ActiveState"] == "inactive" && p["ExecMainStatus"] == "0":
			return unit + " is inactive"
		case p["ActiveState"] == "failed":
			return unit + " failed"
		}
		return ""
	}
	e.write(name+".yaml", manifest(1))
	e.apply(0)
	e.eventually("version 1 ran: "+first, 30*time.Second, func() bool { return runs(1) == 1 && settled() == first })
	if p := e.show(unit, "UnitFileState"); extra == "" && p["UnitFileState"] != "enabled" {
		t.Fatalf("%s is %s, want enabled (systemd keeps it loaded)", unit, p["UnitFileState"])
	}

	// The plan of a change: its steps, each a crash point.
	e.write(name+".yaml", manifest(2))
	out, _, code := e.reconciler("diff", "-o", "json")
	var dj struct {
		Steps []struct {
			Text string `json:"text"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(out), &dj); err != nil || code != 1 {
		t.Fatalf("diff of the change: exit %d, %v\n%s", code, err, out)
	}
	n := len(dj.Steps)
	var texts []string
	for _, s := range dj.Steps {
		texts = append(texts, s.Text)
	}
	t.Logf("plan of a change (%d steps):\n%s", n, strings.Join(texts, "\n"))
	if n < 3 || !strings.HasPrefix(texts[n-1], "start "+unit) {
		t.Fatalf("the plan of a change does not end with a start:\n%s", strings.Join(texts, "\n"))
	}
	// The last step is the start: a crash after it leaves nothing owed.
	for k := 1; k < n; k++ {
		v := k + 1
		if k > 1 {
			e.write(name+".yaml", manifest(v))
		}
		cmd := e.sb.Command(e.ctx, agentBin, "apply", "--backend", "systemd", "--state-dir", "/var/lib/resil",
			"--log-format", "console", "--manifests", manifestsDir)
		cmd.Env = append(cmd.Env, fmt.Sprintf("RESIL_TEST_CRASH_AFTER_STEP=%d", k))
		cout, cerr, ccode := runCLI(t, cmd)
		if ccode != -1 && ccode != 137 {
			t.Fatalf("k=%d: apply with a crash after step %d exited %d, want killed\nstdout:\n%s\nstderr:\n%s", k, k, ccode, cout, cerr)
		}
		if got := runs(v); got != 0 {
			t.Fatalf("k=%d: version %d ran %d times before its start step", k, v, got)
		}
		// diff, then apply, see the start still owed.
		dout, _, dcode := e.reconciler("diff")
		if dcode != 1 || !strings.Contains(dout, "start "+unit) {
			t.Errorf("k=%d: diff after the crash: exit %d, want 1 with the start\n%s", k, dcode, dout)
		}
		aout := e.apply(0)
		e.eventually(fmt.Sprintf("k=%d: version %d ran and exited", k, v), 30*time.Second, func() bool {
			return runs(v) == 1 && settled() == unit+" is inactive"
		})
		if !strings.Contains(aout, found) {
			t.Errorf("k=%d: apply after the crash does not report the owed start (%q):\n%s", k, found, aout)
		}
		// Once, not on every pass.
		if dout, _, dcode := e.reconciler("diff"); dcode != 0 {
			t.Errorf("k=%d: diff after the new run: exit %d, want 0\n%s", k, dcode, dout)
		}
		e.apply(0)
		time.Sleep(500 * time.Millisecond)
		if got := runs(v); got != 1 {
			t.Fatalf("k=%d: version %d ran %d times, want 1", k, v, got)
		}
		if k < n-1 && settled() != unit+" is inactive" {
			t.Fatalf("k=%d: %s not done", k, unit)
		}
		if first != unit+" is inactive" {
			// Back to the failing version for the next crash point.
			e.write(name+".yaml", manifest(1))
			e.apply(0)
			e.eventually("version 1 failed again", 30*time.Second, func() bool { return settled() == first })
		}
	}
}
