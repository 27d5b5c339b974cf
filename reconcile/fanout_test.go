package reconcile

import (
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

type captured []Event

func (c *captured) Record(e Event) { *c = append(*c, e) }

func TestFanoutSameEventEverywhere(t *testing.T) {
	ring := NewRing(8, zaptest.NewLogger(t))
	var a, b captured
	f := Fanout{ring, &a, nil, &b}
	f.Record(Event{Type: Warning, Reason: ReasonFailed, Object: "Service/x", Message: "m"})
	if len(a) != 1 || len(b) != 1 || len(ring.Events()) != 1 {
		t.Fatalf("fan-out: ring %d, a %d, b %d", len(ring.Events()), len(a), len(b))
	}
	if a[0].Time.IsZero() || !a[0].Time.Equal(b[0].Time) || !a[0].Time.Equal(ring.Events()[0].Time) || a[0].Count != 1 {
		t.Errorf("recorders disagree: %+v %+v %+v", a[0], b[0], ring.Events()[0])
	}
}

// The ring keeps the newest size events, oldest first, before and after
// it wraps; a repeat of the latest event bumps its count.
func TestRingWraps(t *testing.T) {
	r := NewRing(3, zaptest.NewLogger(t))
	msgs := func() string {
		var out []string
		for _, e := range r.Events() {
			out = append(out, fmt.Sprintf("%s×%d", e.Message, e.Count))
		}
		return strings.Join(out, " ")
	}
	steps := []struct{ add, want string }{
		{"a", "a×1"}, {"b", "a×1 b×1"}, {"b", "a×1 b×2"}, {"c", "a×1 b×2 c×1"}, {"d", "b×2 c×1 d×1"}, {"e", "c×1 d×1 e×1"}, {"f", "d×1 e×1 f×1"}, {"g", "e×1 f×1 g×1"},
	}
	for _, s := range steps {
		r.Record(Event{Object: "Service/x", Reason: ReasonApplied, Message: s.add})
		if got := msgs(); got != s.want {
			t.Fatalf("after %s: %q, want %q", s.add, got, s.want)
		}
	}
}

// Every recorded event is logged, a repeat too (with its count): the
// log is the operator's record of what happened, and a second restart
// of a service for the same reason is a second restart.
func TestRingLogsRepeats(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	r := NewRing(8, zap.New(core))
	for range 3 {
		r.Record(Event{Type: Normal, Reason: ReasonApplied, Object: "Service/x", Message: "restart x.service (unit file changed: environment)"})
	}
	got := logs.FilterMessage("event").All()
	if len(got) != 3 {
		t.Fatalf("%d event lines logged, want 3", len(got))
	}
	if c := got[2].ContextMap()["count"]; c != int64(3) {
		t.Errorf("third line's count %v, want 3", c)
	}
}
