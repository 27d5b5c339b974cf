package e2e

import (
	"strings"
	"testing"
	"time"
)

// `reconciler reset` starts again only what the manifests declare running:
// a crash loop at its start limit, its cause fixed, is started again, a failed service whose
// manifest says state: stopped only has its failed state cleared, and a
// unit no manifest declares is refused and left alone (it started any unit
// of the name given).
func TestResetStartsOnlyWhatManifestsSay(t *testing.T) {
	e := newEnv(t)
	e.write("crash.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: crash}
spec:
  command: ["/bin/sh", "-c", "[ -e /run/fixed ] && exec sleep 1000; exit 3"]
  restart: {policy: always, delay: 100ms, limit: {burst: 2, interval: 60s}}
`)
	e.write("idle.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: idle}
spec:
  command: ["/bin/sh", "-c", "exit 3"]
  state: stopped
  restart: {policy: never}
`)
	if err := e.sb.WriteFile("/etc/systemd/system/foreign.service", []byte("[Service]\nExecStart=/bin/sleep 1000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.systemctl("daemon-reload")
	e.reconciler("apply") // the crash loop fails it: any exit code
	e.eventually("crash.service failed", 30*time.Second, func() bool { return e.prop("crash.service", "ActiveState") == "failed" })
	_, _ = e.sb.Systemctl(e.ctx, "start", "idle.service") // by hand: it fails
	e.eventually("idle.service failed", 30*time.Second, func() bool { return e.prop("idle.service", "ActiveState") == "failed" })
	inv := e.prop("crash.service", "InvocationID")
	if err := e.sb.WriteFile("/run/fixed", nil, 0o644); err != nil { // the operator fixed the cause
		t.Fatal(err)
	}

	out, errOut, code := e.reconciler("reset", "crash", "idle")
	if code != 0 {
		t.Fatalf("reset exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "reset crash.service\n") || !strings.Contains(out, "reset idle.service (failed state cleared; not started: its manifest says state: stopped)") {
		t.Errorf("reset output:\n%s", out)
	}
	e.eventually("crash.service started again", 30*time.Second, func() bool {
		return e.prop("crash.service", "InvocationID") != inv && e.prop("crash.service", "ActiveState") == "active"
	})
	time.Sleep(time.Second)
	if p := e.show("idle.service", "ActiveState", "Result"); p["ActiveState"] != "inactive" {
		t.Errorf("idle.service (state: stopped) after reset: %v, want inactive", p)
	}

	out, errOut, code = e.reconciler("reset", "foreign")
	if code != 1 || !strings.Contains(errOut, "no manifest in") {
		t.Errorf("reset of a unit no manifest declares: exit %d, want 1 naming it\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if s := e.prop("foreign.service", "ActiveState"); s != "inactive" {
		t.Errorf("foreign.service %s after a refused reset, want inactive", s)
	}
}
