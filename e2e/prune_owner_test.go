package e2e

import (
	"strings"
	"testing"
)

// A unit the operator made by copying a resil unit carries the copied
// unit's X-Resil-Object marker, but its name is not one its object renders:
// while that object is desired, neither the plain copy nor one edited into
// another service is pruned (stopped, disabled, deleted); diff, apply and
// status report an OwnerConflict and never say "no longer desired".
func TestPruneLeavesCopiedUnit(t *testing.T) {
	e := newEnv(t)
	e.write("b0001.yaml", svc("b0001", ""))
	e.write("b0002.yaml", svc("b0002", ""))
	e.apply(0)
	copyUnit := func(from, to string, replace ...string) string {
		t.Helper()
		data, err := e.sb.ReadFile("/etc/systemd/system/" + from)
		if err != nil {
			t.Fatal(err)
		}
		body := strings.NewReplacer(replace...).Replace(string(data))
		if err := e.sb.WriteFile("/etc/systemd/system/"+to, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return body
	}
	debug := copyUnit("b0001.service", "b0001-debug.service")
	mytool := copyUnit("b0002.service", "mytool.service", "ExecStart=/bin/sleep infinity", "ExecStart=/bin/sleep 86400", "Description=", "Description=my tool, was ")
	if !strings.Contains(mytool, "ExecStart=/bin/sleep 86400") {
		t.Fatalf("the copy was not edited:\n%s", mytool)
	}
	e.systemctl("daemon-reload")
	e.systemctl("start", "b0001-debug.service", "mytool.service")
	pids := map[string]string{}
	for _, u := range []string{"b0001-debug.service", "mytool.service"} {
		pids[u] = e.prop(u, "MainPID")
	}

	check := func(what, out string) {
		t.Helper()
		for _, want := range []string{
			"b0001-debug.service carries Service/b0001's ownership marker but is not one of its units (a copy?); left alone",
			"mytool.service carries Service/b0002's ownership marker but is not one of its units (a copy?); left alone",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%s does not report %q:\n%s", what, want, out)
			}
		}
		for _, bad := range []string{"no longer desired", "stop b0001-debug.service", "stop mytool.service", "b0001-debug.service (pruned", "mytool.service (pruned"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s says %q:\n%s", what, bad, out)
			}
		}
	}
	diff, errOut, _ := e.reconciler("diff")
	check("diff", diff+errOut)
	// The mass-prune guard off: it would hold back a prune of both (two of
	// two owned objects), not tell a copy from its object's unit.
	out, errOut, _ := e.reconciler("apply", "--max-prune", "0")
	check("apply", out+errOut)
	status, errOut, _ := e.reconciler("status")
	if !strings.Contains(status+errOut, "OwnerConflict") {
		t.Errorf("status does not show the OwnerConflict:\n%s%s", status, errOut)
	}
	// Again: still nothing done to the copies.
	if out, errOut, code := e.reconciler("apply", "--max-prune", "0"); code != 0 || !strings.Contains(out, "\n0 steps") {
		t.Errorf("second apply: exit %d\n%s%s", code, out, errOut)
	}

	for u, body := range map[string]string{"b0001-debug.service": debug, "mytool.service": mytool} {
		p := e.show(u, "ActiveState", "MainPID", "LoadState")
		if p["ActiveState"] != "active" || p["MainPID"] != pids[u] || p["LoadState"] != "loaded" {
			t.Errorf("%s touched: %v, MainPID was %s", u, p, pids[u])
		}
		if data, err := e.sb.ReadFile("/etc/systemd/system/" + u); err != nil || string(data) != body {
			t.Errorf("%s file changed or removed: %v", u, err)
		}
	}
	for _, u := range []string{"b0001.service", "b0002.service"} {
		if s := e.prop(u, "ActiveState"); s != "active" {
			t.Errorf("%s: %s", u, s)
		}
	}
}
