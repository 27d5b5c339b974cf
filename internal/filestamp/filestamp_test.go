package filestamp

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStamp(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	s := Of(fi)
	if s.IsZero() || s.Size != 3 || s.Ino == 0 {
		t.Fatalf("stamp %+v", s)
	}
	ctime := time.Unix(0, s.Ctime)
	for _, tc := range []struct {
		name   string
		start  time.Time
		window time.Duration
		want   bool
	}{
		{"read just after the change", ctime.Add(time.Millisecond), RacyWindow, false},
		{"read past the window", ctime.Add(RacyWindow + time.Millisecond), RacyWindow, true},
		{"change time in the future", ctime.Add(-time.Hour), 0, false},
		{"no window", ctime.Add(time.Nanosecond), 0, true},
	} {
		if got := s.Settled(tc.start, tc.window); got != tc.want {
			t.Errorf("%s: Settled %v, want %v", tc.name, got, tc.want)
		}
	}
	if (Stamp{}).Settled(time.Now(), 0) {
		t.Error("the zero stamp is settled")
	}
	if err := os.WriteFile(p, []byte("two!"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(p)
	if Of(fi) == s {
		t.Error("a rewrite of another size kept the stamp")
	}
}
