package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators/process"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/store"
)

// runCLI runs the root command and returns stdout and the exit code.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, code, _ := execCLI(args...)
	return out, code
}

// execCLI runs the CLI in this process: its output (stdout, then stderr),
// its exit status and the error it returned.
func execCLI(args ...string) (string, int, error) {
	root := newRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	code := 0
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case err != nil:
		code = 2
	}
	return out.String() + errb.String(), code, err
}

func TestStatusAndEventsCommands(t *testing.T) {
	dir := t.TempDir()
	if out, code := runCLI(t, "status", "--state-dir", dir); code != 2 || !strings.Contains(out, "") {
		t.Errorf("status without a store: exit %d\n%s", code, out)
	}
	s, err := store.Open(filepath.Join(dir, store.FileName), store.Options{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	ok := []store.ObjectStatus{
		{Object: "Service/web", Kind: "Service", Name: "web", Unit: "web.service", Desired: "running", Observed: "active (running)", Ready: reconcile.ReadyYes, State: string(reconcile.StateConverged), Updated: now, FirstSeen: now.Add(-3 * time.Hour)},
		{Object: "Timer/nightly", Kind: "Timer", Name: "nightly", Unit: "nightly.timer", Desired: "active", Observed: "active (waiting)", State: string(reconcile.StateConverged), Updated: now},
	}
	if err := s.PutStatus(ctx, ok, store.Agent{LastPass: now, PID: 7, Backend: "systemd"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddRestarts(ctx, []store.Restart{{Time: now, Object: "Service/web", Unit: "web.service", Cause: "auto"}, {Time: now, Object: "Service/web", Unit: "web.service", Cause: "manual"}}); err != nil {
		t.Fatal(err)
	}
	s.Record(reconcile.Event{Type: reconcile.Warning, Reason: reconcile.ReasonRestarted, Object: "Service/web", Unit: "web.service", Message: "web.service restarted (cause auto)"})
	s.Record(reconcile.Event{Type: reconcile.Normal, Reason: reconcile.ReasonApplied, Object: "Timer/nightly", Message: "start nightly.timer", Time: now.Add(-48 * time.Hour)})

	out, code := runCLI(t, "status", "--state-dir", dir)
	if code != 0 {
		t.Errorf("converged status exit %d\n%s", code, out)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "READY") || !strings.Contains(lines[0], "RESTARTS 24h") {
		t.Errorf("header: %q", lines[0])
	}
	if f := strings.Fields(lines[1]); len(f) < 9 || f[0] != "web" || f[5] != "yes" || f[6] != "2" || f[7] != "Restarted" || f[len(f)-1] != "3h" {
		t.Errorf("web row: %q", lines[1])
	}
	out, code = runCLI(t, "status", "--state-dir", dir, "-o", "json", "web")
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || len(rep.Objects) != 1 || rep.Objects[0].Restarts24h != 2 || rep.Objects[0].Ready != reconcile.ReadyYes || !rep.Converged {
		t.Errorf("json: exit %d %v\n%s", code, err, out)
	}
	if out, code := runCLI(t, "status", "--state-dir", dir, "nope"); code != 2 {
		t.Errorf("unknown name: exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "status", "--state-dir", dir, "-o", "yaml"); code != 0 || !strings.Contains(out, "converged: true") {
		t.Errorf("yaml: exit %d\n%s", code, out)
	}

	// A rollout record the agent refuses (writable by others): status says
	// so and exits 1, as the agent halts on any failed service meanwhile.
	rp := filepath.Join(dir, reconcile.RolloutFileName)
	if err := os.WriteFile(rp, []byte(`{"active":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(rp, 0o666); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "status", "--state-dir", dir); code != 1 || !strings.Contains(out, "rollout record refused: ") || !strings.Contains(out, reconcile.RolloutFileName) {
		t.Errorf("refused rollout record: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "status", "--state-dir", dir, "-o", "json")
	rep = statusReport{}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.RolloutError == "" || rep.Converged {
		t.Errorf("refused rollout record, json: exit %d %v\n%s", code, err, out)
	}
	if err := os.Remove(rp); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "status", "--state-dir", dir); code != 0 || strings.Contains(out, "rollout") {
		t.Errorf("record removed: exit %d\n%s", code, out)
	}

	// Something fails: exit 1.
	ok[1].State, ok[1].Failed = string(reconcile.StateFailed), true
	if err := s.PutStatus(ctx, ok, store.Agent{LastPass: now, PID: 7, Backend: "systemd"}); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "status", "--state-dir", dir); code != 1 || !strings.Contains(out, "[Failed]") {
		t.Errorf("failed status: exit %d\n%s", code, out)
	}
	if _, code := runCLI(t, "status", "--state-dir", dir, "web"); code != 0 {
		t.Errorf("status of the healthy one alone: exit %d", code)
	}

	out, code = runCLI(t, "events", "--state-dir", dir, "--since", "24h")
	if code != 0 || !strings.Contains(out, "Restarted") || strings.Contains(out, "start nightly.timer") {
		t.Errorf("events --since 24h: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "events", "--state-dir", dir, "--type", "Warning", "-o", "json")
	var evs []store.StoredEvent
	if err := json.Unmarshal([]byte(out), &evs); err != nil || code != 0 || len(evs) != 1 || evs[0].Reason != reconcile.ReasonRestarted {
		t.Errorf("events json: exit %d %v\n%s", code, err, out)
	}
	out, code = runCLI(t, "events", "--state-dir", dir, "--object", "nightly")
	if code != 0 || !strings.Contains(out, "start nightly.timer") || strings.Contains(out, "Restarted") {
		t.Errorf("events --object: exit %d\n%s", code, out)
	}
}

// status says when the process that made the last pass no longer runs
// (an apply, or an agent killed): nothing has watched the host since.
func TestStatusSaysWhenTheAgentIsGone(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(filepath.Join(dir, store.FileName), store.Options{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	gone := exec.Command("/bin/true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	live := exec.Command("/bin/sleep", "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { live.Process.Kill(); live.Wait() }()
	start, ok := process.StartTime(live.Process.Pid)
	if !ok {
		t.Fatal("no start time for a live process")
	}
	for _, tt := range []struct {
		pid      int
		start    uint64
		command  string
		want     string
		wantCode int
	}{
		{gone.Process.Pid, 0, "", "no longer running", 0},
		// An apply's pass: it was to exit.
		{gone.Process.Pid, 0, "apply", "(pid", 0},
		// An agent's: nothing watches the host, the rows may be stale.
		{gone.Process.Pid, 0, "run", "(agent pid", 1},
		{live.Process.Pid, 0, "run", fmt.Sprintf("(agent pid %d, process backend)", live.Process.Pid), 0},
		{live.Process.Pid, start, "run", fmt.Sprintf("(agent pid %d, process backend)", live.Process.Pid), 0},
		// The recorded agent's PID now taken by another process.
		{live.Process.Pid, start + 1, "run", "no longer running", 1},
	} {
		if err := s.PutStatus(context.Background(), nil, store.Agent{LastPass: time.Now(), PID: tt.pid, PIDStart: tt.start, Backend: "process", Command: tt.command}); err != nil {
			t.Fatal(err)
		}
		if out, code := runCLI(t, "status", "--state-dir", dir); !strings.Contains(out, tt.want) || code != tt.wantCode {
			t.Errorf("pid %d started at %d by %q: exit %d, want %d and %q:\n%s", tt.pid, tt.start, tt.command, code, tt.wantCode, tt.want, out)
		}
		out, _ := runCLI(t, "status", "--state-dir", dir, "-o", "json")
		var rep statusReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.AgentGone != (tt.wantCode == 1) || rep.Agent.Command != tt.command {
			t.Errorf("pid %d by %q, json: agentGone %v, command %q (%v)\n%s", tt.pid, tt.command, rep.AgentGone, rep.Agent.Command, err, out)
		}
	}
}

// The row of a Timer kept from pruning shows the timer, not its inline
// job (which sorts first and is inactive between runs).
func TestGoneRowShowsTheObjectsOwnUnit(t *testing.T) {
	res := reconcile.Result{Observed: &observed.State{Units: map[string]*observed.Unit{
		"ta.service":  {Name: "ta.service", Owner: "Timer/ta", ActiveState: "inactive", SubState: "dead"},
		"ta.timer":    {Name: "ta.timer", Owner: "Timer/ta", ActiveState: "active", SubState: "waiting"},
		"web.service": {Name: "web.service", Owner: "Service/web", ActiveState: "active", SubState: "running"},
	}}}
	for _, tt := range []struct{ id, unit, observed string }{
		{"Timer/ta", "ta.timer", "active (waiting)"},
		{"Service/web", "web.service", "active (running)"},
	} {
		row := goneRow(res, tt.id, StatePruneBlocked, "", time.Now())
		if row.Unit != tt.unit || row.Observed != tt.observed {
			t.Errorf("%s: unit %s, observed %q; want %s, %q", tt.id, row.Unit, row.Observed, tt.unit, tt.observed)
		}
	}
}

// A new manifest held open for writing is not read, so it has no row:
// status names the file and is not converged while it lasts (QA: status
// showed nothing, exit 0; only diff and the events said ManifestBusy).
func TestStatusNamesManifestOpenForWriting(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	e.write("new.yaml", strings.Replace(procWeb, "name: web", "name: fresh", 1))
	w, err := os.OpenFile(filepath.Join(e.manifests, "new.yaml"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if out, code := e.cli("apply"); !strings.Contains(out, "ManifestBusy") {
		t.Fatalf("apply with new.yaml open: exit %d\n%s", code, out)
	}
	busy := filepath.Join(e.manifests, "new.yaml")
	out, code := e.cli("status")
	if code != 1 || !strings.Contains(out, "manifests open for writing (not read until closed;") || !strings.Contains(out, "\n"+busy+"\n") {
		t.Errorf("status with new.yaml open: exit %d\n%s", code, out)
	}
	out, _ = e.cli("status", "-o", "json")
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Agent.Busy != busy || rep.Converged {
		t.Errorf("status -o json: %v\n%s", err, out)
	}
	w.Close()
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply after close: exit %d\n%s", code, out)
	}
	if out, code := e.cli("status"); code != 0 || strings.Contains(out, "open for writing") || !strings.Contains(out, "fresh") {
		t.Errorf("status after close: exit %d\n%s", code, out)
	}
}
