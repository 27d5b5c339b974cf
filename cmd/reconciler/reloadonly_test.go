package main

import (
	"strings"
	"testing"
)

// Process backend through the CLI: a manifest change the running process
// does not depend on (restart policy, stop timeout) is written and
// reloaded with the process kept; diff says why; a change it depends on
// restarts it once.
func TestProcessBackendRestartOnlyWhenAffected(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	pid := e.pid("web.service")
	e.write("web.yaml", procWeb+"  restart: {policy: always, delay: 2s}\n  stopTimeout: 3s\n")
	out, code := e.cli("diff")
	if code != 1 || !strings.Contains(out, "reload only: restart, stopTimeout changed") || strings.Contains(out, "restart web.service") {
		t.Fatalf("diff of a reload-only change: exit %d\n%s", code, out)
	}
	if out, code := e.cli("apply"); code != 0 || strings.Contains(out, "restart web.service") {
		t.Fatalf("apply of a reload-only change: exit %d\n%s", code, out)
	}
	if now := e.pid("web.service"); now != pid {
		t.Fatalf("reload-only change restarted the process: %d → %d", pid, now)
	}
	if out, code := e.cli("diff"); code != 0 {
		t.Fatalf("diff after a reload-only apply: exit %d\n%s", code, out)
	}
	e.write("web.yaml", strings.Replace(procWeb, "MODE: one", "MODE: two", 1)+"  restart: {policy: always, delay: 2s}\n  stopTimeout: 3s\n")
	out, code = e.cli("apply")
	if code != 0 || strings.Count(out, "restart web.service (unit file changed: environment)") != 1 {
		t.Fatalf("apply of an environment change: exit %d\n%s", code, out)
	}
	if now := e.pid("web.service"); now == pid || now == 0 {
		t.Fatalf("environment change did not restart: pid %d", now)
	}
	if out, code := e.cli("diff"); code != 0 {
		t.Fatalf("diff after apply: exit %d\n%s", code, out)
	}
}

// `status` right after `apply` shows what the pass left (the service it
// started running, Converged), not what the pass saw before its steps.
func TestStatusAfterApplyShowsWhatThePassLeft(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	out, code := e.cli("status")
	if code != 0 || !strings.Contains(out, "active (running)") || strings.Contains(out, "absent") || strings.Contains(out, "Converging") {
		t.Fatalf("status after apply: exit %d\n%s", code, out)
	}
}
