package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A unit file edited by hand in the state dir and never reloaded is
// restored by the next pass without restarting its process: the process
// backend reads unit files only at its own daemon-reload, and the process
// was started from exactly the file restored (its recorded hash). F13: the
// restore restarted it.
func TestProcessBackendRestoredEditKeepsProcess(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	pid := e.pid("web.service")
	if pid == 0 {
		t.Fatal("web not running after apply")
	}
	path := filepath.Join(e.state, "units", "web.service")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), `"MODE": "one"`, `"MODE": "edited"`, 1)
	if edited == string(b) {
		t.Fatalf("no MODE to edit in:\n%s", b)
	}
	if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := e.cli("apply")
	if code != 0 || !strings.Contains(out, "edited out of band after the process started; restoring, no restart") {
		t.Fatalf("apply after the edit: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "restart web.service") || e.pid("web.service") != pid {
		t.Fatalf("the restore restarted web (pid %d, was %d):\n%s", e.pid("web.service"), pid, out)
	}
	if now, _ := os.ReadFile(path); string(now) != string(b) {
		t.Fatalf("unit file not restored:\n%s", now)
	}
}
