package process

import (
	"context"
	"reflect"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

func TestClassifyChange(t *testing.T) {
	svc := func(s desired.ServiceSpec) []byte {
		fs, err := Render(service("web", s))
		if err != nil {
			t.Fatal(err)
		}
		return fs[0].Data
	}
	base := desired.ServiceSpec{Command: []string{"/bin/sleep", "1000"}, Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "5s"}}
	with := func(f func(*desired.ServiceSpec)) []byte {
		s := base
		r := *base.Restart
		s.Restart = &r
		f(&s)
		return svc(s)
	}
	tests := []struct {
		name        string
		cur         []byte
		wantRestart bool
		wantKeys    []string
	}{
		{"same", svc(base), false, nil},
		{"restart delay", with(func(s *desired.ServiceSpec) { s.Restart.Delay = "1s" }), false, []string{"restart"}},
		{"restart policy and stop timeout", with(func(s *desired.ServiceSpec) { s.Restart.Policy = desired.RestartNever; s.StopTimeout = "3s" }), false, []string{"restart", "stopTimeout"}},
		{"command", with(func(s *desired.ServiceSpec) { s.Command = []string{"/bin/sleep", "2000"} }), true, []string{"command"}},
		{"environment and delay", with(func(s *desired.ServiceSpec) { s.Environment = map[string]string{"A": "1"}; s.Restart.Delay = "1s" }), true, []string{"environment"}},
		{"garbage", []byte("not a unit"), true, []string{"unit file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			restart, keys := ClassifyChange(svc(base), tt.cur)
			if restart != tt.wantRestart || !reflect.DeepEqual(keys, tt.wantKeys) {
				t.Fatalf("restart %v keys %v, want %v %v", restart, keys, tt.wantRestart, tt.wantKeys)
			}
		})
	}
}

// A unit file rewritten with only its restart policy changed applies on
// daemon-reload to the running unit: the process keeps running, is not
// stale (live, offline and after an agent restart), and its next exit
// follows the new policy.
func TestReloadOnlyChangeAppliesWithoutRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	v := func(policy desired.RestartPolicy) *desired.Object {
		return service("web", desired.ServiceSpec{Command: []string{"/bin/sleep", "1000"},
			Restart: &desired.RestartSpec{Policy: policy, Delay: "10ms"}})
	}
	h1 := newHarness(t, dir, Options{})
	h1.install(v(desired.RestartAlways), true)
	h1.run()
	u1 := h1.waitUnit("web.service", "running", isActive)
	files, err := Render(v(desired.RestartNever))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h1.apply(ctx, actuators.Step{Op: actuators.OpWriteFile, Unit: "web.service", Data: files[0].Data})
	// Written, not reloaded: the running process does not depend on it.
	if u := h1.unit("web.service"); u.StaleProcess || !u.NeedDaemonReload {
		t.Fatalf("written, not reloaded: stale %v reload %v", u.StaleProcess, u.NeedDaemonReload)
	}
	// The agent dies here: the next one adopts the process, not stale.
	h1.abandon()
	st, err := newHarness(t, dir, Options{}).s.Observe(ctx, []string{"web.service"})
	if err != nil {
		t.Fatal(err)
	}
	if u := st.Units["web.service"]; u.MainPID != u1.MainPID || u.StaleProcess {
		t.Fatalf("offline: pid %d (want %d) stale %v", u.MainPID, u1.MainPID, u.StaleProcess)
	}
	h2 := newHarness(t, dir, Options{})
	h2.run()
	u2 := h2.waitUnit("web.service", "adopted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID == u1.MainPID })
	if u2.StaleProcess {
		t.Fatalf("adopted process reported stale after a reload-only change")
	}
	h2.apply(ctx, actuators.Step{Op: actuators.OpDaemonReload})
	waitFor(t, "table row takes the new file", func() bool { return readTable(t, dir)["web.service"].SpecHash == fileHash(files[0].Data) })
	if u := h2.unit("web.service"); u.MainPID != u1.MainPID || u.StaleProcess || u.NeedDaemonReload {
		t.Fatalf("after reload: pid %d (want %d) stale %v reload %v", u.MainPID, u1.MainPID, u.StaleProcess, u.NeedDaemonReload)
	}
	// The new policy is in force: killed, it is not restarted.
	syscallKill(t, int(u1.MainPID))
	u3 := h2.waitUnit("web.service", "dead", func(u *observed.Unit) bool { return u.MainPID == 0 && !isActive(u) && u.SubState != "auto-restart" })
	if u3.NRestarts != 0 {
		t.Fatalf("restarted under the new policy never: %+v", u3)
	}
}

// A change the process depends on is stale after the reload, and the
// supervisor does not restart it on its own (the planner does).
func TestProcessAffectingChangeIsStale(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	v := func(arg string) *desired.Object {
		return service("web", desired.ServiceSpec{Command: []string{"/bin/sleep", arg}})
	}
	h := newHarness(t, dir, Options{})
	h.install(v("1000"), true)
	h.run()
	u1 := h.waitUnit("web.service", "running", isActive)
	files, err := Render(v("2000"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h.apply(ctx, actuators.Step{Op: actuators.OpWriteFile, Unit: "web.service", Data: files[0].Data})
	h.apply(ctx, actuators.Step{Op: actuators.OpDaemonReload})
	if u := h.unit("web.service"); u.MainPID != u1.MainPID || !u.StaleProcess {
		t.Fatalf("after reload: pid %d (want %d) stale %v", u.MainPID, u1.MainPID, u.StaleProcess)
	}
}
