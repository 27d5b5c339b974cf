package e2e

import (
	"testing"
	"time"
)

// A restart the agent made, whose startup probe was still waiting when the
// agent was killed (-9), is counted as the agent's by the next agent (the
// restart journal recorded it), not as a manual restart: a deploy cut off
// by a crash does not read as someone's `systemctl restart`, nor count
// toward a restart storm.
func TestKilledAgentsRestartCountedAsAgents(t *testing.T) {
	e := newEnv(t)
	web := func(v string) string {
		return `apiVersion: resil.dev/v1
kind: Service
metadata: {name: web}
spec:
  command: ["/bin/sh", "-c", "sleep 3; exec /usr/bin/python3 -m http.server 18090 --bind 127.0.0.1"]
  environment: {VERSION: "` + v + `"}
  restart: {policy: always, delay: 100ms}
  health:
    startup: {http: {url: "http://127.0.0.1:18090/"}, interval: 200ms, timeout: 30s}
`
	}
	e.write("web.yaml", web("1"))
	first := e.startAgent()
	e.eventually("web active", 60*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	inv := e.prop("web.service", "InvocationID")
	time.Sleep(3 * time.Second) // a resync observes it running: the ledger's baseline
	e.write("web.yaml", web("2"))
	e.eventually("the restart's startup probe waiting", 30*time.Second, func() bool {
		p := e.show("web.service", "ActiveState", "InvocationID")
		return p["ActiveState"] == "activating" && p["InvocationID"] != inv
	})
	if _, err := e.sb.Run(e.ctx, "kill", "-9", e.agentPID()); err != nil {
		t.Fatal(err)
	}
	<-first.done
	e.startAgent()
	e.eventually("web active again", 60*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	t.Cleanup(func() {
		if t.Failed() {
			out, _, _ := e.reconciler("events")
			t.Logf("events:\n%s", out)
		}
	})
	e.eventually("the restart counted", 30*time.Second, func() bool { return e.eventCount("web", "Restarted", "") > 0 })
	time.Sleep(3 * time.Second) // two resyncs
	if n := e.eventCount("web", "Restarted", "cause manual"); n != 0 {
		t.Errorf("%d restarts counted manual, want 0", n)
	}
	if n := e.eventCount("web", "Restarted", "cause agent"); n != 1 {
		t.Errorf("%d restarts counted as the agent's, want 1", n)
	}
}
