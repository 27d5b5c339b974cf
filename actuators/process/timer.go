package process

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/desired/calendar"
)

// Timer jobs: a timer's trigger is ignored while its job is not idle (never
// two runs at once). retry: {attempts, delay} retries within one run, as
// the loop the systemd backend renders into ExecStart: between attempts the
// job stays activating (a trigger is ignored), no restart is counted, and
// after the last attempt it fails with that attempt's result (exit-code).
// A job has no start limit: its schedule is the timer's business.

// opReload tells a timer that its spec changed.
const opReload actuators.Op = "reload"

// timerState is the goroutine-local state of a timer unit.
type timerState struct {
	u        *unit
	log      *zap.Logger
	spec     *Spec
	cals     []*calendar.Spec
	active   bool
	last     time.Time // last trigger
	bootDone bool
	bootFor  time.Duration // the onBoot that bootDone is for: a changed one is scheduled again if still ahead
	// held: started at Run before Release (Options.HoldUntilRelease),
	// active with nothing scheduled: at Release it starts from the spec
	// loaded then (catch-up, reported as the supervisor's; schedule).
	held bool
	t    *time.Timer
	tC   <-chan time.Time
}

// runTimer is the goroutine of one timer unit: while active it sleeps until
// the next elapse and then asks the target unit to start (ignored when that
// unit is already running, so a job never runs twice at once). It closes
// initialized once the timer's first status is set.
func (u *unit) runTimer(ctx context.Context, initialized chan<- struct{}) {
	t := &timerState{u: u, log: u.s.log.With(zap.String("unit", u.name)), last: u.s.readStamp(u.name)}
	defer t.stop()
	u.update(func(st *status) {
		st.LastTrigger = t.last
		if st.ActiveState == "" {
			st.ActiveState, st.SubState = "inactive", "dead"
		}
	})
	close(initialized)
	for {
		var relC <-chan struct{}
		if t.held {
			relC = u.s.released
		}
		select {
		case <-ctx.Done():
			return
		case <-relC:
			t.held = false
			if err := t.start(true); err != nil {
				t.deactivate()
				t.log.Info("held timer not started", zap.Error(err))
			}
		case c := <-u.cmds:
			// A timer acts at once: the command is taken (startEnabled's
			// wait ends) once its status says what it did, so the first
			// pass after Ready sees a started timer active.
			answer := func(res actuators.Result, err error) {
				c.done()
				c.answer(res, err)
			}
			switch c.op {
			case actuators.OpStart, opTrigger:
				if t.active {
					answer(actuators.Unchanged, nil)
					continue
				}
				if c.atRun && !u.s.isReleased() {
					answer(actuators.Changed, t.hold())
					continue
				}
				answer(actuators.Changed, t.start(c.atRun))
			case actuators.OpStop:
				if !t.active {
					answer(actuators.Unchanged, nil)
					continue
				}
				t.deactivate()
				answer(actuators.Changed, nil)
			case actuators.OpRestart:
				t.deactivate()
				answer(actuators.Changed, t.start(false))
			case opReload:
				// A held timer starts from the spec loaded at Release.
				if t.active && !t.held && t.u.loaded() != t.spec {
					t.deactivate()
					if err := t.start(false); err != nil {
						t.log.Error("timer restart after reload failed", zap.Error(err))
					}
				}
				answer(actuators.Unchanged, nil)
			default: // reset-failed
				if c.thenStart && !t.active {
					answer(actuators.Changed, t.start(false))
					continue
				}
				answer(actuators.Unchanged, nil)
			}
		case <-t.tC:
			t.tC = nil
			t.fire("schedule")
			t.schedule()
		}
	}
}

func (t *timerState) stop() {
	if t.t != nil {
		t.t.Stop()
	}
	t.t, t.tC = nil, nil
}

// hold activates the timer without scheduling anything until Release
// (Options.HoldUntilRelease): its runs, a catch-up's too, are decided then,
// from the unit file the first pass left.
func (t *timerState) hold() error {
	if t.u.loaded() == nil {
		return errors.New("timer not loaded")
	}
	t.active, t.held = true, true
	t.u.update(func(st *status) {
		st.ActiveState, st.SubState, st.Result, st.NextElapse = "active", "waiting", ResultSuccess, time.Time{}
	})
	return nil
}

func (t *timerState) deactivate() {
	t.stop()
	t.active, t.held = false, false
	t.u.update(func(st *status) {
		st.ActiveState, st.SubState, st.NextElapse = "inactive", "dead", time.Time{}
	})
}

// start activates the timer; report: its catch-up decision is recorded as
// an event (a start no pass planned, see command.atRun).
func (t *timerState) start(report bool) error {
	spec := t.u.loaded()
	if spec == nil || spec.Timer == nil {
		return errors.New("timer not loaded")
	}
	cals, err := parseSchedules(spec.Timer.Schedule)
	if err != nil {
		t.u.update(func(st *status) { st.ActiveState, st.SubState, st.Result = "failed", "failed", ResultExitCode })
		return err
	}
	t.spec, t.cals, t.active = spec, cals, true
	if st := t.u.s.readStamp(t.u.name); st.After(t.last) {
		t.last = st // refreshed by the agent (a run over maxLateness skipped)
	}
	t.u.update(func(st *status) { st.Result = ResultSuccess })
	t.catchUp(report)
	t.schedule()
	return nil
}

func parseSchedules(exprs []string) ([]*calendar.Spec, error) {
	var cals []*calendar.Spec
	for _, e := range exprs {
		c, err := calendar.Parse(e)
		if err != nil {
			return nil, err
		}
		cals = append(cals, c)
	}
	return cals, nil
}

// catchUp fires once for calendar runs missed while the agent was down
// (persistent timers with a stamp, catchUp once). A miss whose earliest
// due time is more than maxLateness ago is skipped (the stamp refreshed)
// instead; report records the decision as an event.
func (t *timerState) catchUp(report bool) {
	ts := t.spec.Timer
	if !ts.Persistent || ts.CatchUp == desired.CatchUpSkip || t.last.IsZero() {
		return
	}
	now := t.u.s.now()
	// As the planner judges it for systemd (plan_timer.go catchUp): the
	// missed run is the earliest one after the last trigger, and its
	// lateness decides, however many runs followed it.
	var missed time.Time
	for _, c := range t.cals {
		if n, ok := c.Next(t.last); ok && (missed.IsZero() || n.Before(missed)) {
			missed = n
		}
	}
	if missed.IsZero() || !missed.Before(now) {
		return
	}
	late := now.Sub(missed).Truncate(time.Second)
	last := t.last.Format(time.RFC3339)
	if ml := ts.MaxLateness.D(); ts.MaxLateness.IsSet() && late > ml {
		t.log.Warn("missed timer run skipped", zap.Time("due", missed), zap.Duration("late", late), zap.Duration("maxLateness", ml))
		t.u.update(func(st *status) { st.Missed++ })
		// Skipped for good: the stamp says so (as refresh-stamp does for
		// systemd), or the next agent would skip it, and report it, again.
		if err := t.u.s.writeStamp(t.u.name, now); err != nil {
			t.log.Error("write timer stamp failed", zap.Error(err))
		}
		t.u.s.event(report, eventTimerMissed, t.spec.Object, t.u.name, true, fmt.Sprintf("run due %s missed (last run %s) is %s late, over maxLateness %s: skipped; stamp refreshed",
			missed.Format(time.RFC3339), last, late, ml))
		return
	}
	t.log.Info("missed timer run caught up", zap.Time("due", missed))
	t.u.s.event(report, eventTimerCatchUp, t.spec.Object, t.u.name, false, fmt.Sprintf("run due %s missed (last run %s); run once now, %s late",
		missed.Format(time.RFC3339), last, late))
	t.fire("catch-up")
}

// Reasons of the events the supervisor reports itself (Options.Event): as
// reconcile's, which this package does not import.
const (
	eventTimerMissed  = "TimerMissed"
	eventTimerCatchUp = "TimerCatchUp"
)

// event hands one of the supervisor's own decisions to Options.Event
// (report false: a pass planned it and reports it).
func (s *Supervisor) event(report bool, reason, object, unit string, warning bool, msg string) {
	if report && s.opts.Event != nil {
		s.opts.Event(reason, object, unit, warning, msg)
	}
}

func (t *timerState) schedule() {
	t.stop()
	if !t.active {
		return
	}
	now := t.u.s.now()
	ts := t.spec.Timer
	var next time.Time
	consider := func(c time.Time) {
		if !c.IsZero() && (next.IsZero() || c.Before(next)) {
			next = c
		}
	}
	for _, c := range t.cals {
		if n, ok := c.Next(now); ok {
			consider(n)
		}
	}
	if d := ts.OnBoot.D(); ts.OnBoot.IsSet() && !(t.bootDone && t.bootFor == d) {
		at := t.u.s.boot.Add(d)
		if at.After(now) || !t.firedSinceBoot() {
			consider(at) // a past one fires at once: the first start after boot
		} else {
			// A changed onBoot already past, on a timer that fired since
			// boot: as systemd's daemon-reload, a one-time trigger in the
			// past is dropped, not fired late.
			t.bootDone, t.bootFor = true, d
		}
	}
	if d := ts.OnUnitActive.D(); d > 0 && !t.last.IsZero() {
		consider(t.last.Add(d))
	}
	if next.IsZero() {
		t.u.update(func(st *status) { st.ActiveState, st.SubState, st.NextElapse = "active", "elapsed", time.Time{} })
		return
	}
	if rd := ts.RandomizedDelay.D(); rd > 0 {
		next = next.Add(rand.N(rd))
	}
	wait := next.Sub(now)
	if wait < 0 {
		wait = 0
	}
	t.t = time.NewTimer(wait)
	t.tC = t.t.C
	t.u.update(func(st *status) { st.ActiveState, st.SubState, st.NextElapse = "active", "waiting", next })
}

// firedSinceBoot: the timer triggered since the boot's first agent started
// (the process backend's boot, Supervisor.boot). systemd keeps the last trigger in memory from
// the timer's start, and its reload drops one-time triggers already past
// only when there is one.
func (t *timerState) firedSinceBoot() bool {
	return !t.last.IsZero() && !t.last.Before(t.u.s.boot)
}

// fire triggers the target and stores the trigger time (atomically) for
// persistent catch-up after a restart.
func (t *timerState) fire(why string) {
	now := t.u.s.now()
	ts := t.spec.Timer
	if ts.OnBoot.IsSet() && !now.Before(t.u.s.boot.Add(ts.OnBoot.D())) {
		t.bootDone, t.bootFor = true, ts.OnBoot.D()
	}
	t.last = now
	if err := t.u.s.writeStamp(t.u.name, now); err != nil {
		t.log.Error("write timer stamp failed", zap.Error(err))
	}
	t.u.update(func(st *status) { st.LastTrigger = now })
	if !t.u.s.trigger(ts.Unit) {
		t.log.Warn("timer target not loaded", zap.String("target", ts.Unit))
	}
	t.log.Info("timer fired", zap.String("target", ts.Unit), zap.String("why", why))
}

func (s *Supervisor) stampPath(name string) string {
	return filepath.Join(s.dir, "timers", name+".stamp")
}

func (s *Supervisor) readStamp(name string) time.Time {
	b, err := os.ReadFile(s.stampPath(name))
	if err != nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		return time.Time{}
	}
	return t
}

func (s *Supervisor) writeStamp(name string, t time.Time) error {
	return s.writeFile(s.stampPath(name), []byte(t.Format(time.RFC3339Nano)+"\n"), 0o644)
}
