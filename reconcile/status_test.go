package reconcile

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

// TestClassify: the object state of each outcome a pass can have; an
// uncorrected informational warning (Unsupported) counts as Drifted, an
// enforced drift finding as being corrected.
func TestClassify(t *testing.T) {
	svc := func(name string) *desired.Object {
		return &desired.Object{Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: name}, Service: &desired.ServiceSpec{}}
	}
	res := Result{
		Desired: []*desired.Object{svc("ok"), svc("fixing"), svc("quiet"), svc("crash"), svc("broken"), svc("applyfail"), svc("new"), svc("limited"), svc("caughtup")},
		Plan: Plan{Findings: []Finding{
			{Object: "Service/fixing", Reason: ReasonStopped, Message: "inactive; starting", Warning: true, Enforced: true},
			{Object: "Service/quiet", Reason: ReasonStopped, Message: "inactive; left as is", Warning: true},
			{Object: "Service/crash", Reason: ReasonFailed, Message: "failed", Warning: true},
			{Object: "Service/broken", Reason: ReasonLastGoodRetained, Message: "broken.yaml is invalid", Warning: true},
			{Object: "Service/limited", Reason: ReasonUnsupported, Message: "not on this backend", Warning: true},
			{Object: "Service/caughtup", Reason: ReasonTimerCatchUp, Message: "runs late once"},
			{Object: "Service/nolastgood", Reason: ReasonLastGoodRetained, Message: "new.yaml is invalid; it is not applied", Warning: true},
		}},
		Outcomes: []StepOutcome{
			{Step: actuators.Step{Op: actuators.OpStart, Object: "Service/fixing", Unit: "fixing.service"}, Result: actuators.Changed},
			{Step: actuators.Step{Op: actuators.OpStart, Object: "Service/applyfail", Unit: "applyfail.service"}, Err: errors.New("boom")},
			{Step: actuators.Step{Op: actuators.OpStart, Object: "Service/new", Unit: "new.service"}, Result: actuators.Changed},
		},
	}
	got := Classify(res)
	var rows []string
	for _, o := range res.Desired {
		s := got[o.ID()]
		rows = append(rows, fmt.Sprintf("%s %s failed=%t drift=%t %q", o.Metadata.Name, s.State, s.Failed, s.Drift, s.Message))
	}
	want := []string{
		`ok Converged failed=false drift=false ""`,
		`fixing Converging failed=false drift=false ""`,
		`quiet Drifted failed=false drift=true "StoppedOutOfBand: inactive; left as is"`,
		`crash Failed failed=true drift=false "Failed: failed"`,
		`broken Invalid failed=false drift=true "LastGoodRetained: broken.yaml is invalid"`,
		`applyfail Failed failed=true drift=false "ApplyFailed: start applyfail.service (): boom"`,
		`new Converging failed=false drift=false ""`,
		`limited Drifted failed=false drift=true "Unsupported: not on this backend"`,
		`caughtup Converged failed=false drift=false ""`,
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
	// Held back with no last good version: in no list, Invalid all the same.
	if s := got["Service/nolastgood"]; s.State != StateInvalid || !s.Drift {
		t.Errorf("held object with no last good version: %+v, want Invalid", s)
	}
	if len(got) != len(res.Desired)+1 {
		t.Errorf("%d statuses, want %d", len(got), len(res.Desired)+1)
	}
	for _, s := range States {
		if s.Problem() != (s == StateDrifted || s == StateFailed || s == StateInvalid) {
			t.Errorf("%s.Problem() = %t", s, s.Problem())
		}
	}
}
