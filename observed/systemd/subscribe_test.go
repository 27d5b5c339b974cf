package systemd

import (
	"context"
	"errors"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/internal/sdbus/sdbustest"
)

// subscribed starts Subscribe on an Observer that has observed worker.service
// (active/running, MainPID 4242) and returns its wake channel and a stop
// function that returns Subscribe's error.
func subscribed(t *testing.T) (*sdbustest.Fake, <-chan struct{}, func() error) {
	t.Helper()
	f, _, kick, stop := subscribedObserver(t)
	return f, kick, stop
}

// subscribedObserver is subscribed, also returning the Observer.
func subscribedObserver(t *testing.T) (*sdbustest.Fake, *Observer, <-chan struct{}, func() error) {
	t.Helper()
	f := sdbustest.New()
	f.AddUnit(sdbustest.Unit{Name: "worker.service", ActiveState: "active", SubState: "running", MainPID: 4242})
	f.AddUnit(sdbustest.Unit{Name: "other.service", ActiveState: "active", SubState: "running"})
	o := New(f, t.TempDir(), WithoutManager())
	if _, err := o.Observe(context.Background(), []string{"worker.service"}); err != nil {
		t.Fatal(err)
	}
	kick := make(chan struct{}, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Subscribe(ctx, func() { kick <- struct{}{} }) }()
	// Wait until the watch is registered.
	deadline := time.Now().Add(5 * time.Second)
	for f.CallCount("Subscribe") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Subscribe never watched")
		}
		time.Sleep(time.Millisecond)
	}
	stop := func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("Subscribe did not return after cancel")
			return nil
		}
	}
	t.Cleanup(func() { cancel() })
	return f, o, kick, stop
}

func expectWake(t *testing.T, kick <-chan struct{}, want bool, what string) {
	t.Helper()
	select {
	case <-kick:
		if !want {
			t.Errorf("%s: woke, want no wake", what)
		}
	case <-time.After(100 * time.Millisecond):
		if want {
			t.Errorf("%s: no wake within 100ms", what)
		}
	}
}

func TestSubscribeDeduplicates(t *testing.T) {
	f, kick, stop := subscribed(t)

	// Same values as the last Observe: systemd resends unchanged state.
	f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "active", "SubState": "running"})
	expectWake(t, kick, false, "unchanged state")

	f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "deactivating", "SubState": "stop-sigterm"})
	expectWake(t, kick, true, "state change")
	// The second copy systemd sends of every change.
	f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "deactivating", "SubState": "stop-sigterm"})
	expectWake(t, kick, false, "duplicate")

	f.Emit("worker.service", ifaceService, map[string]any{"MainPID": uint32(5000)})
	expectWake(t, kick, true, "MainPID change")
	f.Emit("worker.service", ifaceService, map[string]any{"MainPID": uint32(5000)})
	expectWake(t, kick, false, "same MainPID")

	f.Emit("other.service", ifaceUnit, map[string]any{"ActiveState": "failed", "SubState": "failed"})
	expectWake(t, kick, false, "unmanaged unit")
	f.Emit("worker.service", "org.freedesktop.systemd1.Timer", map[string]any{"LastTriggerUSec": uint64(1)})
	expectWake(t, kick, false, "other interface")

	if err := stop(); err != nil {
		t.Errorf("Subscribe = %v, want nil after cancel", err)
	}
	if f.CallCount("Unsubscribe") != 1 {
		t.Errorf("calls = %v, want one Unsubscribe", f.Calls())
	}
}

func TestSubscribeJobChangesWake(t *testing.T) {
	f, kick, stop := subscribed(t)
	ch := make(chan string, 1)
	if _, err := f.StopUnitContext(context.Background(), "worker.service", "replace", ch); err != nil {
		t.Fatal(err)
	}
	expectWake(t, kick, true, "stop")
	// The Service signal with MainPID 0 comes with the same change: it may
	// wake once more, never block.
	for len(kick) > 0 {
		<-kick
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestSubscribeDisconnect(t *testing.T) {
	f, _, stop := subscribed(t)
	f.CloseWatchers()
	if err := stop(); !errors.Is(err, ErrDisconnected) {
		t.Errorf("Subscribe = %v, want ErrDisconnected", err)
	}
}

func TestSubscribeOnceAtATime(t *testing.T) {
	f := sdbustest.New()
	o := New(f, t.TempDir(), WithoutManager())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Subscribe(ctx, func() {}) }()
	for f.CallCount("Subscribe") == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := o.Subscribe(ctx, func() {}); !errors.Is(err, ErrSubscribed) {
		t.Errorf("second Subscribe = %v, want ErrSubscribed", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

type noWatch struct{ Client }

func TestSubscribeNeedsWatcher(t *testing.T) {
	o := New(noWatch{sdbustest.New()}, t.TempDir())
	if err := o.Subscribe(context.Background(), func() {}); !errors.Is(err, ErrNoSignals) {
		t.Errorf("Subscribe = %v, want ErrNoSignals", err)
	}
}

// The agent's own job does not wake (its signals are recorded until the
// unit settles where the agent read it back); a crash afterwards does.
func TestSubscribeOwnJob(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, f *sdbustest.Fake, o *Observer, kick <-chan struct{})
	}{{
		name: "restart, read back, then a crash",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer, kick <-chan struct{}) {
			finished := o.JobQueued("worker.service")
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "active", "SubState": "running", "Job": []any{uint32(7), godbus.ObjectPath("/job/7")}})
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "deactivating", "SubState": "stop-sigterm", "Job": []any{uint32(7), godbus.ObjectPath("/job/7")}})
			f.Emit("worker.service", ifaceService, map[string]any{"MainPID": uint32(0)})
			f.Emit("worker.service", ifaceService, map[string]any{"MainPID": uint32(5000)})
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "active", "SubState": "running", "Job": []any{uint32(0), godbus.ObjectPath("/")}})
			expectWake(t, kick, false, "own restart")
			finished("active", "running")
			expectWake(t, kick, false, "own restart read back")
			f.Emit("worker.service", ifaceService, map[string]any{"MainPID": uint32(0)})
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "failed", "SubState": "failed"})
			expectWake(t, kick, true, "crash after the own restart")
		},
	}, {
		name: "the settling signal comes after the job's result",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer, kick <-chan struct{}) {
			finished := o.JobQueued("worker.service")
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "deactivating", "SubState": "stop-sigterm", "Job": []any{uint32(7), godbus.ObjectPath("/job/7")}})
			expectWake(t, kick, false, "own restart under way")
			finished("active", "running")
			f.Emit("worker.service", ifaceService, map[string]any{"MainPID": uint32(5000)})
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "active", "SubState": "running", "Job": []any{uint32(0), godbus.ObjectPath("/")}})
			expectWake(t, kick, false, "own restart settled")
			f.Emit("worker.service", ifaceService, map[string]any{"MainPID": uint32(5001)})
			expectWake(t, kick, true, "a new main process afterwards")
		},
	}, {
		name: "the job's signals come after its result",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer, kick <-chan struct{}) {
			// Seen running before the restart: the state the restart
			// leaves it in too. A watch that lags behind the job's
			// result (JobRemoved and the read back on another connection)
			// sees the restart's signals after finished.
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "active", "SubState": "running", "Job": []any{uint32(0), godbus.ObjectPath("/")}})
			time.Sleep(100 * time.Millisecond) // recorded; a wake it may cause is not the point
			select {
			case <-kick:
			default:
			}
			finished := o.JobQueued("worker.service")
			finished("active", "running")
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "deactivating", "SubState": "stop-sigterm", "Job": []any{uint32(7), godbus.ObjectPath("/job/7")}})
			f.Emit("worker.service", ifaceService, map[string]any{"MainPID": uint32(0)})
			f.Emit("worker.service", ifaceService, map[string]any{"MainPID": uint32(5000)})
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "active", "SubState": "running", "Job": []any{uint32(0), godbus.ObjectPath("/")}})
			expectWake(t, kick, false, "own restart's late signals")
			f.Emit("worker.service", ifaceService, map[string]any{"MainPID": uint32(0)})
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "failed", "SubState": "failed"})
			expectWake(t, kick, true, "crash after the own restart")
		},
	}, {
		name: "a failed own job releases the hold without a wake",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer, kick <-chan struct{}) {
			finished := o.JobQueued("worker.service")
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "failed", "SubState": "failed", "Job": []any{uint32(0), godbus.ObjectPath("/")}})
			expectWake(t, kick, false, "own failed job")
			finished("", "")
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "activating", "SubState": "auto-restart"})
			expectWake(t, kick, true, "a change after the failed job")
		},
	}, {
		name: "a unit that never settles where the agent left it wakes at the deadline",
		run: func(t *testing.T, f *sdbustest.Fake, o *Observer, kick <-chan struct{}) {
			defer func(d time.Duration) { ownJobSettle = d }(ownJobSettle)
			ownJobSettle = 50 * time.Millisecond
			finished := o.JobQueued("worker.service")
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "deactivating", "SubState": "stop-sigterm", "Job": []any{uint32(7), godbus.ObjectPath("/job/7")}})
			finished("active", "running")
			f.Emit("worker.service", ifaceUnit, map[string]any{"ActiveState": "failed", "SubState": "failed", "Job": []any{uint32(0), godbus.ObjectPath("/")}})
			select {
			case <-kick:
			case <-time.After(5 * time.Second):
				t.Fatal("no wake after the settle deadline")
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, o, kick, stop := subscribedObserver(t)
			tt.run(t, f, o, kick)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
