package e2e

// Enablement follows the manifest's wantedBy against a real systemd: a
// changed target moves the unit's symlinks (disable + enable, what
// `systemctl reenable` does), so that what the unit file says is what
// pulls it in at boot.

import (
	"sort"
	"strings"
	"testing"
)

func TestWantedByChangeMovesEnablement(t *testing.T) {
	e := newEnv(t)
	manifest := func(wantedBy string) string {
		return `apiVersion: resil.dev/v1
kind: Service
metadata: {name: wb}
spec:
  command: ["/bin/sleep", "infinity"]
  wantedBy: ` + wantedBy + `
`
	}
	links := func() []string {
		t.Helper()
		out, err := e.sb.Run(e.ctx, "sh", "-c", "cd /etc/systemd/system && ls -d */wb.service 2>/dev/null || true")
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Fields(string(out))
		sort.Strings(got)
		return got
	}
	want := func(what string, exp ...string) {
		t.Helper()
		if got := links(); strings.Join(got, " ") != strings.Join(exp, " ") {
			t.Fatalf("%s: enablement symlinks %v, want %v", what, got, exp)
		}
		if rep, code := e.diffJSON(); code != 0 {
			t.Fatalf("%s: diff exit %d after apply: %v", what, code, rep.texts())
		}
	}
	e.write("wb.yaml", manifest("[multi-user.target]"))
	e.apply(0)
	want("first apply", "multi-user.target.wants/wb.service")
	pid := e.prop("wb.service", "MainPID")

	e.write("wb.yaml", manifest("[default.target, timers.target]"))
	out, _, code := e.reconciler("diff")
	if code != 1 || !strings.Contains(out, "disable wb.service") || !strings.Contains(out, "enable wb.service") {
		t.Fatalf("diff of a wantedBy change: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "restart wb.service") {
		t.Fatalf("diff of a wantedBy change restarts the service:\n%s", out)
	}
	e.apply(0)
	want("wantedBy changed", "default.target.wants/wb.service", "timers.target.wants/wb.service")
	if got := e.prop("wb.service", "MainPID"); got != pid {
		t.Fatalf("wantedBy change restarted the service: MainPID %s → %s", pid, got)
	}

	// A link made by hand in another target is drift: re-enabled away.
	if _, err := e.sb.Run(e.ctx, "sh", "-c", "mkdir -p /etc/systemd/system/sockets.target.wants && ln -s /etc/systemd/system/wb.service /etc/systemd/system/sockets.target.wants/wb.service"); err != nil {
		t.Fatal(err)
	}
	e.apply(0)
	want("extra link by hand", "default.target.wants/wb.service", "timers.target.wants/wb.service")

	// A link removed by hand from one of the targets is restored.
	if _, err := e.sb.Run(e.ctx, "rm", "/etc/systemd/system/timers.target.wants/wb.service"); err != nil {
		t.Fatal(err)
	}
	e.apply(0)
	want("link removed by hand", "default.target.wants/wb.service", "timers.target.wants/wb.service")

	e.write("wb.yaml", manifest("[]"))
	e.apply(0)
	want("wantedBy emptied")
}
