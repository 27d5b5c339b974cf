package e2e

// A run-once service that nothing pulls in (wantedBy: []) against a real
// systemd: once its process exits, systemd unloads the unit (nothing
// references an inactive unit without [Install] links), and with it the
// run's history. The agent must not take the unloaded unit for one that
// never ran and start it again on every pass.

import (
	"strings"
	"testing"
	"time"
)

func TestStaticRunOnceRunsOnce(t *testing.T) {
	e := newEnv(t)
	e.write("static-once.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: static-once}
spec:
  command: ["/bin/sh", "-c", "echo run >> /var/tmp/static-once.runs; sleep 1; exit 0"]
  restart: {policy: never}
  wantedBy: []
`)
	// A job done right after its start: no pass sees it run or exit (the
	// apply's own read back after the start job sees it active; one that
	// is already unloaded then reads "effect not observed", README).
	e.write("static-quick.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: static-quick}
spec:
  command: ["/bin/sh", "-c", "echo run >> /var/tmp/static-quick.runs; sleep 0.2"]
  wantedBy: []
`)
	count := func(file string) int {
		t.Helper()
		b, err := e.sb.ReadFile(file)
		if err != nil {
			return 0
		}
		return strings.Count(string(b), "run\n")
	}
	runs := func() int { return count("/var/tmp/static-once.runs") }
	quick := func() int { return count("/var/tmp/static-quick.runs") }
	e.apply(0)
	e.eventually("static-once ran", 30*time.Second, func() bool { return runs() == 1 })
	e.eventually("static-quick ran", 30*time.Second, func() bool { return quick() == 1 })
	e.eventually("static-once exited", 30*time.Second, func() bool {
		return e.prop("static-once.service", "ActiveState") == "inactive"
	})
	time.Sleep(500 * time.Millisecond)
	// A second apply, a diff and a running agent (several passes) see an
	// unloaded unit: none of them starts it again.
	if out, _, code := e.reconciler("diff"); code != 0 {
		t.Errorf("diff after the run: exit %d, want 0\n%s", code, out)
	}
	e.apply(0)
	a := e.startAgent("--resync", "1s")
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	time.Sleep(4 * time.Second) // a few resyncs
	for _, u := range []string{"static-once.service", "static-quick.service"} {
		if a.hasEvent("StoppedOutOfBand", u) || !a.hasEvent("Exited", u+" ran (started at") {
			t.Errorf("%s: want an Exited event (ran, unloaded since), no StoppedOutOfBand", u)
		}
	}
	e.stopAgent(a, 10*time.Second)
	// A new agent (its memory from disk) and a daemon-reload (the unit
	// loaded again, without its history) change nothing.
	e.systemctl("daemon-reload")
	e.apply(0)
	if n, q := runs(), quick(); n != 1 || q != 1 {
		t.Fatalf("static-once ran %d times, static-quick %d, want 1 each", n, q)
	}
	// A changed manifest runs it again, once.
	e.write("static-once.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: static-once}
spec:
  command: ["/bin/sh", "-c", "echo run >> /var/tmp/static-once.runs; sleep 1; exit 0"]
  environment: {V: "2"}
  restart: {policy: never}
  wantedBy: []
`)
	e.apply(0)
	e.eventually("static-once ran again", 30*time.Second, func() bool { return runs() == 2 })
	e.eventually("static-once exited again", 30*time.Second, func() bool {
		return e.prop("static-once.service", "ActiveState") == "inactive"
	})
	time.Sleep(500 * time.Millisecond)
	e.apply(0)
	if n := runs(); n != 2 {
		t.Fatalf("static-once ran %d times after the change, want 2", n)
	}
}

// A service systemd unloads once inactive, stopped by hand while an agent
// watches: the watch heard how its run ended (a stop, not an exit by
// itself), so the agent starts it again, a process that exits 0 on
// SIGTERM included; one that exits by itself is left done.
func TestUnloadedServiceStoppedByHandStartedAgain(t *testing.T) {
	e := newEnv(t)
	for _, m := range []struct{ name, command string }{
		{"nowants", `["/bin/sleep", "infinity"]`},
		{"nowants-graceful", `["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]`},
		{"nowants-once", `["/bin/sh", "-c", "echo run >> /var/tmp/nowants-once.runs; sleep 2"]`},
	} {
		e.write(m.name+".yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: `+m.name+`}
spec:
  command: `+m.command+`
  enabled: false
`)
	}
	a := e.startAgent()
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	for _, u := range []string{"nowants.service", "nowants-graceful.service"} {
		e.eventually(u+" active", 30*time.Second, func() bool { return e.prop(u, "ActiveState") == "active" })
		pid := e.prop(u, "MainPID")
		e.systemctl("stop", u)
		e.eventually(u+" started again", 30*time.Second, func() bool {
			p := e.show(u, "ActiveState", "MainPID")
			return p["ActiveState"] == "active" && p["MainPID"] != pid && p["MainPID"] != "0"
		})
		if !a.hasEvent("StoppedOutOfBand", u+" is inactive") {
			t.Errorf("%s: no StoppedOutOfBand event", u)
		}
	}
	e.eventually("nowants-once ran and exited", 30*time.Second, func() bool {
		return a.hasEvent("Exited", "nowants-once.service exited by itself")
	})
	time.Sleep(2 * time.Second)
	b, _ := e.sb.ReadFile("/var/tmp/nowants-once.runs")
	if n := strings.Count(string(b), "run\n"); n != 1 {
		t.Fatalf("nowants-once ran %d times, want 1", n)
	}
}

// Between applies, with no watch to hear how a run ended, an unloaded
// service a pass saw running is started again under on-failure (a
// long-running service stopped by hand is drift) and left done under
// never (a job is rather not run twice).
func TestUnloadedServiceBetweenApplies(t *testing.T) {
	e := newEnv(t)
	for _, m := range []struct{ name, policy string }{{"daemon-nw", "on-failure"}, {"job-nw", "never"}} {
		e.write(m.name+".yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: `+m.name+`}
spec:
  command: ["/bin/sh", "-c", "echo run >> /var/tmp/`+m.name+`.runs; exec sleep infinity"]
  restart: {policy: `+m.policy+`}
  wantedBy: []
`)
	}
	e.apply(0)
	for _, u := range []string{"daemon-nw.service", "job-nw.service"} {
		e.eventually(u+" active", 30*time.Second, func() bool { return e.prop(u, "ActiveState") == "active" })
	}
	e.apply(0) // sees both running
	for _, u := range []string{"daemon-nw.service", "job-nw.service"} {
		e.systemctl("stop", u)
	}
	out := e.apply(0)
	if !strings.Contains(out, "start daemon-nw.service") || strings.Contains(out, "job-nw.service") {
		t.Fatalf("apply after the stops: want daemon-nw started, job-nw left alone:\n%s", out)
	}
	e.eventually("daemon-nw active again", 30*time.Second, func() bool { return e.prop("daemon-nw.service", "ActiveState") == "active" })
	if got := e.prop("job-nw.service", "ActiveState"); got != "inactive" {
		t.Fatalf("job-nw.service is %s, want inactive", got)
	}
}
