package e2e

import (
	"strings"
	"testing"
	"time"
)

// Pruning a failed service (its command exits 1, restart never) or one
// waiting in auto-restart resets its failed state: nothing of it remains
// in systemd, not even "not-found failed" in systemctl --failed.
func TestPruneFailedServiceResetsFailed(t *testing.T) {
	e := newEnv(t)
	failing := func(name, restart string) string {
		return `apiVersion: resil.dev/v1
kind: Service
metadata: {name: ` + name + `}
spec:
  command: ["/bin/sh", "-c", "exit 1"]
  restart: ` + restart + "\n"
	}
	e.write("keep.yaml", svc("keep", ""))
	e.write("f1.yaml", failing("f1", "{policy: never}"))
	e.write("f2.yaml", failing("f2", "{policy: never}"))
	e.write("loop.yaml", failing("loop", "{policy: always, delay: 1h}"))
	e.reconciler("apply") // the failing starts may fail the apply
	e.eventually("f1, f2 failed, loop in auto-restart", 30*time.Second, func() bool {
		return e.prop("f1.service", "ActiveState") == "failed" && e.prop("f2.service", "ActiveState") == "failed" &&
			e.prop("loop.service", "SubState") == "auto-restart"
	})
	for _, n := range []string{"f1", "f2", "loop"} {
		e.remove(n + ".yaml")
	}
	out, errOut, code := e.reconciler("prune", "--confirm")
	if code != 0 {
		t.Fatalf("prune --confirm: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"reset-failed f1.service", "reset-failed f2.service", "stop loop.service", "reset-failed loop.service"} {
		if !strings.Contains(out, want) {
			t.Errorf("prune --confirm lacks %q:\n%s", want, out)
		}
	}
	for _, u := range []string{"f1.service", "f2.service", "loop.service"} {
		p := e.show(u, "LoadState", "ActiveState")
		if p["LoadState"] != "not-found" || p["ActiveState"] != "inactive" {
			t.Errorf("%s after prune: %v", u, p)
		}
	}
	if failed := e.systemctl("list-units", "--all", "--failed", "--plain", "--no-legend"); strings.Contains(failed, "f1.service") ||
		strings.Contains(failed, "f2.service") || strings.Contains(failed, "loop.service") {
		t.Errorf("pruned units still failed:\n%s", failed)
	}
	if s := e.prop("keep.service", "ActiveState"); s != "active" {
		t.Errorf("keep.service: %s", s)
	}
}
