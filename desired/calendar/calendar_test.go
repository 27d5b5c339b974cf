package calendar

import (
	"errors"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
)

func TestParseString(t *testing.T) {
	tests := []struct {
		expr, want string
	}{
		{"daily", "*-*-* 00:00:00"},
		{"weekly", "Mon *-*-* 00:00:00"},
		{"quarterly", "*-01,04,07,10-01 00:00:00"},
		{"Sat,Sun", "Sat,Sun *-*-* 00:00:00"},
		{"Mon,Tue,Wed,Fri", "Mon..Wed,Fri *-*-* 00:00:00"},
		{"monday..SUNDAY 10:00", "*-*-* 10:00:00"},
		{"*-*-1/2", "*-*-01/2 00:00:00"},
		{"2026..2031/2-01-01", "2026..2030/2-01-01 00:00:00"},
		{"26-3-5 1:2:3.5", "2026-03-05 01:02:03.500000"},
		{"*:*:0/0.5", "*-*-* *:*:00/0.500000"},
		{"*:*:0/1,5", "*-*-* *:*:*"},
		{"*-02~03", "*-02~03 00:00:00"},
		{"*-*~17,23", "*-*~17,23 00:00:00"},
		{"@1700000000", "2023-11-14 22:13:20 UTC"},
		{"12:00 utc", "*-*-* 12:00:00 UTC"},
		{"Mon, 10:00", "Mon *-*-* 10:00:00"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			s, err := Parse(tt.expr)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := s.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		expr string
		kind error
		msg  string // substring of the message
	}{
		{"Mon..Fry 10:00", ErrSyntax, `invalid calendar expression "Mon..Fry 10:00": unknown weekday "Fry"`},
		{"Fri..Mon", ErrSyntax, "goes backwards"},
		{"fortnightly", ErrSyntax, `unknown weekday or keyword "fortnightly"`},
		{"", ErrSyntax, "empty expression"},
		{"*-13-01", ErrRange, "month 13 is out of range 1..12"},
		{"1969-01-01", ErrRange, "year 1969 is out of range 1970..2199"},
		{"*:*:60", ErrRange, "second 60 is out of range"},
		{"*:*:1.5..2", ErrRange, "spans less than a second"},
		{"*-*~17,19,23", ErrRange, "out of range 1..22"},
		{"10:00 Europe/Berln", ErrSyntax, `"Europe/Berln" is not a known time zone`},
		{"1/0:00", ErrRange, "must not be zero"},
		{"10:00\x00", ErrSyntax, "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			_, err := Parse(tt.expr)
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %v is not %v", err, tt.kind)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Expr != tt.expr {
				t.Errorf("error %#v is not a *ParseError for the expression", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
		})
	}
}

func TestNext(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		sandbox.Missing(t, "no zoneinfo (apt-get install tzdata): %v", err)
	}
	utc := func(s string) time.Time {
		v, err := time.Parse("2006-01-02 15:04:05.999999", s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name, expr string
		after      time.Time
		want       string // RFC 3339 in the result's location, "" for none
	}{
		{"strictly after", "*-*-* 10:00", utc("2026-03-15 10:00:00"), "2026-03-16T10:00:00Z"},
		{"local to the argument", "10:00", utc("2026-03-15 12:00:00").In(berlin), "2026-03-16T10:00:00+01:00"},
		{"zone suffix", "10:00 Europe/Berlin", utc("2026-06-01 00:00:00"), "2026-06-01T10:00:00+02:00"},
		{"leap day", "*-02-29", utc("2026-03-01 00:00:00"), "2028-02-29T00:00:00Z"},
		{"last day", "*-*~01", utc("2026-02-01 00:00:00"), "2026-02-28T00:00:00Z"},
		{"DST gap skipped", "*-03-29 02:30 Europe/Berlin", utc("2026-03-01 00:00:00"), "2027-03-29T02:30:00+02:00"},
		{"fraction", "*:*:0/0.25", utc("2026-01-01 00:00:00.3"), "2026-01-01T00:00:00.5Z"},
		{"past", "2020-01-01", utc("2026-01-01 00:00:00"), ""},
		{"impossible", "*-02-30", utc("2026-01-01 00:00:00"), ""},
		{"epoch", "@1800000000", utc("2026-01-01 00:00:00"), "2027-01-15T08:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := MustParse(tt.expr)
			got, ok := s.Next(tt.after)
			switch {
			case tt.want == "" && ok:
				t.Errorf("Next = %v, want none", got)
			case tt.want != "" && !ok:
				t.Errorf("Next = none, want %s", tt.want)
			case ok && got.Format(time.RFC3339Nano) != tt.want:
				t.Errorf("Next = %s, want %s", got.Format(time.RFC3339Nano), tt.want)
			case ok && !got.After(tt.after):
				t.Errorf("Next = %v, not after %v", got, tt.after)
			}
		})
	}
}

// TestNextNeverBackwards walks DST changes in zones where systemd 252's
// search can go backwards and checks Next always moves forward.
func TestNextNeverBackwards(t *testing.T) {
	for _, expr := range []string{
		"*:0/7 Europe/Dublin", "*:00 Europe/Dublin", "0/2:30 America/Santiago",
		"*:0/15 America/Havana", "*:0/10 Australia/Lord_Howe", "*:*:0/40 Europe/Berlin",
	} {
		s, err := Parse(expr)
		if err != nil {
			sandbox.Missing(t, "%v (no zoneinfo? apt-get install tzdata)", err)
		}
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		end := at.AddDate(1, 0, 0)
		for n := 0; at.Before(end) && n < 20000; n++ {
			next, ok := s.Next(at)
			if !ok {
				break
			}
			if !next.After(at) {
				t.Fatalf("%s: Next(%v) = %v", expr, at, next)
			}
			// Jump close to each DST change quickly.
			if next.Sub(at) < time.Hour && n%50 == 49 {
				next = next.Add(24 * time.Hour)
			}
			at = next
		}
	}
}

func BenchmarkParse(b *testing.B) {
	for b.Loop() {
		if _, err := Parse("Mon,Wed..Fri 2026..2030-01,04,07,10-1..7 08,12,18:00,30:00 UTC"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNext(b *testing.B) {
	for _, expr := range []string{"*-*-* 10:00:00", "Mon..Fri *-*~01 08:00 Europe/Berlin", "*-02-29 00:00"} {
		s := MustParse(expr)
		at := time.Date(2026, 3, 15, 12, 34, 56, 0, time.UTC)
		b.Run(expr, func(b *testing.B) {
			for b.Loop() {
				if _, ok := s.Next(at); !ok {
					b.Fatal("no next")
				}
			}
		})
	}
}
