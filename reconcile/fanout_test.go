package reconcile

import (
	"testing"

	"go.uber.org/zap/zaptest"
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
