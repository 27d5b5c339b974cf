package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

// readyAgents is how many units the Ready tests adopt at once: each is a
// chance for a unit goroutine to lag behind Ready.
const readyAgents = 12

// startAbandoned starts n services (and one timer) with a first
// supervisor and abandons them, as a killed agent does; it returns their
// PIDs by unit.
func startAbandoned(t *testing.T, dir string, n int) map[string]uint32 {
	t.Helper()
	h := newHarness(t, dir, Options{})
	h.run()
	for i := 0; i < n; i++ {
		h.install(service(fmt.Sprintf("s%02d", i), desired.ServiceSpec{Command: []string{"sleep", "1000"}}), true)
	}
	h.install(timer("tick", desired.TimerSpec{Schedule: []string{"hourly"}, Command: []string{"true"}}), true)
	pids := map[string]uint32{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("s%02d.service", i)
		h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: name})
		pids[name] = h.unit(name).MainPID
	}
	h.abandon()
	t.Cleanup(func() {
		for _, pid := range pids {
			signalGroup(int(pid), 9)
			reapAfter(int(pid))
		}
	})
	return pids
}

// runAgain starts a second supervisor on dir and returns once it is Ready,
// without the harness's waiting or polling. Its unit goroutines are
// scheduled late (testHookBeforeInit), so whatever Ready does not wait for
// shows; the callers therefore do not run in parallel.
func runAgain(t *testing.T, dir string) *harness {
	t.Helper()
	testHookBeforeInit = func() { time.Sleep(100 * time.Millisecond) }
	t.Cleanup(func() { testHookBeforeInit = nil })
	h := newHarness(t, dir, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.s.Run(ctx) }()
	t.Cleanup(func() {
		if h.cancel != nil {
			h.abandon()
		}
	})
	<-h.s.Ready()
	return h
}

// Once Ready is closed, Observe must show every adopted process: the first
// pass of a restarted agent plans from it, and a unit seen inactive there is
// started twice, or, when its manifest was deleted, pruned without a stop
// (its process left running).
func TestObserveAtReadySeesAdoptedProcesses(t *testing.T) {
	dir := t.TempDir()
	pids := startAbandoned(t, dir, readyAgents)
	h := runAgain(t, dir)
	st, err := h.s.Observe(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, pid := range pids {
		u := st.Units[name]
		if u == nil {
			t.Errorf("%s not observed at Ready", name)
		} else if !isActive(u) || u.MainPID != pid {
			t.Errorf("%s at Ready: %s/%s pid %d, want active/running pid %d", name, u.ActiveState, u.SubState, u.MainPID, pid)
		}
	}
}

// The first pass after a restart may remove unit files and reload at once
// (the manifests were deleted while no agent ran): the reload must not
// overtake the adoption of the units it unloads, and stopping them after
// the reload still stops their processes.
func TestReloadAtReadyThenStopAdopted(t *testing.T) {
	dir := t.TempDir()
	pids := startAbandoned(t, dir, readyAgents)
	h := runAgain(t, dir)
	ctx := context.Background()
	for name := range pids {
		h.apply(ctx, actuators.Step{Op: actuators.OpRemoveFile, Path: filepath.Join(h.s.UnitDir(), name), Unit: name})
	}
	h.apply(ctx, actuators.Step{Op: actuators.OpDaemonReload})
	for name, pid := range pids {
		if res, err := h.apply(ctx, actuators.Step{Op: actuators.OpStop, Unit: name}); err != nil || res != actuators.Changed {
			t.Errorf("stop %s: %v %v", name, res, err)
		}
		reapAfter(int(pid))
		if alive(int(pid)) {
			t.Errorf("%s: pid %d still runs after its stop", name, pid)
		}
	}
	h.abandon()
	if _, err := os.Stat(filepath.Join(dir, "processes.json")); err != nil {
		t.Fatal(err)
	}
	s, err := New(dir, zaptest.NewLogger(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.loadTable()
	if len(s.table) != 0 {
		t.Errorf("process table after the stops: %+v", s.table)
	}
}

// A unit whose goroutine has not set its first status is left out of
// status.json, so a diff reading it while the agent starts judges that unit
// by the process table (running if its recorded process runs), not as
// inactive.
func TestSnapshotLeavesOutUnitsNotYetInitialized(t *testing.T) {
	t.Parallel()
	s, err := New(t.TempDir(), zaptest.NewLogger(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.units["adopting.service"] = &unit{s: s, name: "adopting.service"}
	s.units["up.service"] = &unit{s: s, name: "up.service", st: status{ActiveState: "active", SubState: "running", MainPID: 42}}
	s.writeSnapshot()
	snap, _ := s.loadSnapshot()
	if _, ok := snap.Units["adopting.service"]; ok {
		t.Errorf("uninitialized unit in status.json: %+v", snap.Units)
	}
	if u := snap.Units["up.service"]; u.ActiveState != "active" || u.MainPID != 42 {
		t.Errorf("up.service in status.json: %+v", u)
	}
}
