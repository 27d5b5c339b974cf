package process

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/syncbuf"
	"resil.dev/resil/observed"
)

type harness struct {
	t      *testing.T
	dir    string
	opts   Options
	s      *Supervisor
	a      *Applier
	out    *syncbuf.Buffer // the agent output
	cancel context.CancelFunc
	done   chan error
}

const waitLong = 30 * time.Second

func newHarness(t *testing.T, dir string, opts Options) *harness {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	h := &harness{t: t, dir: dir, opts: opts, out: new(syncbuf.Buffer)}
	if opts.Output == nil {
		h.opts.Output = h.out
	}
	s, err := New(dir, zaptest.NewLogger(t), h.opts)
	if err != nil {
		t.Fatal(err)
	}
	h.s, h.a = s, NewApplier(s)
	return h
}

// run starts Run and registers a cleanup that stops it (and, unless the
// test abandons it first, every unit).
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.s.Run(ctx) }()
	h.t.Cleanup(func() {
		if h.cancel == nil {
			return
		}
		h.stopUnits()
		h.abandon()
	})
	if err := h.s.waitReady(ctx); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) stopUnits() {
	h.s.mu.Lock()
	var names []string
	for n := range h.s.units {
		names = append(names, n)
	}
	h.s.mu.Unlock()
	for _, n := range names {
		if strings.HasSuffix(n, ".timer") {
			h.s.command(context.Background(), n, actuators.OpStop)
		}
	}
	for _, n := range names {
		h.s.command(context.Background(), n, actuators.OpStop)
	}
}

// abandon cancels Run without stopping units (like kill -9 of the agent, as
// far as the processes are concerned) and waits for it to return.
func (h *harness) abandon() {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(waitLong):
		h.t.Fatal("Run did not return")
	}
	h.cancel = nil
}

// install renders o and writes its files (enabled when enable); with Run
// already running it also reloads.
func (h *harness) install(o *desired.Object, enable bool) {
	h.t.Helper()
	if o.APIVersion == "" {
		o.APIVersion = desired.APIVersion
	}
	files, err := Render(o)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx := context.Background()
	for _, f := range files {
		h.apply(ctx, actuators.Step{Op: actuators.OpWriteFile, Path: filepath.Join(h.s.UnitDir(), f.Name), Data: f.Data, Unit: f.Name})
		if enable && (strings.HasSuffix(f.Name, ".timer") || o.Kind == desired.KindService) {
			h.apply(ctx, actuators.Step{Op: actuators.OpEnable, Unit: f.Name})
		}
	}
	if h.cancel != nil {
		h.apply(ctx, actuators.Step{Op: actuators.OpDaemonReload})
	}
}

func (h *harness) apply(ctx context.Context, st actuators.Step) (actuators.Result, error) {
	h.t.Helper()
	res, err := h.a.Apply(ctx, st)
	if err != nil && (st.Op == actuators.OpWriteFile || st.Op == actuators.OpEnable || st.Op == actuators.OpDaemonReload) {
		h.t.Fatalf("%s: %v", st, err)
	}
	return res, err
}

func (h *harness) unit(name string) *observed.Unit {
	h.t.Helper()
	st, err := h.s.Observe(context.Background(), []string{name})
	if err != nil {
		h.t.Fatal(err)
	}
	return st.Units[name]
}

// waitUnit polls until cond holds for the unit.
func (h *harness) waitUnit(name, what string, cond func(u *observed.Unit) bool) *observed.Unit {
	h.t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		u := h.unit(name)
		if cond(u) {
			return u
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: timed out waiting for %s; last: active=%s sub=%s result=%s restarts=%d pid=%d",
				name, what, u.ActiveState, u.SubState, u.Result, u.NRestarts, u.MainPID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func service(name string, spec desired.ServiceSpec) *desired.Object {
	return &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: name}, Service: &spec}
}

func timer(name string, spec desired.TimerSpec) *desired.Object {
	return &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindTimer, Metadata: desired.ObjectMeta{Name: name}, Timer: &spec}
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func isActive(u *observed.Unit) bool { return u.ActiveState == "active" && u.SubState == "running" }

func alive(pid int) bool {
	st, err := readProcStat("/proc", pid)
	return err == nil && st.State != 'Z'
}

func syscallKill(t *testing.T, pid int) {
	t.Helper()
	p, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
}
