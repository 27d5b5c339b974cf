package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// apply judges what it started after --stay-up: a service whose process
// exits 100 ms after its start passed the start step, and an apply that
// waits longer than that reads it failed and exits 1 naming it (process
// backend; e2e TestApplyStartThatDoesNotStayUp is the systemd one). A
// negative --stay-up is refused before anything is done.
func TestApplyStayUpWindow(t *testing.T) {
	const crash = "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: crash}\nspec:\n  command: [/bin/sh, -c, \"sleep 0.1; exit 1\"]\n  restart: {policy: never}\n"
	for _, tc := range []struct {
		name     string
		flags    []string
		wantCode int
		want     string
	}{
		{"negative refused", []string{"--stay-up", "-1s"}, 2, "must not be negative"},
		{"waits past the exit", []string{"--stay-up", "1s"}, 1, "NotStayedUp Service/crash: crash.service did not stay up after its start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newProcEnv(t)
			e.write("crash.yaml", crash)
			out, code := e.cliErr("apply", tc.flags...)
			if code != tc.wantCode || !strings.Contains(out, tc.want) {
				t.Fatalf("apply %v: exit %d, want %d and %q:\n%s", tc.flags, code, tc.wantCode, tc.want, out)
			}
			if tc.wantCode == 2 && e.pid("crash.service") != 0 {
				t.Fatal("a refused apply started crash")
			}
		})
	}
}

// When the host cannot be read after the steps, apply cannot judge that
// what it started stayed up, and does not exit 0 as if it had: the service
// here leaves a file over the observer's cap in the unit directory as it
// starts, which the read after the steps refuses.
func TestApplyAfterReadFailureIsNotSuccess(t *testing.T) {
	e := newProcEnv(t)
	big := filepath.Join(e.state, "units", "zz-big.service")
	e.write("filler.yaml", "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: filler}\nspec:\n"+
		"  command: [/bin/sh, -c, \"head -c 2000000 /dev/zero > "+big+"; exec sleep 1000\"]\n")
	out, code := e.cliErr("apply", "--stay-up", "500ms")
	if code != 1 || !strings.Contains(out, "whether what apply started stayed up is unknown") {
		t.Fatalf("apply: exit %d, want 1 and the unknown verdict:\n%s", code, out)
	}
}
