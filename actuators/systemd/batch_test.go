package systemd

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/internal/sdbus/sdbustest"
	"resil.dev/resil/reconcile"
)

var _ reconcile.BatchApplier = (*Applier)(nil)

func steps(op actuators.Op, units ...string) []actuators.Step {
	var out []actuators.Step
	for _, u := range units {
		out = append(out, unitStep(op, u))
	}
	return out
}

type outcome struct {
	res actuators.Result
	err error // matched with errors.Is; errAny: any error
}

var errAny = errors.New("any error")

func checkOutcomes(t *testing.T, res []actuators.Result, errs []error, want []outcome) {
	t.Helper()
	for i, w := range want {
		switch {
		case res[i] != w.res:
			t.Errorf("step %d: result %s, want %s (err %v)", i, res[i], w.res, errs[i])
		case w.err == nil && errs[i] != nil:
			t.Errorf("step %d: err %v, want nil", i, errs[i])
		case w.err == errAny && errs[i] == nil:
			t.Errorf("step %d: no error, want one", i)
		case w.err != nil && w.err != errAny && !errors.Is(errs[i], w.err):
			t.Errorf("step %d: err %v, want %v", i, errs[i], w.err)
		}
	}
}

func TestApplyBatchUnitFiles(t *testing.T) {
	tests := []struct {
		name  string
		units []sdbustest.Unit
		op    actuators.Op
		batch []string
		want  []outcome
		calls []string // the fake's calls, in order
	}{{
		name:  "enable: one call for every file, one read back",
		units: []sdbustest.Unit{{Name: "a.service"}, {Name: "b.service", UnitFileState: "enabled"}, {Name: "s.service", NoInstall: true, UnitFileState: "static"}},
		op:    actuators.OpEnable, batch: []string{"a.service", "b.service", "s.service"},
		want:  []outcome{{actuators.Changed, nil}, {actuators.Unchanged, nil}, {actuators.Unchanged, ErrNoInstallInfo}},
		calls: []string{"EnableUnitFiles a.service b.service s.service", "ListUnitFilesByPatterns a.service b.service s.service"},
	}, {
		name:  "enable: a missing file fails the call; each step alone says which",
		units: []sdbustest.Unit{{Name: "a.service"}, {Name: "b.service"}},
		op:    actuators.OpEnable, batch: []string{"a.service", "missing.service", "b.service"},
		want: []outcome{{actuators.Changed, nil}, {actuators.Unchanged, errAny}, {actuators.Changed, nil}},
		calls: []string{"EnableUnitFiles a.service missing.service b.service",
			"EnableUnitFiles a.service", "ListUnitFilesByPatterns a.service", "EnableUnitFiles missing.service",
			"EnableUnitFiles b.service", "ListUnitFilesByPatterns b.service"},
	}, {
		name:  "enable: systemd says done but the file is not enabled",
		units: []sdbustest.Unit{{Name: "a.service"}, {Name: "inert.service", Inert: true}},
		op:    actuators.OpEnable, batch: []string{"a.service", "inert.service"},
		want:  []outcome{{actuators.Changed, nil}, {actuators.Changed, ErrNotObserved}},
		calls: []string{"EnableUnitFiles a.service inert.service", "ListUnitFilesByPatterns a.service inert.service"},
	}, {
		name:  "disable: one call, one read back",
		units: []sdbustest.Unit{{Name: "a.service", UnitFileState: "enabled"}, {Name: "b.service", UnitFileState: "disabled"}},
		op:    actuators.OpDisable, batch: []string{"a.service", "b.service"},
		want:  []outcome{{actuators.Changed, nil}, {actuators.Unchanged, nil}},
		calls: []string{"DisableUnitFiles a.service b.service", "ListUnitFilesByPatterns a.service b.service"},
	}, {
		name:  "disable: a unit file that is gone counts as disabled",
		units: []sdbustest.Unit{{Name: "a.service", UnitFileState: "enabled"}},
		op:    actuators.OpDisable, batch: []string{"a.service", "gone.service"},
		want: []outcome{{actuators.Changed, nil}, {actuators.Unchanged, nil}},
		calls: []string{"DisableUnitFiles a.service gone.service",
			"DisableUnitFiles a.service", "ListUnitFilesByPatterns a.service", "DisableUnitFiles gone.service"},
	}, {
		name:  "an invalid step fails alone",
		units: []sdbustest.Unit{{Name: "a.service"}},
		op:    actuators.OpEnable, batch: []string{"a.service", ""},
		want:  []outcome{{actuators.Changed, nil}, {actuators.Unchanged, ErrInvalidStep}},
		calls: []string{"EnableUnitFiles a.service", "ListUnitFilesByPatterns a.service"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			for _, u := range tt.units {
				e.f.AddUnit(u)
			}
			res, errs := e.a.ApplyBatch(context.Background(), steps(tt.op, tt.batch...))
			checkOutcomes(t, res, errs, tt.want)
			if got := e.f.Calls(); !slices.Equal(got, tt.calls) {
				t.Errorf("calls = %q, want %q", got, tt.calls)
			}
		})
	}
}

func TestApplyBatchJobs(t *testing.T) {
	tests := []struct {
		name  string
		units []sdbustest.Unit
		op    actuators.Op
		batch []string
		want  []outcome
		calls []string
	}{{
		name: "start: one re-check, every job queued, one read back",
		units: []sdbustest.Unit{{Name: "a.service", ActiveState: "inactive"}, {Name: "b.service", ActiveState: "active", SubState: "running"},
			{Name: "c.service", ActiveState: "inactive"}},
		op: actuators.OpStart, batch: []string{"a.service", "b.service", "c.service"},
		want: []outcome{{actuators.Changed, nil}, {actuators.Unchanged, nil}, {actuators.Changed, nil}},
		calls: []string{"ListUnitsByNames a.service b.service c.service", "StartUnit a.service", "StartUnit c.service",
			"ListUnitsByNames a.service c.service"},
	}, {
		name: "start: a failed job fails its own step only",
		units: []sdbustest.Unit{{Name: "a.service", ActiveState: "inactive"},
			{Name: "bad.service", ActiveState: "inactive", JobResult: map[string]string{"start": "failed"}}},
		op: actuators.OpStart, batch: []string{"a.service", "bad.service"},
		want:  []outcome{{actuators.Changed, nil}, {actuators.Changed, &JobError{}}},
		calls: []string{"ListUnitsByNames a.service bad.service", "StartUnit a.service", "StartUnit bad.service", "ListUnitsByNames a.service"},
	}, {
		name:  "start: done, but the unit is not running afterwards",
		units: []sdbustest.Unit{{Name: "a.service", ActiveState: "inactive"}, {Name: "inert.service", ActiveState: "inactive", Inert: true}},
		op:    actuators.OpStart, batch: []string{"a.service", "inert.service"},
		want: []outcome{{actuators.Changed, nil}, {actuators.Changed, ErrNotObserved}},
	}, {
		name:  "stop: re-check leaves the stopped one alone",
		units: []sdbustest.Unit{{Name: "a.service", ActiveState: "active", SubState: "running"}, {Name: "b.service", ActiveState: "failed"}},
		op:    actuators.OpStop, batch: []string{"a.service", "b.service"},
		want:  []outcome{{actuators.Changed, nil}, {actuators.Unchanged, nil}},
		calls: []string{"ListUnitsByNames a.service b.service", "StopUnit a.service", "ListUnitsByNames a.service"},
	}, {
		name: "restart: a new main process for each",
		units: []sdbustest.Unit{{Name: "a.service", ActiveState: "active", SubState: "running", MainPID: 10, ExecMainStartTimestamp: 5},
			{Name: "b.service", ActiveState: "active", SubState: "running", MainPID: 11, ExecMainStartTimestamp: 6}},
		op: actuators.OpRestart, batch: []string{"a.service", "b.service"},
		want: []outcome{{actuators.Changed, nil}, {actuators.Changed, nil}},
	}, {
		name: "restart: systemd says done but the main process is the old one",
		units: []sdbustest.Unit{{Name: "a.service", ActiveState: "active", SubState: "running", MainPID: 10, ExecMainStartTimestamp: 5, Inert: true},
			{Name: "b.service", ActiveState: "active", SubState: "running", MainPID: 11, ExecMainStartTimestamp: 6}},
		op: actuators.OpRestart, batch: []string{"a.service", "b.service"},
		want: []outcome{{actuators.Changed, ErrNotObserved}, {actuators.Changed, nil}},
	}, {
		name:  "start: a missing unit fails to queue, the others run",
		units: []sdbustest.Unit{{Name: "a.service", ActiveState: "inactive"}},
		op:    actuators.OpStart, batch: []string{"missing.service", "a.service"},
		want: []outcome{{actuators.Unchanged, errAny}, {actuators.Changed, nil}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			for _, u := range tt.units {
				e.f.AddUnit(u)
			}
			res, errs := e.a.ApplyBatch(context.Background(), steps(tt.op, tt.batch...))
			for i, w := range tt.want {
				if _, ok := w.err.(*JobError); ok {
					var je *JobError
					if !errors.As(errs[i], &je) || res[i] != w.res {
						t.Errorf("step %d: %s, %v; want %s, *JobError", i, res[i], errs[i], w.res)
					}
					tt.want[i] = outcome{res[i], errs[i]}
				}
			}
			checkOutcomes(t, res, errs, tt.want)
			if tt.calls != nil {
				if got := e.f.Calls(); !slices.Equal(got, tt.calls) {
					t.Errorf("calls = %q, want %q", got, tt.calls)
				}
			}
		})
	}
}

// Every job is queued before any is waited for: a hanging job times out
// without holding back the others, and the whole batch shares one timeout.
func TestApplyBatchJobTimeout(t *testing.T) {
	e := newEnv(t, WithJobTimeout(50*time.Millisecond))
	e.f.AddUnit(sdbustest.Unit{Name: "slow.service", ActiveState: "inactive", HangJobs: true})
	e.f.AddUnit(sdbustest.Unit{Name: "a.service", ActiveState: "inactive"})
	e.f.AddUnit(sdbustest.Unit{Name: "slow2.service", ActiveState: "inactive", HangJobs: true})
	res, errs := e.a.ApplyBatch(context.Background(), steps(actuators.OpStart, "slow.service", "a.service", "slow2.service"))
	checkOutcomes(t, res, errs, []outcome{{actuators.Changed, ErrJobTimeout}, {actuators.Changed, nil}, {actuators.Changed, ErrJobTimeout}})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e2 := newEnv(t)
	e2.f.AddUnit(sdbustest.Unit{Name: "slow.service", ActiveState: "inactive", HangJobs: true})
	_, errs = e2.a.ApplyBatch(ctx, steps(actuators.OpStart, "slow.service"))
	if !errors.Is(errs[0], context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", errs[0])
	}
}
