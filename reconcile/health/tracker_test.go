package health

import "testing"

func TestTracker(t *testing.T) {
	tests := []struct {
		name                string
		failures, successes int
		results             string // p pass, f fail
		want                []State
	}{
		{"first pass", 3, 1, "p", []State{Passing}},
		{"failures below threshold", 3, 1, "pff", []State{Passing, Passing, Passing}},
		{"three in a row", 3, 1, "pfff", []State{Passing, Passing, Passing, Failing}},
		{"run broken by a pass", 3, 1, "ffpff", []State{Unknown, Unknown, Passing, Passing, Passing}},
		{"recovery needs successes", 1, 2, "fppf", []State{Failing, Failing, Passing, Failing}},
		{"unknown until a threshold", 2, 2, "pfp", []State{Unknown, Unknown, Unknown}},
		{"zero thresholds count as one", 0, 0, "fp", []State{Failing, Passing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(tt.failures, tt.successes)
			prev := Unknown
			for i, r := range tt.results {
				got, changed := tr.Observe(r == 'p')
				if got != tt.want[i] {
					t.Fatalf("after %q: %s, want %s", tt.results[:i+1], got, tt.want[i])
				}
				if changed != (got != prev) {
					t.Fatalf("after %q: changed=%v from %s to %s", tt.results[:i+1], changed, prev, got)
				}
				prev = got
			}
		})
	}
}
