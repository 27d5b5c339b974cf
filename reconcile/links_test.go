package reconcile

import (
	"context"
	"errors"
	"strings"
	"testing"

	"resil.dev/resil/actuators"
)

// On systemd a pass that only changes enablement reloads for it, and only
// if an enable or disable changed something: one that fails (or is held
// back by backoff) costs no daemon-reload on every pass.
func TestLinksReloadOnlyWhenLinked(t *testing.T) {
	tests := []struct {
		name       string
		failEnable bool
		reloaded   bool
		skipped    string
	}{
		{name: "enable changed: reloaded", reloaded: true},
		{name: "enable failed: no reload", failEnable: true, skipped: "no enablement changed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeManifest(t, dir, "web.yaml", webManifest)
			f := newFake()
			f.backend = "systemd"
			r, _ := newTestReconciler(t, dir, f, nil)
			if _, err := r.Reconcile(context.Background(), Options{}); err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			f.enabled["web.service"] = false // disabled out of band
			f.applied = nil
			if tt.failEnable {
				f.failOn["enable web.service"] = errors.New("unit masked")
			}
			f.mu.Unlock()
			res, _ := r.Reconcile(context.Background(), Options{})
			var plan []string
			for _, s := range res.Plan.Steps {
				plan = append(plan, strings.TrimSpace(string(s.Op)+" "+s.Unit))
			}
			if got, want := strings.Join(plan, "; "), "enable web.service; daemon-reload"; got != want {
				t.Fatalf("plan %q, want %q", got, want)
			}
			reloaded := false
			for _, a := range f.applied {
				reloaded = reloaded || strings.HasPrefix(a, "daemon-reload")
			}
			if reloaded != tt.reloaded {
				t.Errorf("daemon-reload applied %v, want %v (applied %q)", reloaded, tt.reloaded, f.applied)
			}
			for _, oc := range res.Outcomes {
				if oc.Step.Op == actuators.OpDaemonReload && oc.Skipped != tt.skipped {
					t.Errorf("reload skipped %q, want %q", oc.Skipped, tt.skipped)
				}
			}
		})
	}
}
