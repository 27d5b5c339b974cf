package ledger

import (
	"sort"
	"strings"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
)

// Cause of a restart; the values are metric labels and ledger rows.
type Cause string

// Restart causes.
const (
	// CauseAuto is systemd's (or the supervisor's) Restart= policy.
	CauseAuto Cause = "auto"
	// CauseWatchdog is an automatic restart after a watchdog kill.
	CauseWatchdog Cause = "watchdog"
	// CauseAgent is a restart step the agent executed.
	CauseAgent Cause = "agent"
	// CauseLiveness is a restart step the agent executed because the
	// service failed its liveness probe (reconcile.IsLivenessRestart).
	CauseLiveness Cause = "liveness"
	// CauseManual is anything else: systemctl restart, kill of the main
	// process followed by a start, an operator's stop+start.
	CauseManual Cause = "manual"
)

// Causes lists every cause, for metrics.
var Causes = []Cause{CauseAuto, CauseWatchdog, CauseAgent, CauseLiveness, CauseManual}

// Restarts is what Detect found for one unit and cause.
type Restarts struct {
	Object string
	Unit   string
	Cause  Cause
	Count  int
}

// Input of Detect.
type Input struct {
	// Prev and Cur are consecutive observations. A unit missing from Cur
	// is skipped; one missing from Prev (Prev not nil) is new since: its
	// automatic restarts (NRestarts) all count. Without Prev nothing
	// counts (the first observation is the baseline).
	Prev, Cur *observed.State
	// Between are the outcomes of the steps executed after Prev was read
	// (the previous pass's outcomes).
	Between []reconcile.StepOutcome
	// Journaled are the restart journal's records (Result.RestartPending):
	// a restart whose cause would read manual, of a process started after
	// the service's record, is the agent's (a restart an agent killed
	// before its ledger made, or one the restart journal owed).
	Journaled map[string]time.Time
}

// Managed reports whether a unit's restarts count: a .service owned by a
// Service object.
func Managed(u *observed.Unit) bool {
	return u != nil && strings.HasPrefix(u.Owner, "Service/") && strings.HasSuffix(u.Name, ".service")
}

func running(u *observed.Unit) bool {
	return u.MainPID != 0 || u.ActiveState == "active" || u.ActiveState == "reloading"
}

func watchdog(u *observed.Unit) bool {
	return u.Result == "watchdog" || u.SubState == "stop-watchdog"
}

// Detect returns the restarts between two observations, sorted by unit
// and cause.
func Detect(in Input) []Restarts {
	if in.Prev == nil || in.Cur == nil {
		return nil
	}
	agent, liveness := map[string]int{}, map[string]int{}
	for _, o := range in.Between {
		if o.Step.Op == actuators.OpRestart && o.Err == nil && o.Skipped == "" {
			if reconcile.IsLivenessRestart(o.Step) {
				liveness[o.Step.Unit]++
			} else {
				agent[o.Step.Unit]++
			}
		}
	}
	names := make([]string, 0, len(in.Cur.Units))
	for n := range in.Cur.Units {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []Restarts
	for _, n := range names {
		c, p := in.Cur.Units[n], in.Prev.Units[n]
		if c == nil || !Managed(c) {
			continue
		}
		add := func(cause Cause, k int) {
			if k > 0 {
				out = append(out, Restarts{Object: c.Owner, Unit: n, Cause: cause, Count: k})
			}
		}
		if p == nil {
			// New since the previous observation: started (NRestarts 0)
			// after it, so its automatic restarts happened since. A
			// baseline keeps every managed unit observed, so a unit is
			// missing from it only when no agent observed it owned yet
			// (an agent killed between starting it and its ledger).
			cause := CauseAuto
			if watchdog(c) {
				cause = CauseWatchdog
			}
			add(cause, int(c.NRestarts))
			continue
		}
		reset := c.NRestarts < p.NRestarts
		auto := int(c.NRestarts) - int(p.NRestarts)
		if reset {
			auto = int(c.NRestarts)
		}
		started := c.ExecMainStartTimestamp != p.ExecMainStartTimestamp ||
			(c.MainPID != p.MainPID && c.MainPID != 0 && p.MainPID != 0)
		autoCause := CauseAuto
		if watchdog(p) || watchdog(c) {
			autoCause = CauseWatchdog
		}
		// owed: the agent made the restart that started c (its restart
		// journal or the supervisor's process table says so), though no
		// outcome of this agent shows it: one a killed agent made.
		owed := func() bool {
			t, ok := in.Journaled[n]
			return c.OwedRestart || ok && !t.IsZero() && int64(c.ExecMainStartTimestamp) >= t.UnixMicro()
		}
		switch {
		case agent[n] > 0 || liveness[n] > 0:
			add(CauseAgent, agent[n])
			add(CauseLiveness, liveness[n])
			add(autoCause, auto)
		case started && running(p) && c.ExecMainStartTimestamp != 0 && (reset || auto == 0):
			cause := CauseManual
			if owed() {
				cause = CauseAgent
			}
			add(cause, 1)
			add(autoCause, auto)
		case started && p.SubState == "auto-restart" && c.ExecMainStartTimestamp != 0 && in.Cur.Backend == "systemd" &&
			p.NRestarts == 0 && c.NRestarts == 0:
			// A restart job (the agent's, or `systemctl restart`) ran in the
			// restart delay: systemd drops the pending automatic restart
			// without counting it, and the job's start leaves NRestarts at
			// 0. An automatic restart would have raised the count before
			// the unit left auto-restart, so with 0 on both sides none
			// happened, yet the process died and runs again (torture seeds
			// 1796451154833655304 and 1796456510820976863: a service killed
			// out of band, then its changed unit written, reloaded and
			// restarted by an agent killed before its ledger ran; the next
			// agent counted nothing).
			cause := CauseManual
			if owed() {
				cause = CauseAgent
			}
			add(cause, 1)
		case started && p.SubState == "auto-restart" && c.ExecMainStartTimestamp != 0 && (reset || auto == 0 && in.Cur.Backend != "systemd"):
			// The automatic restart the previous observation saw pending
			// happened without counting: the process backend's agent was
			// killed in the restart delay and the next one started the
			// unit after its table lost the row that carried the count
			// (found by the torture suite), or the count was reset in
			// the delay. Either way the process died and runs again. Not
			// systemd's count unchanged: systemd adds to NRestarts when it
			// queues the restart, before the unit leaves auto-restart, so
			// an observation can read both, and the restart it shows was
			// counted then (e2e TestPostgresScenariosSystemd counted one
			// kill -9 twice). A restart job in the delay of a unit whose
			// count was above 0 lands here too (its start zeroes the
			// count): one restart, counted automatic.
			add(autoCause, 1)
		default:
			add(autoCause, auto)
		}
	}
	return out
}

// Policy is a restart-storm threshold: Restarts or more within Within.
type Policy struct {
	Restarts int
	Within   time.Duration
	Command  []string
}

// Enabled reports whether the policy can fire.
func (p Policy) Enabled() bool { return p.Restarts > 0 && p.Within > 0 }

// Storm decides whether the alert of one object fires now: count is the
// number of restarts in (now-Within, now], lastFired when it last fired
// (zero: never). It fires at most once per window: again only after Within
// has passed since the last firing, and only if the threshold is still met.
//
//	(quiet) ──count ≥ Restarts──▶ fire ──▶ (silenced until lastFired+Within) ──▶ (quiet)
func Storm(p Policy, count int, lastFired, now time.Time) bool {
	if !p.Enabled() || count < p.Restarts {
		return false
	}
	return lastFired.IsZero() || !now.Before(lastFired.Add(p.Within))
}
