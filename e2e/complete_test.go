package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 9 item 1, with the real agent and systemd: `: > web.yaml` and a
// file cut before its last line while its writer holds it open — at run
// time and at the agent's startup — never stop, rewrite or restart web (a
// service whose last line was `user: nobody` was restarted as root).
func TestHalfWrittenManifestKeepsService(t *testing.T) {
	e := newEnv(t)
	full := svc("web", "  user: nobody\n")
	e.write("web.yaml", full)
	a := e.startAgent()
	e.eventually("web active as nobody", 30*time.Second, func() bool {
		p := e.show("web.service", "ActiveState", "User")
		return p["ActiveState"] == "active" && p["User"] == "nobody"
	})
	pid := e.prop("web.service", "MainPID")
	unit, err := e.sb.ReadFile("/etc/systemd/system/web.service")
	if err != nil {
		t.Fatal(err)
	}
	same := func(what string) {
		t.Helper()
		p := e.show("web.service", "ActiveState", "MainPID", "User")
		if p["ActiveState"] != "active" || p["MainPID"] != pid || p["User"] != "nobody" {
			t.Fatalf("%s: service disturbed: %v (pid was %s)", what, p, pid)
		}
		if got, _ := e.sb.ReadFile("/etc/systemd/system/web.service"); string(got) != string(unit) {
			t.Fatalf("%s: unit file rewritten:\n%s", what, got)
		}
	}
	path := filepath.Join(e.host, "m", "web.yaml")

	// `: > web.yaml`, left that way.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	e.eventually("InvalidManifest for the empty file", 20*time.Second, func() bool { return a.hasEvent("InvalidManifest", "web.yaml: holds no objects") })
	time.Sleep(3 * time.Second) // a resync (2 s) runs meanwhile
	same("empty web.yaml")

	// Cut just before its last line, writer still at work.
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteString(strings.TrimSuffix(full, "  user: nobody\n")); err != nil {
		t.Fatal(err)
	}
	e.eventually("ManifestBusy", 20*time.Second, func() bool { return a.hasEvent("ManifestBusy", "web.yaml") })
	time.Sleep(3 * time.Second)
	same("web.yaml held open, cut before its last line")

	// A fresh agent starting while the writer still holds it.
	e.stopAgent(a, 10*time.Second)
	a = e.startAgent()
	e.eventually("first pass of the new agent", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	time.Sleep(3 * time.Second)
	same("agent started while web.yaml is held open")

	// The writer finishes: same content, nothing to do.
	if _, err := w.WriteString("  user: nobody\n"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	same("writer closed the complete file")
}
