package process

import (
	"testing"
	"time"

	"resil.dev/resil/desired"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestTrackerDecide(t *testing.T) {
	type exit struct {
		after            time.Duration // clock advance before this exit
		clean, requested bool
	}
	type want struct {
		d      Decision
		delay  time.Duration
		reason Reason
	}
	spec := func(p desired.RestartPolicy, delay string, burst int, iv string) RestartSpec {
		return RestartSpec{Policy: p, Delay: desired.Duration(delay), Burst: burst, Interval: desired.Duration(iv)}
	}
	tests := []struct {
		name  string
		spec  RestartSpec
		exits []exit
		want  []want
	}{
		{
			name:  "on-failure restarts a failure with delay",
			spec:  spec(desired.RestartOnFailure, "2s", 5, "10s"),
			exits: []exit{{}},
			want:  []want{{DecisionRestart, 2 * time.Second, ReasonPolicyFailure}},
		},
		{
			name:  "on-failure stops on clean exit",
			spec:  spec(desired.RestartOnFailure, "2s", 5, "10s"),
			exits: []exit{{clean: true}},
			want:  []want{{DecisionStop, 0, ReasonCleanExit}},
		},
		{
			name:  "always restarts a clean exit",
			spec:  spec(desired.RestartAlways, "100ms", 5, "10s"),
			exits: []exit{{clean: true}},
			want:  []want{{DecisionRestart, 100 * time.Millisecond, ReasonPolicyAlways}},
		},
		{
			name:  "never fails a failure",
			spec:  spec(desired.RestartNever, "", 5, "10s"),
			exits: []exit{{}, {clean: true}},
			want:  []want{{DecisionFail, 0, ReasonPolicyNever}, {DecisionStop, 0, ReasonCleanExit}},
		},
		{
			name:  "stop requested wins over always",
			spec:  spec(desired.RestartAlways, "", 5, "10s"),
			exits: []exit{{requested: true}},
			want:  []want{{DecisionStop, 0, ReasonStopRequested}},
		},
		{
			name:  "burst 3 in 10s: fourth start refused",
			spec:  spec(desired.RestartAlways, "0", 3, "10s"),
			exits: []exit{{after: time.Second}, {after: time.Second}, {after: time.Second}},
			want: []want{
				{DecisionRestart, 0, ReasonPolicyAlways},
				{DecisionRestart, 0, ReasonPolicyAlways},
				{DecisionLimit, 0, ReasonStartLimit},
			},
		},
		{
			name:  "starts outside the interval do not count",
			spec:  spec(desired.RestartAlways, "0", 2, "10s"),
			exits: []exit{{after: 6 * time.Second}, {after: 6 * time.Second}, {after: 6 * time.Second}},
			want: []want{
				{DecisionRestart, 0, ReasonPolicyAlways},
				{DecisionRestart, 0, ReasonPolicyAlways},
				{DecisionRestart, 0, ReasonPolicyAlways},
			},
		},
		{
			name:  "no interval counts attempts since reset",
			spec:  spec(desired.RestartOnFailure, "1s", 3, ""),
			exits: []exit{{after: time.Hour}, {after: time.Hour}, {after: time.Hour}},
			want: []want{
				{DecisionRestart, time.Second, ReasonPolicyFailure},
				{DecisionRestart, time.Second, ReasonPolicyFailure},
				{DecisionLimit, 0, ReasonStartLimit},
			},
		},
		{
			name:  "burst 0 means no limit",
			spec:  spec(desired.RestartAlways, "0", 0, "10s"),
			exits: []exit{{}, {}, {}, {}},
			want: []want{
				{DecisionRestart, 0, ReasonPolicyAlways}, {DecisionRestart, 0, ReasonPolicyAlways},
				{DecisionRestart, 0, ReasonPolicyAlways}, {DecisionRestart, 0, ReasonPolicyAlways},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			tr := NewTracker(tc.spec, clk.now)
			tr.Started()
			for i, e := range tc.exits {
				clk.advance(e.after)
				d, delay, r := tr.Decide(e.clean, e.requested)
				w := tc.want[i]
				if d != w.d || delay != w.delay || r != w.reason {
					t.Fatalf("exit %d: got (%v, %v, %q), want (%v, %v, %q)", i, d, delay, r, w.d, w.delay, w.reason)
				}
				if d == DecisionRestart {
					tr.Started()
				}
			}
		})
	}
}

func TestTrackerReset(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	tr := NewTracker(RestartSpec{Policy: desired.RestartAlways, Burst: 1, Interval: "1m"}, clk.now)
	tr.Started()
	if ok, _ := tr.AllowStart(); ok {
		t.Fatal("second start allowed with burst 1")
	}
	tr.Reset()
	if ok, r := tr.AllowStart(); !ok || r != ReasonStartAllowed {
		t.Fatalf("after reset: %v %q", ok, r)
	}
}
