package e2e

import (
	"strings"
	"testing"
)

// apply's read after its steps sees a service that systemd restarted on
// its own during them: dep is PartOf=main, so the restart of main that an
// edit of main's manifest calls for restarts dep too, with no job of the
// agent's on dep. The read after the steps must read dep again (its main
// process is gone: the process check of observed/systemd
// WithProcessCheck, or the Get it stands in for) and the restart ledger
// records dep's restart at this apply, not at a later one.
func TestApplyAfterReadSeesCascadeRestart(t *testing.T) {
	e := newEnv(t)
	e.write("main.yaml", svc("main", "  environment: {MODE: one}\n"))
	e.write("dep.yaml", svc("dep", "  systemd:\n    Unit: {PartOf: main.service}\n"))
	e.apply(0)
	depPID := e.prop("dep.service", "MainPID")
	if depPID == "0" || depPID == "" {
		t.Fatalf("dep not running after the first apply: MainPID %q", depPID)
	}
	e.write("main.yaml", svc("main", "  environment: {MODE: two}\n"))
	out := e.apply(0)
	if !strings.Contains(out, "restart main.service") || strings.Contains(out, "dep.service") {
		t.Fatalf("want a restart of main only:\n%s", out)
	}
	if now := e.prop("dep.service", "MainPID"); now == depPID {
		t.Fatalf("dep was not restarted with main (MainPID still %s): PartOf did not propagate", now)
	}
	ev, _, code := e.reconciler("events", "--reason", "Restarted", "--object", "dep")
	if code != 0 || !strings.Contains(ev, "dep.service restarted") {
		t.Fatalf("the restart of dep during the apply is not in the ledger after it (exit %d):\n%s\napply:\n%s", code, ev, out)
	}
}
