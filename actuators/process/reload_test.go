package process

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

func TestReloadKeepsRunningSpecUntilRestart(t *testing.T) {
	t.Parallel()
	var wakes atomic.Int64
	h := newHarness(t, "", Options{Wake: func() { wakes.Add(1) }})
	h.run()
	v := func(s string) *desired.Object {
		return service("app", desired.ServiceSpec{Command: sh(`echo ` + s + `; exec sleep 1000`),
			Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "0s", Limit: &desired.StartLimit{Burst: 2, Interval: "1m"}}})
	}
	h.install(v("v1"), true)
	ctx := context.Background()
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "app.service"}); err != nil {
		t.Fatal(err)
	}
	pid := h.unit("app.service").MainPID
	h.install(v("v2"), true) // write + daemon-reload
	u := h.unit("app.service")
	if u.MainPID != pid || !isActive(u) || u.NeedDaemonReload {
		t.Fatalf("after reload: %+v", u)
	}
	if strings.Contains(h.out.String(), "app: v2") {
		t.Fatal("reload restarted the process")
	}
	if res, err := h.apply(ctx, actuators.Step{Op: actuators.OpRestart, Unit: "app.service"}); err != nil || res != actuators.Changed {
		t.Fatalf("restart: %v %v", res, err)
	}
	u = h.unit("app.service")
	if u.MainPID == pid || !isActive(u) || alive(int(pid)) {
		t.Fatalf("after restart: %+v", u)
	}
	waitFor(t, "v2 output", func() bool { return strings.Contains(h.out.String(), "app: v2\n") })
	// Manual starts count toward the limit (burst 2), as in systemd; the
	// restart with v2 was the first start of the new spec.
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpRestart, Unit: "app.service"}); err != nil {
		t.Fatalf("second start of v2: %v", err)
	}
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpRestart, Unit: "app.service"}); err == nil || !strings.Contains(err.Error(), ResultStartLimitHit) {
		t.Fatalf("third start in the window: %v", err)
	}
	h.install(v("v3"), true)
	if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: "app.service"}); err != nil {
		t.Fatalf("start after a spec change: %v", err)
	}
	if wakes.Load() == 0 {
		t.Fatal("wake hook never called")
	}
	// Disable is idempotent and drops the marker.
	for _, want := range []actuators.Result{actuators.Changed, actuators.Unchanged} {
		if res, err := h.apply(ctx, actuators.Step{Op: actuators.OpDisable, Unit: "app.service"}); err != nil || res != want {
			t.Fatalf("disable: %v %v, want %v", res, err, want)
		}
	}
	if u := h.unit("app.service"); u.UnitFileState != "disabled" {
		t.Fatalf("after disable: %+v", u)
	}
}

func TestEnabledUnitsStartWithAgent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	h.install(service("auto", desired.ServiceSpec{Command: []string{"sleep", "1000"}}), true)
	h.install(service("manual", desired.ServiceSpec{Command: []string{"sleep", "1000"}}), false)
	h.run()
	h.waitUnit("auto.service", "started", isActive)
	time.Sleep(300 * time.Millisecond)
	if u := h.unit("manual.service"); u.ActiveState != "inactive" {
		t.Fatalf("disabled unit started: %+v", u)
	}
}

// TestSubreaperReapsOrphans is not parallel: the subreaper flag and the
// wait4(-1) loop are process-wide.
func TestSubreaperReapsOrphans(t *testing.T) {
	h := newHarness(t, "", Options{Subreaper: true})
	h.run()
	// The subshell exits at once; its background sleep becomes an orphan,
	// re-parented to us (the subreaper), and must not stay a zombie.
	h.install(service("orphans", desired.ServiceSpec{Command: sh(`(sleep 0.2 &); exec sleep 1000`)}), false)
	if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "orphans.service"}); err != nil {
		t.Fatal(err)
	}
	main := h.unit("orphans.service").MainPID
	sawOrphan := false
	waitFor(t, "orphan reaped", func() bool {
		kids := childrenOf(os.Getpid())
		for _, k := range kids {
			if k.PGID == int(main) && k.PID != int(main) {
				sawOrphan = true
				return false // still there (running or zombie)
			}
		}
		return sawOrphan
	})
	h.waitUnit("orphans.service", "still running", func(u *observed.Unit) bool { return isActive(u) && u.MainPID == main })
}

func childrenOf(ppid int) []procStat {
	ents, _ := os.ReadDir("/proc")
	var out []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readProcStat("/proc", pid); err == nil && st.PPID == ppid {
			out = append(out, st)
		}
	}
	return out
}
