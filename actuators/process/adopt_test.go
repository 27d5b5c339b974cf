package process

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

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
	// Active once forked: its shell writes "run" a moment later.
	waitFor(t, "the restarted process's run", func() bool { return len(lines(t, runs)) >= 2 })
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
