package e2e

import (
	"testing"
	"time"
)

// passes counts the agent's finished passes (every pass logs one of these).
func (a *agent) passes() int {
	return a.countLogs("pass applied changes") + a.countLogs("pass converged") + a.countLogs("pass finished with errors")
}

// quiet waits until the agent has finished no pass for d.
func (e *env) quiet(a *agent, d time.Duration) {
	e.t.Helper()
	last, since := a.passes(), time.Now()
	e.eventually("agent quiet", time.Minute, func() bool {
		if n := a.passes(); n != last {
			last, since = n, time.Now()
		}
		return time.Since(since) >= d
	})
}

// One edit under `run` costs one pass: the agent's own restart does not
// wake a second one (issue 12), not even after the 5 s the observer waits
// at most for a unit to settle. A crash of the unit afterwards still
// wakes a pass.
func TestOnePassPerEdit(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"web", "api", "db"} {
		e.write(n+".yaml", svc(n, ""))
	}
	a := e.startAgent("--resync", "10m")
	e.eventually("first pass", 60*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	e.eventually("all active", 30*time.Second, func() bool {
		return e.prop("web.service", "ActiveState") == "active" && e.prop("db.service", "ActiveState") == "active"
	})
	e.quiet(a, 2*time.Second)

	for i, mode := range []string{"one", "two", "three"} {
		pid := e.prop("web.service", "MainPID")
		before := a.passes()
		e.write("web.yaml", svc("web", "  environment: {MODE: "+mode+"}\n"))
		e.eventually("edit applied", 30*time.Second, func() bool {
			p := e.show("web.service", "Environment", "ActiveState", "MainPID")
			return p["Environment"] == "MODE="+mode && p["ActiveState"] == "active" && p["MainPID"] != pid && p["MainPID"] != "0"
		})
		if i == 0 {
			time.Sleep(6 * time.Second) // past the observer's settle deadline
		} else {
			time.Sleep(2 * time.Second)
		}
		if n := a.passes() - before; n != 1 {
			t.Errorf("edit %d: %d passes, want 1", i+1, n)
		}
	}

	before := a.passes()
	e.systemctl("kill", "--signal=KILL", "web.service")
	e.eventually("a pass after the crash", 20*time.Second, func() bool { return a.passes() > before })
}
