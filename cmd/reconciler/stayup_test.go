package main

import (
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
