package calendar

import (
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics, that a parsed spec's String
// parses again to the same String, and that Next returns a time after its
// argument. Next terminates by construction (findNext gives up after
// maxIterations rounds, every mktime probe loop is bounded), so there is no
// timing assertion here; a hang would trip go test's -timeout.
func FuzzParse(f *testing.F) {
	for _, e := range handPicked {
		f.Add(e)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		s, err := Parse(expr)
		if err != nil {
			return
		}
		norm := s.String()
		s2, err := Parse(norm)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but its String %q does not parse: %v", expr, norm, err)
		}
		if got := s2.String(); got != norm {
			t.Fatalf("Parse(%q).String() = %q, which normalizes to %q", expr, norm, got)
		}
		at := time.Date(2026, 3, 15, 12, 34, 56, 0, time.UTC)
		for range 3 {
			next, ok := s.Next(at)
			if !ok {
				break
			}
			if !next.After(at) {
				t.Fatalf("%q: Next(%v) = %v", expr, at, next)
			}
			at = next
		}
	})
}
