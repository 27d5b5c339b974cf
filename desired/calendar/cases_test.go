package calendar

import (
	"fmt"
	"strings"
	"time"
)

// differentialBases are the base times of the differential test: an
// ordinary day, just before a leap day (with a fraction), a month end, both
// European DST switches (01:00 UTC) and the last microsecond of a year.
var differentialBases = []string{
	"2026-03-15 12:34:56 UTC",
	"2028-02-28 23:59:59.5 UTC",
	"2026-01-31 23:30:00 UTC",
	"2026-03-29 00:59:59 UTC",
	"2026-10-25 00:30:00 UTC",
	"2026-12-31 23:59:59.999999 UTC",
}

// handPicked covers every feature of systemd.time(7) calendar events, and
// the edges of systemd 252's parser, valid and invalid.
var handPicked = []string{
	// Shorthands, any case.
	"minutely", "hourly", "daily", "monthly", "weekly", "yearly", "annually",
	"anually", "quarterly", "semiannually", "semi-annually", "biannually",
	"bi-annually", "DAILY", "Hourly UTC", "daily Europe/Berlin", "weekly ",
	" daily", "dailyx", "daily 10:00", "fortnightly",

	// Weekdays: names, lists, ranges.
	"Mon", "Monday", "mon..fri", "Mon..Fri 10:00", "Mon,Wed..Fri", "Mon-Fri",
	"Sat,Sun", "Sun..Mon", "Fri..Mon", "Mon..Sun", "Mon,Tue,Wed,Thu,Fri,Sat,Sun",
	"Mon..Wed..Fri", "Mon.Tue", "Mon,", "Mon, 10:00", "Mon,,Tue", "Mon..", "Mon-",
	"Mon..Fry 10:00", "Mond", "Mondays", "Tue,Thu 12:00", "Mon,Wed,Fri",
	"Mon,Tue", "Mon,Tue,Wed", "Sat..Sun", "Sun", "Wed..Wed", "WEDNESDAY",
	"Mon *-*-* 00:00:00", "Mon  10:00", "Mon..Fri *-*-1..7 09:00",
	"Mon,Wed..Thu,Sat", "Tue..Thu,Sun 18:30", "Thursday,friday", "Mon\t10:00",
	"Fri *-*-13", "Sun *-*-29..31", "Tue 2026-03-16", "Mon 2026-03-16",
	"Sat *-02-29", "Mon..Fri 2026-03..04-* 12:00",

	// Dates.
	"2026-03-20", "26-03-20", "99-01-01", "1969-12-31", "1970-01-01",
	"2199-12-31", "2200-01-01", "*-*-*", "*-*-* *:*:*", "*-*-1/2", "*-1/2-1",
	"2026..2030/2-01-01", "2026..2031/2-01-01", "2026..2030-01-01",
	"2026/3-01-01", "26..30-01-01", "69-01-01", "70-01-01", "100-01-01",
	"2199..2200-01-01", "2026,2024-*-*", "2020..2030/5-*-*",
	"*-02-29", "*-02-30", "*-2-30", "*-04-31", "*-*-31", "*-1,3,5,7,8,10,12-31",
	"03-15", "3-15 10:00", "*-*-0", "*-0-1", "*-13-1", "*-12-32",
	"*-*-1..31/10", "*-*-5/10", "*-*-25/10", "*-*-1..5,10..15", "*-*-1,1,1",
	"*-*-3,1,2", "2026-1..3,7-1", "*-*-*/2", "*-02-28,29", "*-02-29 00:00",
	"2027-02-29", "2028-02-29 12:00", "*-*-30,31 23:59:59", "*-*-29..31",
	"2026-03-15 12:34:56", "2026-03-15 12:34:57", "2026-03-15 12:34:56.5",
	"*-12-31 23:59:59.999999", "2026-1-1", "0026-01-01",

	// Last days of the month ("~").
	"*-02~01", "*-02~03", "*~01", "*-*~01", "*-05~1/2", "*-05~05/2",
	"*-*~3..1", "*-*~1..3", "*-*~28", "*-*~29", "*-02~03..05", "2026-02~01",
	"2026~02-01", "*-*~01 23:59:59", "*-02~*", "*-*~1,7,14", "*-*~5/7",
	"*-*~07/2", "*-*~0", "*-02~28", "2028-02~29",

	// Times.
	"10:00", "10:00:30", "10:00:30.5", "10:00:30.123456", "10:00:30.1234567",
	"10:00:30.9999995", "00:00:59.999999", "00:00:60", "24:00", "23:59",
	"23:60", "*:0/15", "*:*:0/10", "*:*:*", "*:*", "10", "10:", ":10",
	"10:00:", "10:00:00:00", "1,13:00", "8..17:00", "8..17/2:00", "*:00,30",
	"*:0..59/15", "*:*:0/0.5", "*:*:1.5..2", "*:*:1..2/0.25", "*:*:0..59/7",
	"*:*:50/20", "*:*:0/40", "*:*:30/30", "*:*:29/30", "12:00:00.5..3",
	"*:*:0.000001/0.000001", "0/2:00", "*-*-* 0/2:00", "10.5:00", "1e3:00",
	"2147483647:00", "2147483648:00", "99999999999999999999:00", "*:*:2147",
	"*:*:2148", "*:*:2147.483647", "1..2..3:00", "1/2/3:00", "1..3/0:00",
	"1/0:00", "0..23/24:00", "0..23/23:00", "00..00:00", "5..3:00",
	"*:*:5.", "*:*:5..", "*:*:.5", "*:*:05.50", "0x10:00", "+1:00", "-1:00",
	"10:00 Mon", "2026-01-01T10:00", "*:*:59.5..59.9/0.1", "*:*:0..1/0.3",
	"*:*:7/0.999999", "3,2,1:00", "23..1:00", "*:5,5,5",

	// Time zones.
	"10:00 UTC", "10:00 utc", "10:00 Utc", "10:00  UTC", "10:00UTC", "UTC",
	" UTC", "10:00 Europe/Berlin", "10:00 Europe/Berln", "10:00 europe/berlin",
	"10:00 Etc/UTC", "10:00 Etc/GMT+5", "10:00 Etc/GMT-14", "02:30 Europe/Berlin",
	"*:0/20 Europe/Berlin", "01:30 America/New_York", "2:30 America/New_York",
	"*:30 Australia/Lord_Howe", "10:00 Asia/Kolkata", "10:00 CET",
	"10:00 EST5EDT", "10:00 CEST", "10:00 Local", "10:00 GMT", "10:00 Zulu",
	"10:00 posixrules", "Mon 10:00 America/Sao_Paulo", "10:00 Europe/Berlin UTC",
	"daily UTC", "Europe/Berlin", "10:00 Europe/", "10:00 /Europe/Berlin",
	"10:00 Europe//Berlin", "10:00 ../etc/passwd", "10:00 zone.tab",
	"*-*-* 00:00:00 Pacific/Chatham", "*-*-~01 00:00 Asia/Tokyo",
	"Sun *-03-08..14 01..03:00,30 America/New_York",
	"Sun *-11-01..07 00..02:00,30 America/New_York",
	"Sun *-03~01..07 01..03:00,30 Europe/Berlin",
	"Sun *-10~01..07 01..03:00,30 Europe/Berlin",
	"Sun *-04-01..07 01..02:0/10 Australia/Lord_Howe",
	"Sun *-10-01..07 01..03:0/15 Australia/Lord_Howe",
	"*-*-* 02:30:00 Europe/Berlin", "*-03-29 02:00..03:00 Europe/Berlin",
	"*-10-25 02:00:00,30 Europe/Berlin", "Mon..Fri 08..18:00 Europe/London",
	"*-*~01 00:00 America/Santiago", "*:0/7:0/13 Europe/Dublin",

	// @epoch.
	"@1700000000", "@0", "@-0", "@-5", "@ 5", "@+5", "@", "@1700000000 UTC",
	"@1700000000 Europe/Berlin", "@1800000000", "Mon @1800000000",
	"@99999999999", "@7258118399", "@7258118400", "@1700000000.5",
	"@1700000000 ", "@0x10", "@1800000000 10:00",

	// White space and odds.
	"", " ", "  10:00", "10:00 ", "Mon 2026-01-01  10:00", "2026-01-01\t10:00",
	"2026-01-01 ", "Mon  ", "*", "**", "*-*", "*-*-*-*", "1-2-3-4", "2026-01",
	"01", "a", "*-*-* *:*:*.5", "*-*-* *:*:*/2", "Mon,Wed,Fri 2026..2030-01,04,07,10-1..7 08,12,18:00,30:00,30 Europe/Berlin",
	strings.Repeat("0,", 240) + "0:00", strings.Repeat("0,", 241) + "0:00",
	"*-*-" + strings.Repeat("1,", 240) + "1", "*-*-" + strings.Repeat("1,", 241) + "1",
}

// prng is splitmix64: fixed forever, unlike math/rand's streams, so the
// generated expressions never change under a new Go release.
type prng struct{ s uint64 }

func (r *prng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (r *prng) intn(n int) int           { return int(r.next() % uint64(n)) }
func (r *prng) chance(percent int) bool  { return r.intn(100) < percent }
func (r *prng) pick(xs ...string) string { return xs[r.intn(len(xs))] }
func (r *prng) between(lo, hi int) int   { return lo + r.intn(hi-lo+1) }

// genNumber is mostly within lo..hi, sometimes just outside.
func (r *prng) genNumber(lo, hi, width int) int {
	switch {
	case r.chance(6):
		return hi + r.between(1, 5)
	case r.chance(3) && lo > 0:
		return lo - 1
	}
	return r.between(lo, hi)
}

func (r *prng) fmtNumber(v, width int) string {
	if r.chance(20) {
		width = 1
	}
	return fmt.Sprintf("%0*d", width, v)
}

func (r *prng) genComponent(lo, hi, width int, usec bool) string {
	num := func(v int) string {
		s := r.fmtNumber(v, width)
		if usec && r.chance(20) {
			s += "." + r.pick("5", "25", "123456", "1234567", "9999995", "000001", "75")
		}
		return s
	}
	a := r.genNumber(lo, hi, width)
	span := max(1, (hi-lo)/3)
	switch r.intn(7) {
	case 0, 1, 2:
		return num(a)
	case 3:
		return num(a) + ".." + num(min(a+r.between(-1, span), hi+r.intn(2)))
	case 4:
		return num(a) + "/" + num(r.between(0, span))
	case 5:
		return num(a) + ".." + num(min(a+r.between(0, span*2), hi)) + "/" + num(r.between(1, span))
	default:
		return num(r.between(lo, hi))
	}
}

func (r *prng) genChain(lo, hi, width int, usec bool) string {
	if r.chance(30) {
		return "*"
	}
	n := 1
	if r.chance(25) {
		n += r.intn(3)
	}
	parts := make([]string, n)
	for i := range parts {
		parts[i] = r.genComponent(lo, hi, width, usec)
	}
	return strings.Join(parts, ",")
}

func (r *prng) genWeekdays() string {
	names := []string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun",
		"Monday", "tuesday", "WEDNESDAY", "thu", "Friday", "sat", "Sunday", "Fry"}
	n := 1 + r.intn(3)
	parts := make([]string, n)
	for i := range parts {
		a := names[r.intn(len(names))]
		if r.chance(35) {
			parts[i] = a + r.pick("..", "..", "-") + names[r.intn(len(names))]
		} else {
			parts[i] = a
		}
	}
	s := strings.Join(parts, ",")
	if r.chance(5) {
		s += ","
	}
	return s
}

func (r *prng) genDate() string {
	year := func() string {
		if r.chance(15) {
			return r.genChain(0, 99, 2, false)
		}
		if r.chance(50) {
			return r.genChain(2026, 2032, 4, false)
		}
		return r.genChain(1968, 2201, 4, false)
	}
	month := func() string { return r.genChain(1, 12, 2, false) }
	day := func() string { return r.genChain(1, 31, 2, false) }
	eom := func() string { return r.genChain(1, 28, 2, false) }
	switch r.intn(10) {
	case 0, 1, 2, 3:
		return year() + "-" + month() + "-" + day()
	case 4, 5:
		return month() + "-" + day()
	case 6:
		return year() + "-" + month() + "~" + eom()
	case 7:
		return month() + "~" + eom()
	case 8:
		return fmt.Sprintf("@%d", r.between(1600000000, 1900000000))
	default:
		return ""
	}
}

func (r *prng) genTime() string {
	t := r.genChain(0, 23, 2, false) + ":" + r.genChain(0, 59, 2, false)
	if r.chance(60) {
		t += ":" + r.genChain(0, 59, 2, true)
	}
	return t
}

var genZones = []string{"UTC", "utc", "Europe/Berlin", "America/New_York",
	"Asia/Kolkata", "Australia/Lord_Howe", "Etc/GMT+5", "Mars/Base", "CET", "EST"}

// mutate damages an expression: delete, insert or double a byte.
func (r *prng) mutate(s string) string {
	if s == "" {
		return r.pick("-", ".", "~")
	}
	i := r.intn(len(s))
	switch r.intn(3) {
	case 0:
		return s[:i] + s[i+1:]
	case 1:
		return s[:i] + r.pick("-", ".", ",", "/", "~", ":", " ", "*", "9", "x") + s[i:]
	default:
		return s[:i] + s[i:i+1] + s[i:]
	}
}

func (r *prng) genExpr() string {
	if r.chance(4) {
		s := r.pick("minutely", "hourly", "daily", "weekly", "monthly", "quarterly", "yearly", "semiannually")
		if r.chance(30) {
			s = strings.ToUpper(s)
		}
		return s
	}
	var parts []string
	if r.chance(30) {
		parts = append(parts, r.genWeekdays())
	}
	if d := r.genDate(); d != "" {
		parts = append(parts, d)
	}
	if r.chance(80) && (len(parts) == 0 || !strings.HasPrefix(parts[len(parts)-1], "@")) {
		parts = append(parts, r.genTime())
	}
	if r.chance(25) {
		parts = append(parts, genZones[r.intn(len(genZones))])
	}
	s := strings.Join(parts, r.pick(" ", " ", " ", " ", "  "))
	if r.chance(10) {
		s = r.mutate(s)
	}
	return s
}

// generated returns n distinct generated expressions, none of them
// hand-picked, from a fixed seed.
func generated(n int) []string {
	seen := make(map[string]bool)
	for _, e := range handPicked {
		seen[e] = true
	}
	r := &prng{s: 252}
	var out []string
	for len(out) < n {
		e := r.genExpr()
		if seen[e] || strings.ContainsAny(e, "\n\x00") {
			continue
		}
		seen[e] = true
		out = append(out, e)
	}
	return out
}

// differentialCase is one expression evaluated from one base time.
type differentialCase struct {
	Expr, Base string
}

// differentialCases pairs every hand-picked expression with every base
// time, and each generated one with one base time, round robin.
func differentialCases() []differentialCase {
	var cs []differentialCase
	for _, e := range handPicked {
		for _, b := range differentialBases {
			cs = append(cs, differentialCase{e, b})
		}
	}
	for i, e := range generated(500) {
		cs = append(cs, differentialCase{e, differentialBases[i%len(differentialBases)]})
	}
	return append(cs, dstCases()...)
}

// dstCases probe DST changes: zones with ordinary, 30-minute, negative
// (Europe/Dublin) and midnight (America/Santiago, America/Havana) changes,
// from base times shortly before and after each change.
func dstCases() []differentialCase {
	changes := []struct {
		zone string
		at   []string // UTC instants of the 2026 changes
	}{
		{"Europe/Dublin", []string{"2026-03-29 01:00", "2026-10-25 01:00"}},
		{"Europe/London", []string{"2026-03-29 01:00", "2026-10-25 01:00"}},
		{"America/New_York", []string{"2026-03-08 07:00", "2026-11-01 06:00"}},
		{"Australia/Lord_Howe", []string{"2026-04-04 15:00", "2026-10-03 15:30"}},
		{"America/Santiago", []string{"2026-04-05 03:00", "2026-09-06 04:00"}},
		{"America/Havana", []string{"2026-03-08 05:00", "2026-11-01 05:00"}},
	}
	specs := []string{"*:0/7:0/13", "*:*:0/40", "*:0/7", "01:03", "01..03:0/15", "*:00", "0/2:30", "*:0/25:0/50"}
	offsets := []time.Duration{-3601 * time.Second, -1801 * time.Second, -61 * time.Second, -time.Second, 0, 59 * time.Second, 1799 * time.Second}
	var cs []differentialCase
	for _, c := range changes {
		for _, at := range c.at {
			t, err := time.Parse("2006-01-02 15:04", at)
			if err != nil {
				panic(err)
			}
			for _, off := range offsets {
				base := t.Add(off).Format("2006-01-02 15:04:05") + " UTC"
				for _, spec := range specs {
					cs = append(cs, differentialCase{spec + " " + c.zone, base})
				}
			}
		}
	}
	return cs
}
