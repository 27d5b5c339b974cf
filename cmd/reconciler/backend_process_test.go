package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/observed"
)

// diff observes through a supervisor that never runs (status.json, the
// process table and /proc), apply through the running one (its in-memory
// status). The planner is the same; this checks that its inputs are too:
// after apply, diff plans nothing, and on the same state dir the read-only
// observation equals the live one, unit by unit and field by field.
func TestProcessBackendDiffObservesLikeApply(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	e.write("idle.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: idle}
spec:
  command: ["/bin/sleep", "infinity"]
  state: stopped
  enabled: false
`)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	if e.pid("web.service") == 0 {
		t.Fatal("apply did not start web.service")
	}
	if out, code := e.cli("diff"); code != 0 {
		t.Fatalf("diff after apply: exit %d\n%s", code, out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := &globals{stateDir: e.state}
	names := []string{"web.service", "idle.service"}

	// diff's observer (readOnly), before and while an agent runs.
	ro, err := openProcess(ctx, g, zaptest.NewLogger(t), true)
	if err != nil {
		t.Fatal(err)
	}
	before, err := ro.Observer.Observe(ctx, names)
	if err != nil {
		t.Fatal(err)
	}

	// apply's observer: the supervisor running, as in the agent.
	live, err := openProcess(ctx, g, zaptest.NewLogger(t), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(live.Background) != 1 {
		t.Fatalf("process backend: %d background tasks, want the supervisor", len(live.Background))
	}
	runErr := make(chan error, 1)
	go func() { runErr <- live.Background[0](ctx, func() {}) }()
	got, err := live.Observer.Observe(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	during, err := ro.Observer.Observe(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	cancel() // the processes keep running for the next agent
	if err := <-runErr; err != nil {
		t.Fatalf("supervisor: %v", err)
	}

	// In production diff runs in another process than the agent, and reads
	// status.json while the agent that wrote it lives. Here the agent was
	// this process: make status.json name a live process as its agent
	// (web's own process stands in), so diff takes that path too.
	fakeAgent(t, e.state, e.pid("web.service"))
	other, err := ro.Observer.Observe(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}

	if got.Units["web.service"].ActiveState != "active" || got.Units["idle.service"].ActiveState != "inactive" {
		t.Fatalf("live observation: web %s, idle %s", got.Units["web.service"].ActiveState, got.Units["idle.service"].ActiveState)
	}
	if j, err := json.Marshal(got.Units["web.service"]); err == nil {
		t.Logf("live web.service: %s", j)
	}
	for _, c := range []struct {
		name string
		st   *observed.State
	}{{"diff before the agent", before}, {"diff while the agent runs", during}, {"diff in another process than the agent", other}} {
		sameObservation(t, c.name, c.st, got)
	}
}

// sameObservation fails unless a and b (the live observation) hold the same
// units with equal fields; ReadAt, the time of the reading, may differ.
func sameObservation(t *testing.T, what string, a, b *observed.State) {
	t.Helper()
	if a.Backend != b.Backend || a.UnitDir != b.UnitDir {
		t.Errorf("%s: backend %s %s, live %s %s", what, a.Backend, a.UnitDir, b.Backend, b.UnitDir)
	}
	if ka, kb := slices.Sorted(maps.Keys(a.Units)), slices.Sorted(maps.Keys(b.Units)); !slices.Equal(ka, kb) {
		t.Fatalf("%s: units %v, live %v", what, ka, kb)
	}
	for n, ua := range a.Units {
		ub := b.Units[n]
		ja, _ := json.Marshal(ua)
		jb, _ := json.Marshal(ub)
		if !bytes.Equal(ja, jb) || !bytes.Equal(ua.File, ub.File) {
			t.Errorf("%s: %s differs from the live observation\n diff: %s\n live: %s", what, n, ja, jb)
		}
	}
}

// fakeAgent rewrites status.json in stateDir as written by the agent pid
// (its PID and /proc start time, as the supervisor records itself).
func fakeAgent(t *testing.T, stateDir string, pid int) {
	t.Helper()
	path := filepath.Join(stateDir, "status.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var snap map[string]any
	if err := json.Unmarshal(b, &snap); err != nil {
		t.Fatal(err)
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Fields after "(comm) " start with field 3 (state); starttime is field 22.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	start, err := strconv.ParseUint(fields[22-3], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if snap["agentPID"] == nil || snap["agentStart"] == nil {
		t.Fatalf("status.json has no agentPID/agentStart: %s", b)
	}
	snap["agentPID"], snap["agentStart"] = pid, start
	if b, err = json.Marshal(snap); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
