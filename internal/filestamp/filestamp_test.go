package filestamp

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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

// Read returns a file's bytes with the stat of the same open file, and
// refuses a file larger than its cap instead of cutting it short.
func TestRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "u.service")
	if err := os.WriteFile(p, []byte("[Unit]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, fi, err := Read(p, 7)
	if err != nil || string(data) != "[Unit]\n" || fi.Size() != 7 {
		t.Fatalf("Read = %q, %v, %v", data, fi, err)
	}
	if _, _, err := Read(p, 6); err == nil || !strings.Contains(err.Error(), "larger than 6 bytes") {
		t.Fatalf("Read over the cap: %v", err)
	}
	if _, _, err := Read(filepath.Join(filepath.Dir(p), "none"), 7); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of a missing file: %v", err)
	}
}
