package e2e

import (
	"strings"
	"testing"
)

// `apply` of a service whose process exits at once: systemd reports the
// start job done (Type=exec: the process exec'd), yet apply must not exit
// 0 ("converged") for a service that could not stay up. It names the
// unit and exits 1, whatever its restart policy; a healthy service still
// exits 0.
func TestApplyStartThatDoesNotStayUp(t *testing.T) {
	e := newEnv(t)
	crash := func(name, policy, script string) string {
		return `apiVersion: resil.dev/v1
kind: Service
metadata: {name: ` + name + `}
spec:
  command: ["/bin/sh", "-c", "` + script + `"]
  restart: {policy: ` + policy + `, delay: 100ms}
`
	}
	reported := false // by the read after the steps (NotStayedUp)
	// crash5 exits 20 ms after its start: always after the start step's
	// own read-back, before the read after the steps.
	for _, tc := range []struct{ name, policy, script string }{
		{"crash3", "never", "exit 1"}, {"crash4", "always", "exit 1"}, {"crash5", "never", "sleep 0.02; exit 1"},
	} {
		e.write(tc.name+".yaml", crash(tc.name, tc.policy, tc.script))
		out, errOut, code := e.reconciler("apply")
		// The start step's own read-back catches it when the process
		// already failed then (a race with the exit); else the read
		// after the steps does.
		named := strings.Contains(out, "NotStayedUp Service/"+tc.name+": "+tc.name+".service did not stay up") ||
			strings.Contains(out, "FAILED   start "+tc.name+".service")
		t.Logf("apply of %s (restart %s):\n%s", tc.name, tc.policy, out)
		if code != 1 || !named {
			t.Errorf("apply of %s (restart %s): exit %d, want 1 naming it\nstdout:\n%s\nstderr:\n%s", tc.name, tc.policy, code, out, errOut)
		}
		reported = reported || strings.Contains(out, "NotStayedUp")
		if !strings.Contains(out, "start "+tc.name+".service") {
			t.Errorf("apply of %s: no start step\n%s", tc.name, out)
		}
		e.remove(tc.name + ".yaml")
		e.reconciler("apply") // prunes it
	}

	e.write("web.yaml", svc("web", ""))
	out := e.apply(0)
	if strings.Contains(out, "NotStayedUp") {
		t.Errorf("healthy service reported:\n%s", out)
	}
	if evs, _, _ := e.reconciler("events"); reported && !strings.Contains(evs, "NotStayedUp") {
		t.Errorf("no NotStayedUp event recorded:\n%s", evs)
	}
}
