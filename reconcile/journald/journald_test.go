package journald

import (
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"resil.dev/resil/reconcile"
)

type sent struct {
	msg  string
	pri  journal.Priority
	vars map[string]string
}

func TestRecordFieldsAndRepeats(t *testing.T) {
	var got []sent
	r := New(func(m string, p journal.Priority, v map[string]string) error {
		got = append(got, sent{m, p, v})
		return nil
	}, nil)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := reconcile.Event{Time: t0, Type: reconcile.Warning, Reason: reconcile.ReasonStopped, Object: "Service/web", Unit: "web.service", Message: "web.service is inactive"}
	r.Record(ev)
	ev.Time = t0.Add(time.Minute)
	r.Record(ev) // repeat within Every: not sent
	ev.Time = t0.Add(11 * time.Minute)
	r.Record(ev) // sent again
	r.Record(reconcile.Event{Time: t0, Type: reconcile.Normal, Reason: reconcile.ReasonApplied, Message: "x"})
	storm := reconcile.Event{Time: t0, Type: reconcile.Warning, Reason: reconcile.ReasonRestartStorm, Object: "Service/web", Message: "3 or more restarts within 5m0s"}
	r.Record(storm)
	storm.Time = t0.Add(5 * time.Minute)
	r.Record(storm) // an occurrence: always sent
	if len(got) != 5 {
		t.Fatalf("sent %d, want 3: %+v", len(got), got)
	}
	w := got[0]
	if w.pri != journal.PriWarning || w.msg != "StoppedOutOfBand Service/web: web.service is inactive" ||
		w.vars["RESIL_OBJECT"] != "Service/web" || w.vars["RESIL_REASON"] != "StoppedOutOfBand" || w.vars["RESIL_UNIT"] != "web.service" ||
		w.vars["SYSLOG_IDENTIFIER"] != "reconciler" {
		t.Errorf("warning event: %+v", w)
	}
	if n := got[2]; n.pri != journal.PriInfo || n.vars["RESIL_TYPE"] != "Normal" {
		t.Errorf("normal event: %+v", n)
	}
	for k := range got[0].vars {
		for _, c := range k {
			if (c < 'A' || c > 'Z') && c != '_' {
				t.Errorf("invalid journal field name %q", k)
			}
		}
	}
}
