package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cliErr is e.cli with the returned error's text (what main prints)
// appended to the output.
func (e *procEnv) cliErr(cmd string, extra ...string) (string, int) {
	e.t.Helper()
	args := append([]string{cmd, "--backend", "process", "--manifests", e.manifests, "--state-dir", e.state, "--owner-check", "off"}, extra...)
	return runCLIErr(e.t, args...)
}

const procJob = "apiVersion: resil.dev/v1\nkind: Timer\nmetadata: {name: job}\nspec:\n  schedule: [hourly]\n  command: [/bin/true]\n"

// pause, resume and status take a unit where they take an object, as
// reset and events do: web.service is Service/web, job.timer and the
// timer's inline job job.service are Timer/job. A unit no object declares
// is refused (QA: `pause web.service` exited 0 and paused nothing, with a
// lease web.service that no object can ever match).
func TestPauseResumeStatusTakeUnits(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	e.write("job.yaml", procJob)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	leases := func() string {
		t.Helper()
		ents, _ := os.ReadDir(filepath.Join(e.state, "leases"))
		var names []string
		for _, d := range ents {
			names = append(names, d.Name())
		}
		return strings.Join(names, " ")
	}
	out, code := e.cli("pause", "web.service", "job.service", "--for", "30m", "--reason", "by unit")
	if code != 0 || !strings.Contains(out, "Service/web paused until ") || !strings.Contains(out, "Timer/job paused until ") || strings.Contains(out, "warning") {
		t.Fatalf("pause web.service job.service: exit %d\n%s", code, out)
	}
	if got := leases(); got != "Service%2Fweb.json Timer%2Fjob.json" {
		t.Fatalf("leases after pause by unit: %s", got)
	}
	for _, name := range []string{"web.service", "job.timer", "job.service"} {
		out, code := e.cli("status", name)
		if code == 2 || !strings.Contains(out, "[PAUSED ") {
			t.Errorf("status %s: exit %d\n%s", name, code, out)
		}
	}
	if out, _ := e.cli("status", "job.timer"); strings.Contains(out, "Service") {
		t.Errorf("status job.timer lists a service:\n%s", out)
	}
	if out, code := e.cliErr("status", "nope.service"); code != 2 || !strings.Contains(out, "no such object") {
		t.Errorf("status nope.service: exit %d\n%s", code, out)
	}
	if out, code := e.cli("resume", "web.service", "job.timer"); code != 0 || !strings.Contains(out, "resumed Service/web") || !strings.Contains(out, "resumed Timer/job") {
		t.Fatalf("resume by unit: exit %d\n%s", code, out)
	}
	if got := leases(); got != "" {
		t.Fatalf("leases after resume by unit: %s", got)
	}
	for _, cmd := range []string{"pause", "resume"} {
		out, code := e.cliErr(cmd, "nope.service", "--for", "1m", "--reason", "x")
		if cmd == "resume" {
			out, code = e.cliErr(cmd, "nope.service")
		}
		if code != 2 || !strings.Contains(out, "nope.service is a unit no object declares") {
			t.Errorf("%s nope.service: exit %d\n%s", cmd, code, out)
		}
	}
	if got := leases(); got != "" {
		t.Fatalf("a refused pause left a lease: %s", got)
	}
}

// reset of an object resets every unit it owns: a timer whose job failed
// is Failed until its job is reset too (QA: `reset Timer/job` reset only
// job.timer). An ID of no object is refused; the kind is any case.
func TestResetObjectResetsItsUnits(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	e.write("job.yaml", procJob)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	out, code := e.cli("reset", "Timer/job")
	if code != 0 || !strings.Contains(out, "reset job.service (failed state cleared; not started: it is the job of job.timer") || !strings.Contains(out, "reset job.timer\n") {
		t.Fatalf("reset Timer/job: exit %d\n%s", code, out)
	}
	for _, u := range []string{"job.service", "job.timer"} {
		if _, err := os.Stat(filepath.Join(e.state, "reset", u)); err != nil {
			t.Errorf("no reset request of %s: %v", u, err)
		}
	}
	if out, code := e.cliErr("reset", "Service/job"); code != 1 || !strings.Contains(out, "no such object") {
		t.Errorf("reset Service/job (only Timer/job exists): exit %d\n%s", code, out)
	}
	if out, code := e.cli("reset", "service/web"); code != 0 || strings.TrimSpace(out) != "reset web.service" {
		t.Errorf("reset service/web: exit %d\n%s", code, out)
	}
}
