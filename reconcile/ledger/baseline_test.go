package ledger

import (
	"encoding/json"
	"fmt"
	"testing"
)

// encodeBaseline must write what json.Marshal wrote: a stored baseline is
// compared byte for byte (Keeper.saved) and read by older agents.
func TestEncodeBaselineIsJSONMarshal(t *testing.T) {
	odd := []string{"", "plain", `quo"te`, `back\slash`, "<html>&", "tab\there", "nl\n", "ünïcode", "\u2028sep", "bad\xffutf8", "\x7f"}
	for _, tc := range []struct {
		name  string
		units map[string]baselineUnit
	}{
		{"empty", map[string]baselineUnit{}},
		{"one", map[string]baselineUnit{"a.service": {Owner: "Service/a", ActiveState: "active", SubState: "running", NRestarts: 3, MainPID: 42, Start: 1 << 60}}},
		{"many, odd strings", func() map[string]baselineUnit {
			m := map[string]baselineUnit{}
			for i := range 300 {
				s := odd[i%len(odd)]
				m[fmt.Sprintf("u%03d%s.service", i, s)] = baselineUnit{Owner: s, ActiveState: odd[(i+1)%len(odd)], SubState: odd[(i+2)%len(odd)],
					Result: odd[(i+3)%len(odd)], NRestarts: uint32(i) * 7919, MainPID: ^uint32(0) - uint32(i), Start: ^uint64(0) - uint64(i)}
			}
			return m
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := json.Marshal(tc.units)
			if err != nil {
				t.Fatal(err)
			}
			got, err := encodeBaseline(tc.units)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("encodeBaseline:\n%s\njson.Marshal:\n%s", got, want)
			}
		})
	}
}

func BenchmarkEncodeBaseline1000(b *testing.B) {
	m := map[string]baselineUnit{}
	for i := range 1000 {
		m[fmt.Sprintf("b%04d.service", i)] = baselineUnit{Owner: fmt.Sprintf("Service/b%04d", i), ActiveState: "active", SubState: "running", MainPID: uint32(1000 + i), Start: 1764950000000000}
	}
	b.Run("encodeBaseline", func(b *testing.B) {
		for b.Loop() {
			_, _ = encodeBaseline(m)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(m)
		}
	})
}
