package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

// A render refused as unsupported by the backend is an Unsupported finding:
// nothing of the object is written or started, and what already runs of it
// (its last accepted version) is neither stopped nor pruned. It counts as
// invalid on that backend (LoadErr: diff exits 2, apply 1).
func TestUnsupportedRenderBlocksTheObject(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", webManifest)
	f := newFake()
	r, _ := newTestReconciler(t, dir, f, nil)
	if _, err := r.Reconcile(context.Background(), Options{}); err != nil || !f.active["web.service"] {
		t.Fatalf("first pass: %v", err)
	}
	writeManifest(t, dir, "web.yaml", webManifest+"  systemd: {Service: {NoNewPrivileges: \"yes\"}}\n")
	refuse := func(o *desired.Object) ([]desired.UnitFile, error) {
		if o.Service != nil && o.Service.Systemd != nil {
			return nil, fmt.Errorf("render %s: %w: spec.systemd.Service.NoNewPrivileges", o.ID(), actuators.ErrUnsupported)
		}
		return desired.Render(o)
	}
	for _, fresh := range []bool{false, true} {
		rr := r
		if fresh {
			rr, _ = newTestReconciler(t, dir, f, nil)
		}
		rr.cfg.Render = refuse
		f.applied = nil
		res, err := rr.Reconcile(context.Background(), Options{})
		if err != nil || !res.Plan.Empty() || len(f.applied) != 0 || !errors.Is(res.LoadErr, actuators.ErrUnsupported) {
			t.Fatalf("fresh %v: err %v steps %v applied %v", fresh, err, res.Plan.Steps, f.applied)
		}
		var found bool
		for _, fd := range res.Plan.Findings {
			found = found || (fd.Reason == ReasonUnsupported && fd.Object == "Service/web" && strings.Contains(fd.Message, "NoNewPrivileges"))
		}
		if !found || !f.active["web.service"] || f.files["web.service"] == nil {
			t.Fatalf("fresh %v: findings %+v, active %v", fresh, res.Plan.Findings, f.active["web.service"])
		}
	}
}
