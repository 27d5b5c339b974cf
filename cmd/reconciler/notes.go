package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
)

// timerNotes describes last and next runs of the timers in the plan's
// observed state, and the last result of the job each one triggers; diff
// prints them whether or not anything changes.
func timerNotes(res reconcile.Result) []string {
	if res.Observed == nil {
		return nil
	}
	var out []string
	for _, n := range ownedTimers(res.Observed) {
		u := res.Observed.Units[n]
		line := fmt.Sprintf("  timer %s: %s, last %s, next %s", n, reconcile.OrDash(u.ActiveState), usec(u.LastTriggerUSec), nextRun(u))
		if job := jobOf(res.Observed, u); job != nil {
			line += fmt.Sprintf("; %s %s", job.Name, jobResult(job))
		}
		out = append(out, line)
	}
	if len(out) > 0 {
		out = append([]string{"Timers:"}, out...)
	}
	return out
}

// ownedTimers lists the timer units with a file in the unit directory, sorted.
func ownedTimers(st *observed.State) []string {
	var names []string
	for n, u := range st.Units {
		if strings.HasSuffix(n, ".timer") && u.File != nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// jobOf returns the observed service a timer triggers (nil if not observed).
func jobOf(st *observed.State, timer *observed.Unit) *observed.Unit {
	names := timer.Triggers
	if len(names) == 0 {
		names = []string{strings.TrimSuffix(timer.Name, ".timer") + ".service"}
	}
	for _, n := range names {
		if u := st.Units[n]; u != nil {
			return u
		}
	}
	return nil
}

// jobResult says how the job's last run ended: "running", "never ran",
// "ok" or "failed (exit-code, status 3)".
func jobResult(u *observed.Unit) string {
	switch {
	case u.ActiveState == "active" || u.ActiveState == "activating" || u.ActiveState == "deactivating":
		if u.SubState == "auto-restart" {
			return fmt.Sprintf("retrying after %s, status %d", u.Result, u.ExecMainStatus)
		}
		return "running"
	case u.ExecMainStartTimestamp == 0 && u.ExecMainExitTimestamp == 0:
		return "never ran"
	case u.ActiveState == "failed" || (u.Result != "" && u.Result != "success"):
		return fmt.Sprintf("failed (%s, status %d, %d restarts)", u.Result, u.ExecMainStatus, u.NRestarts)
	}
	return fmt.Sprintf("ok (exit %d)", u.ExecMainStatus)
}

func nextRun(u *observed.Unit) string {
	if u.NextElapseUSecRealtime != 0 {
		return usec(u.NextElapseUSecRealtime)
	}
	if u.NextElapseUSecMonotonic != 0 {
		return "monotonic +" + (time.Duration(u.NextElapseUSecMonotonic) * time.Microsecond).String()
	}
	return "-"
}

func usec(v uint64) string { return reconcile.FormatUSec(v, time.RFC3339) }

// timerLog is an after-pass hook that logs each timer run once: when a
// timer's LastTriggerUSec moves, or its job's run ends (exit timestamp moves).
type timerLog struct {
	log  *zap.Logger
	seen map[string][2]uint64 // timer → (last trigger, job exit timestamp)
}

func newTimerLog(log *zap.Logger) *timerLog {
	return &timerLog{log: log.Named("timers"), seen: map[string][2]uint64{}}
}

func (l *timerLog) afterPass(res reconcile.Result, _ error) {
	if res.Observed == nil {
		return
	}
	next := map[string][2]uint64{}
	for _, n := range ownedTimers(res.Observed) {
		u := res.Observed.Units[n]
		job := jobOf(res.Observed, u)
		var exit uint64
		fields := []zap.Field{zap.String("timer", n), zap.String("last", usec(u.LastTriggerUSec)), zap.String("next", nextRun(u))}
		if job != nil {
			exit = job.ExecMainExitTimestamp
			fields = append(fields, zap.String("job", job.Name), zap.String("job_result", jobResult(job)))
		}
		key := [2]uint64{u.LastTriggerUSec, exit}
		next[n] = key
		if prev, ok := l.seen[n]; !ok || prev != key {
			l.log.Info("timer state", fields...)
		}
	}
	l.seen = next
}
