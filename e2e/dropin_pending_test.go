package e2e

import (
	"strings"
	"testing"
)

// A foreign drop-in written with no daemon-reload is reported by the
// first pass that sees it on disk, before anything loads it: diff names
// it, and the apply whose reload loads it reports it (it was reported only
// by the pass after that reload). It is kept, never removed.
func TestForeignDropInReportedBeforeReload(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	e.apply(0)
	const path = "/etc/systemd/system/web.service.d/override.conf"
	if err := e.sb.WriteFile(path, []byte("[Service]\nEnvironment=FROM_DROPIN=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p := e.show("web.service", "DropInPaths", "NeedDaemonReload"); strings.Contains(p["DropInPaths"], "override.conf") {
		t.Fatalf("systemd loaded the drop-in with no reload: %v", p)
	}
	want := "ForeignDropIn Service/web: foreign drop-in " + path + " overrides the manifest"
	out, _, code := e.reconciler("diff")
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("diff before any reload: exit %d, want 1 naming the drop-in\n%s", code, out)
	}
	out = e.apply(0)
	if !strings.Contains(out, want) {
		t.Errorf("apply that loads the drop-in does not report it:\n%s", out)
	}
	if got, err := e.sb.ReadFile(path); err != nil || !strings.Contains(string(got), "FROM_DROPIN") {
		t.Errorf("foreign drop-in changed or removed: %q %v", got, err)
	}
}
