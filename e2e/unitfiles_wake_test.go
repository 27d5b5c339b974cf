package e2e

import (
	"strings"
	"testing"
	"time"
)

// Out-of-band changes to unit files wake `run` as a stopped unit does,
// not only at the resync (10 min here, never reached): `systemctl
// disable`, a hand edit of an owned unit file, `rm` of one with a mask,
// daemon-reload and unmask. The agent's own edit still costs one pass.
func TestRunNoticesUnitFileChanges(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	e.write("api.yaml", svc("api", ""))
	a := e.startAgent("--resync", "10m")
	e.eventually("first pass", 60*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	enabled := func(u string) bool {
		out, _ := e.sb.Systemctl(e.ctx, "is-enabled", u)
		return strings.TrimSpace(out) == "enabled"
	}
	e.eventually("converged", 30*time.Second, func() bool {
		return enabled("web.service") && e.prop("web.service", "ActiveState") == "active" && e.prop("api.service", "ActiveState") == "active"
	})
	e.quiet(a, 2*time.Second)
	const path = "/etc/systemd/system/web.service"
	if got, err := e.sb.ReadFile(path); err != nil || !strings.Contains(string(got), "\nRestartSec=100ms\n") {
		t.Fatalf("%s: %v\n%s", path, err, got)
	}
	// Well before any resync, and a pass or two each.
	const deadline = 10 * time.Second

	before := a.passes()
	e.systemctl("disable", "web.service")
	e.eventually("re-enabled after systemctl disable", deadline, func() bool { return enabled("web.service") })
	e.quiet(a, time.Second)
	// systemctl disable reloads after it: its UnitFilesChanged and the
	// reload's Reloading(false) may come a settle delay apart.
	if n := a.passes() - before; n < 1 || n > 2 {
		t.Errorf("systemctl disable: %d passes, want 1 or 2", n)
	}

	before = a.passes()
	if _, err := e.sb.Run(e.ctx, "/bin/sed", "-i", "s/^RestartSec=.*/RestartSec=9s/", path); err != nil {
		t.Fatal(err)
	}
	// Restored as rendered (the agent may mark when the running process
	// started: only RestartSec changed, a reload, no restart).
	e.eventually("hand edit undone", deadline, func() bool {
		got, err := e.sb.ReadFile(path)
		return err == nil && strings.Contains(string(got), "\nRestartSec=100ms\n") && !strings.Contains(string(got), "9s")
	})
	e.quiet(a, time.Second)
	// The agent's own write and reload that restore it wake no other.
	if n := a.passes() - before; n != 1 {
		t.Errorf("hand edit: %d passes, want 1", n)
	}

	before = a.passes()
	e.systemctl("stop", "api.service")
	e.eventually("api restarted", deadline, func() bool { return e.prop("api.service", "ActiveState") == "active" })
	e.quiet(a, time.Second)
	if _, err := e.sb.Run(e.ctx, "/bin/rm", "/etc/systemd/system/api.service"); err != nil {
		t.Fatal(err)
	}
	e.systemctl("mask", "api.service")
	e.systemctl("daemon-reload")
	e.systemctl("unmask", "api.service")
	e.eventually("api's file back and running", deadline, func() bool {
		_, err := e.sb.ReadFile("/etc/systemd/system/api.service")
		return err == nil && e.prop("api.service", "ActiveState") == "active"
	})
	t.Logf("stop, rm, mask, daemon-reload, unmask: %d passes", a.passes()-before)

	// The agent's own write, reload and restart wake no further pass.
	e.quiet(a, 2*time.Second)
	pid := e.prop("web.service", "MainPID")
	before = a.passes()
	e.write("web.yaml", svc("web", "  environment: {MODE: one}\n"))
	e.eventually("edit applied", 30*time.Second, func() bool {
		p := e.show("web.service", "Environment", "ActiveState", "MainPID")
		return p["Environment"] == "MODE=one" && p["ActiveState"] == "active" && p["MainPID"] != pid && p["MainPID"] != "0"
	})
	time.Sleep(6 * time.Second) // past the observer's settle deadlines
	if n := a.passes() - before; n != 1 {
		t.Errorf("own edit: %d passes, want 1", n)
	}
}
