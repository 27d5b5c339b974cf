package calendar

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	usecPerSec = 1000000

	minYear = 1970
	maxYear = 2199

	// allWeekdays is the bit set with Monday (bit 0) through Sunday (bit 6).
	allWeekdays = 127

	// maxChain is systemd's CALENDARSPEC_COMPONENTS_MAX plus one: a list
	// such as "1,2,3" may have at most this many elements.
	maxChain = 241

	// intMax is C's INT_MAX: systemd stores every value in an int.
	intMax = 1<<31 - 1
)

// component is one element of a comma-separated list: a single value
// (stop < 0, repeat == 0), a range start..stop, and/or a repetition start/repeat.
// Seconds are kept in microseconds, like systemd does.
type component struct {
	start, stop, repeat int
}

// chain is a comma-separated list. A nil chain means "*" (any value).
type chain []component

// Spec is a parsed calendar event. The zero value is not useful; use Parse.
// A Spec is immutable and safe for concurrent use.
type Spec struct {
	weekdays   int // bit 0 = Monday ... bit 6 = Sunday; -1 = any day
	year       chain
	month      chain
	day        chain // when endOfMonth, values count back from the month's end
	hour       chain
	minute     chain
	usec       chain // seconds in microseconds; never nil after Parse
	endOfMonth bool  // "~" was used between month and day
	utc        bool  // " UTC" suffix, or the @epoch form
	zone       string
	loc        *time.Location // loaded zone when zone != ""
}

// Parse parses a calendar expression as systemd 252 does
// (`systemd-analyze calendar EXPR`): the same expressions are accepted, they
// normalize to the same String, and Next computes the same elapse times.
//
// On failure the error is a *ParseError wrapping ErrSyntax or ErrRange; its
// message quotes the expression and says what is wrong.
//
// Differences from systemd, all deliberate and documented in doc.go: the
// time-zone suffix is resolved with time.LoadLocation, and the abbreviations
// of the host's own zone (such as "CET" in $TZ=Europe/Berlin) carry no special
// meaning — they are accepted only when they name a zone file.
func Parse(expr string) (*Spec, error) {
	s, err := parse(expr)
	if err != nil {
		pe := &ParseError{Expr: expr, Detail: err.Error(), Err: ErrSyntax}
		var d *detailError
		if errors.As(err, &d) {
			pe.Err = d.kind
		}
		return nil, pe
	}
	return s, nil
}

// MustParse is like Parse but panics on error. It is meant for expressions
// that are constants in the program.
func MustParse(expr string) *Spec {
	s, err := Parse(expr)
	if err != nil {
		panic(err)
	}
	return s
}

func parse(p string) (*Spec, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return nil, syntaxf("contains a NUL byte")
	}
	s := &Spec{}

	// Time zone suffix: " UTC" in any case, else the last space-separated
	// word if it names a zone file. systemd also accepts the abbreviations
	// of its own local zone here (tzname[]); see doc.go.
	zoneHint := ""
	if hasSuffixFold(p, " UTC") {
		s.utc = true
		p = p[:len(p)-len(" UTC")]
	} else if i := strings.LastIndexByte(p, ' '); i >= 0 {
		name := p[i+1:]
		if loc, ok := loadZone(name); ok {
			s.zone, s.loc = name, loc
			p = p[:i]
		} else if strings.ContainsAny(name, "/") || (len(name) > 0 && isUpper(name[0])) {
			zoneHint = name
		}
	}
	if p == "" {
		if s.utc || s.zone != "" {
			return nil, syntaxf("nothing before the time zone")
		}
		return nil, syntaxf("empty expression")
	}

	if err := s.parseBody(p); err != nil {
		if zoneHint != "" {
			var d *detailError
			if errors.As(err, &d) && d.kind == ErrSyntax {
				return nil, syntaxf("%s (%q is not a known time zone)", d.detail, zoneHint)
			}
		}
		return nil, err
	}
	s.normalize()
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// parseBody parses everything but the time zone suffix.
func (s *Spec) parseBody(p string) error {
	zero := func() chain { return chain{{start: 0, stop: -1}} }
	set := func(mon, day, hour, min bool) {
		if mon {
			s.month = zero()
			s.month[0].start = 1
		}
		if day {
			s.day = zero()
			s.day[0].start = 1
		}
		if hour {
			s.hour = zero()
		}
		if min {
			s.minute = zero()
		}
		s.usec = zero()
	}
	switch {
	case equalFold(p, "minutely"):
		set(false, false, false, false)
	case equalFold(p, "hourly"):
		set(false, false, false, true)
	case equalFold(p, "daily"):
		set(false, false, true, true)
	case equalFold(p, "monthly"):
		set(false, true, true, true)
	case equalFold(p, "annually"), equalFold(p, "yearly"), equalFold(p, "anually"):
		set(true, true, true, true)
	case equalFold(p, "weekly"):
		s.weekdays = 1
		set(false, false, true, true)
	case equalFold(p, "quarterly"):
		set(false, true, true, true)
		s.month = chain{{1, -1, 0}, {4, -1, 0}, {7, -1, 0}, {10, -1, 0}}
	case equalFold(p, "biannually"), equalFold(p, "bi-annually"),
		equalFold(p, "semiannually"), equalFold(p, "semi-annually"):
		set(false, true, true, true)
		s.month = chain{{1, -1, 0}, {7, -1, 0}}
	default:
		rest, err := s.parseWeekdays(p)
		if err != nil {
			return err
		}
		if rest != "" && isAlpha(rest[0]) { // no date or time starts with a letter
			return syntaxf("unknown weekday or keyword %q", word(rest))
		}
		rest, epoch, err := s.parseDate(rest)
		if err != nil {
			return err
		}
		if !epoch {
			rest, err = s.parseTime(rest)
			if err != nil {
				return err
			}
		}
		if rest != "" {
			return syntaxf("unexpected %s at the end", quoteRest(rest))
		}
	}
	return nil
}

var weekdayNames = [...]struct {
	name string
	nr   int
}{
	{"Monday", 0}, {"Mon", 0},
	{"Tuesday", 1}, {"Tue", 1},
	{"Wednesday", 2}, {"Wed", 2},
	{"Thursday", 3}, {"Thu", 3},
	{"Friday", 4}, {"Fri", 4},
	{"Saturday", 5}, {"Sat", 5},
	{"Sunday", 6}, {"Sun", 6},
}

var shortWeekdays = [7]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}

// parseWeekdays parses an optional leading weekday list such as "Mon,Wed..Fri"
// and returns the rest of the input with the separating spaces skipped.
func (s *Spec) parseWeekdays(p string) (string, error) {
	open := -1 // start of an open range, or -1
	first := true
	for {
		i := 0
		for ; i < len(weekdayNames); i++ {
			if hasPrefixFold(p, weekdayNames[i].name) {
				break
			}
		}
		if i == len(weekdayNames) {
			if first {
				return p, nil // no weekdays: the date follows
			}
			return "", syntaxf("unknown weekday %q", word(p))
		}
		nr := weekdayNames[i].nr
		p = p[len(weekdayNames[i].name):]
		if p != "" && !strings.ContainsRune("-., ", rune(p[0])) {
			return "", syntaxf("unknown weekday %q", weekdayNames[i].name+word(p))
		}
		s.weekdays |= 1 << nr
		if open >= 0 {
			if open > nr {
				return "", syntaxf("weekday range %s..%s goes backwards", shortWeekdays[open], shortWeekdays[nr])
			}
			for j := open + 1; j < nr; j++ {
				s.weekdays |= 1 << j
			}
		}
		if p == "" {
			return p, nil
		}
		switch p[0] {
		case ' ':
			return strings.TrimLeft(p, " "), nil
		case '.':
			if open >= 0 {
				return "", syntaxf("weekday range cannot be extended with another %q", "..")
			}
			if len(p) < 2 || p[1] != '.' {
				return "", syntaxf("expected %q after weekday %s", "..", shortWeekdays[nr])
			}
			open = nr
			p = p[2:]
		case '-':
			if open >= 0 {
				return "", syntaxf("weekday range cannot be extended with another %q", "-")
			}
			open = nr
			p = p[1:]
		case ',':
			open = -1
			p = p[1:]
		}
		// A trailing comma is fine, an open range is not.
		if p == "" || p[0] == ' ' {
			if open >= 0 {
				return "", syntaxf("weekday range starting at %s has no end", shortWeekdays[open])
			}
			return strings.TrimLeft(p, " "), nil
		}
		first = false
	}
}

// parseDate parses "[[YEAR-]MONTH-DAY]" or "@EPOCH". It leaves p unchanged when
// the input turns out to be a time. epoch is true for the "@" form, which
// sets the time as well.
func (s *Spec) parseDate(p string) (rest string, epoch bool, err error) {
	if p == "" {
		return p, false, nil
	}
	if p[0] == '@' {
		v, rest, err := strtoul(p[1:])
		if err != nil {
			return "", false, err
		}
		if err := s.setEpoch(v); err != nil {
			return "", false, err
		}
		return rest, true, nil
	}

	first, t, err := parseChain(p, false, "date")
	if err != nil {
		return "", false, err
	}
	if t == "" || t[0] == ':' {
		return p, false, nil // it was a time
	}
	if err := s.dateSeparator(t, p); err != nil {
		return "", false, err
	}
	second, t, err := parseChain(t[1:], false, "date")
	if err != nil {
		return "", false, err
	}
	if t == "" || t[0] == ' ' {
		s.month, s.day = first, second
		return strings.TrimLeft(t, " "), false, nil
	}
	if s.endOfMonth {
		return "", false, syntaxf("%q may only separate month and day", "~")
	}
	if err := s.dateSeparator(t, p); err != nil {
		return "", false, err
	}
	third, t, err := parseChain(t[1:], false, "date")
	if err != nil {
		return "", false, err
	}
	if t != "" && t[0] != ' ' {
		return "", false, syntaxf("unexpected %s after the day", quoteRest(t))
	}
	s.year, s.month, s.day = first, second, third
	return strings.TrimLeft(t, " "), false, nil
}

func (s *Spec) dateSeparator(t, all string) error {
	switch t[0] {
	case '~':
		s.endOfMonth = true
	case '-':
	default:
		return syntaxf("unexpected %s in date %s (want YYYY-MM-DD, MM-DD or HH:MM[:SS])", quoteRest(t), quoteRest(all))
	}
	return nil
}

// setEpoch implements "@SECONDS": a single point in time, in UTC.
func (s *Spec) setEpoch(v uint64) error {
	sec := int64(v) // like C's (time_t) cast
	// Anything outside 1970..2199 fails validation anyway; checking here
	// keeps time.Unix away from absurd values.
	if sec < 0 || sec > 7258118399 { // 2199-12-31 23:59:59 UTC
		return rangef("@%d is outside the years %d..%d", sec, minYear, maxYear)
	}
	t := time.Unix(sec, 0).UTC()
	c := func(v int) chain { return chain{{start: v, stop: -1}} }
	s.year, s.month, s.day = c(t.Year()), c(int(t.Month())), c(t.Day())
	s.hour, s.minute, s.usec = c(t.Hour()), c(t.Minute()), c(t.Second()*usecPerSec)
	s.utc = true
	return nil
}

// parseTime parses "HH:MM[:SS[.ffffff]]", or nothing at all (midnight).
func (s *Spec) parseTime(p string) (string, error) {
	zero := chain{{start: 0, stop: -1}}
	if p == "" {
		s.hour, s.minute, s.usec = zero, slices.Clone(zero), slices.Clone(zero)
		return p, nil
	}
	h, t, err := parseChain(p, false, "hour")
	if err != nil {
		return "", err
	}
	if t == "" || t[0] != ':' {
		if t == "" {
			return "", syntaxf("missing %q after the hour (want HH:MM[:SS])", ":")
		}
		return "", syntaxf("unexpected %s after the hour (want HH:MM[:SS])", quoteRest(t))
	}
	m, t, err := parseChain(t[1:], false, "minute")
	if err != nil {
		return "", err
	}
	if t == "" {
		s.hour, s.minute, s.usec = h, m, zero
		return t, nil
	}
	if t[0] != ':' {
		return "", syntaxf("unexpected %s after the minute", quoteRest(t))
	}
	sec, t, err := parseChain(t[1:], true, "second")
	if err != nil {
		return "", err
	}
	if t != "" {
		return "", syntaxf("unexpected %s after the second", quoteRest(t))
	}
	s.hour, s.minute, s.usec = h, m, sec
	return t, nil
}

// parseChain parses "*" or a comma-separated list of components.
func parseChain(p string, usec bool, field string) (chain, string, error) {
	if p != "" && p[0] == '*' {
		if usec {
			return chain{{start: 0, stop: -1, repeat: usecPerSec}}, p[1:], nil
		}
		return nil, p[1:], nil
	}
	var c chain
	for {
		if len(c) == maxChain {
			return nil, "", rangef("too many comma-separated %s values (at most %d)", field, maxChain)
		}
		comp, rest, err := parseComponent(p, usec, field)
		if err != nil {
			return nil, "", err
		}
		c = append(c, comp)
		if rest == "" || rest[0] != ',' {
			return c, rest, nil
		}
		p = rest[1:]
	}
}

// parseComponent parses "START[..STOP][/REPEAT]".
func parseComponent(p string, usec bool, field string) (component, string, error) {
	c := component{stop: -1}
	start, e, err := parseDecimal(p, usec, field)
	if err != nil {
		return c, "", err
	}
	c.start = start
	if strings.HasPrefix(e, "..") {
		c.stop, e, err = parseDecimal(e[2:], usec, field)
		if err != nil {
			return c, "", err
		}
		c.repeat = 1
		if usec {
			c.repeat = usecPerSec
		}
	}
	if e != "" && e[0] == '/' {
		c.repeat, e, err = parseDecimal(e[1:], usec, field)
		if err != nil {
			return c, "", err
		}
		if c.repeat == 0 {
			return c, "", rangef("%s repetition must not be zero", field)
		}
	} else {
		if c.start > intMax-c.repeat {
			return c, "", rangef("%s value %s is too large", field, fmtValue(c.start, usec))
		}
		// Without an explicit repetition a seconds range steps by one
		// second, so it must span at least one.
		if usec && c.stop >= 0 && c.start+c.repeat > c.stop {
			return c, "", rangef("second range %s..%s spans less than a second; add a repetition such as /0.5",
				fmtValue(c.start, true), fmtValue(c.stop, true))
		}
	}
	if e != "" && !strings.ContainsRune(" ,-~:", rune(e[0])) {
		return c, "", syntaxf("unexpected %s in %s value", quoteRest(e), field)
	}
	return c, e, nil
}

// parseDecimal parses an unsigned decimal number; for seconds (usec) it also
// takes a fraction of up to six digits (a seventh rounds) and returns
// microseconds. Values must fit in a C int.
func parseDecimal(p string, usec bool, field string) (int, string, error) {
	if p == "" || !isDigit(p[0]) {
		if p == "" {
			return 0, "", syntaxf("missing %s value", field)
		}
		return 0, "", syntaxf("expected a number for the %s at %s", field, quoteRest(p))
	}
	i := 0
	for i < len(p) && isDigit(p[i]) {
		i++
	}
	v, err := strconv.ParseUint(p[:i], 10, 64)
	if err != nil {
		return 0, "", rangef("%s value %s is too large", field, p[:i])
	}
	e := p[i:]
	if usec {
		if v > (1<<64-1)/usecPerSec {
			return 0, "", rangef("%s value %s is too large", field, p[:i])
		}
		v *= usecPerSec
		// One "." is a decimal point, but ".." is a range separator.
		if e != "" && e[0] == '.' && (len(e) < 2 || e[1] != '.') {
			frac, rest, err := parseFraction(e[1:])
			if err != nil {
				return 0, "", syntaxf("missing digits after the decimal point in %s value %s.", field, p[:i])
			}
			v += uint64(frac)
			e = rest
		}
	}
	if v > intMax {
		return 0, "", rangef("%s value %s is too large", field, strings.TrimSuffix(p, e))
	}
	return int(v), e, nil
}

// parseFraction parses the digits after a decimal point into microseconds,
// rounding on the seventh digit and ignoring any further ones.
func parseFraction(p string) (int, string, error) {
	if p == "" || !isDigit(p[0]) {
		return 0, "", errors.New("no digits")
	}
	v, i := 0, 0
	for ; i < 6; i++ {
		v *= 10
		if i < len(p) && isDigit(p[i]) {
			v += int(p[i] - '0')
		} else {
			// pad with zeros
			for i++; i < 6; i++ {
				v *= 10
			}
			return v, p[digitsEnd(p, 0):], nil
		}
	}
	if i < len(p) && p[i] >= '5' && p[i] <= '9' {
		v++
	}
	return v, p[digitsEnd(p, i):], nil
}

func digitsEnd(p string, i int) int {
	for i < len(p) && isDigit(p[i]) {
		i++
	}
	return i
}

// strtoul mimics C's strtoul(p, &end, 10) as used for "@EPOCH": leading
// white space and a sign are allowed, a minus wraps around.
func strtoul(p string) (uint64, string, error) {
	i := 0
	for i < len(p) && strings.IndexByte(" \t\n\v\f\r", p[i]) >= 0 {
		i++
	}
	neg := false
	if i < len(p) && (p[i] == '+' || p[i] == '-') {
		neg = p[i] == '-'
		i++
	}
	j := digitsEnd(p, i)
	if j == i {
		return 0, "", syntaxf("expected seconds since the epoch after %q", "@")
	}
	v, err := strconv.ParseUint(p[i:j], 10, 64)
	if err != nil {
		return 0, "", rangef("@%s is too large", p[i:j])
	}
	if neg {
		v = -v
	}
	return v, p[j:], nil
}

// normalize mirrors calendar_spec_normalize.
func (s *Spec) normalize() {
	if s.zone == "UTC" {
		s.utc, s.zone, s.loc = true, "", nil
	}
	if s.weekdays <= 0 || s.weekdays >= allWeekdays {
		s.weekdays = -1
	}
	if s.endOfMonth && s.day == nil {
		s.endOfMonth = false
	}
	for i := range s.year {
		c := &s.year[i]
		c.start = fixYear(c.start)
		c.stop = fixYear(c.stop)
	}
	for _, c := range []*chain{&s.year, &s.month, &s.day, &s.hour, &s.minute, &s.usec} {
		*c = normalizeChain(*c)
	}
}

// fixYear turns two-digit years into four-digit ones: 12 → 2012, 89 → 1989.
func fixYear(y int) int {
	switch {
	case y >= 0 && y < 70:
		return y + 2000
	case y >= 70 && y < 100:
		return y + 1900
	}
	return y
}

func normalizeChain(c chain) chain {
	for i := range c {
		x := &c[i]
		// Make the range length a multiple of the repetition.
		if x.stop > x.start && x.repeat > 0 {
			x.stop -= (x.stop - x.start) % x.repeat
		}
		// A repetition that cannot fire twice, or a range of one value,
		// is a single value.
		if (x.stop > x.start && x.repeat > 0 && x.start+x.repeat > x.stop) || x.start == x.stop {
			x.repeat = 0
			x.stop = -1
		}
	}
	if len(c) <= 1 {
		return c
	}
	slices.SortFunc(c, func(a, b component) int {
		if a.start != b.start {
			return a.start - b.start
		}
		if a.stop != b.stop {
			return a.stop - b.stop
		}
		return a.repeat - b.repeat
	})
	return slices.Compact(c)
}

// validate mirrors calendar_spec_valid, with messages.
func (s *Spec) validate() error {
	if err := validChain(s.year, "year", minYear, maxYear, false, false); err != nil {
		return err
	}
	if err := validChain(s.month, "month", 1, 12, false, false); err != nil {
		return err
	}
	if err := validChain(s.day, "day", 1, 31, s.endOfMonth, false); err != nil {
		return err
	}
	if err := validChain(s.hour, "hour", 0, 23, false, false); err != nil {
		return err
	}
	if err := validChain(s.minute, "minute", 0, 59, false, false); err != nil {
		return err
	}
	return validChain(s.usec, "second", 0, 60*usecPerSec-1, false, true)
}

func validChain(c chain, field string, from, to int, endOfMonth, usec bool) error {
	for _, x := range c {
		if endOfMonth {
			// At most 28 days back from the end of the month. systemd 252
			// hands the already reduced limit on to the next element of
			// the list, so each further element loses another 3 days.
			to -= 3
			field = "days before the end of the month (~)"
		}
		lim := fmt.Sprintf("%s..%s", fmtValue(from, usec), fmtValue(to, usec))
		if usec {
			lim = "0..59.999999"
		}
		v := fmtValue(x.start, usec)
		if x.start < from || x.start > to {
			return rangef("%s %s is out of range %s", field, v, lim)
		}
		if x.repeat > to-from {
			return rangef("%s repetition /%s is longer than the range %s", field, fmtValue(x.repeat, usec), lim)
		}
		if x.stop >= 0 {
			if x.stop < from || x.stop > to {
				return rangef("%s %s is out of range %s", field, fmtValue(x.stop, usec), lim)
			}
			if x.start+x.repeat > x.stop {
				return rangef("%s range %s..%s is empty or backwards", field, v, fmtValue(x.stop, usec))
			}
		} else {
			if endOfMonth && x.start-x.repeat < from {
				return rangef("%s ~%s/%s never repeats", field, v, fmtValue(x.repeat, usec))
			}
			if !endOfMonth && x.start+x.repeat > to {
				return rangef("%s %s/%s never repeats within %s", field, v, fmtValue(x.repeat, usec), lim)
			}
		}
	}
	return nil
}

// String returns systemd's normalized form, exactly as
// `systemd-analyze calendar` prints it after "Normalized form:".
func (s *Spec) String() string {
	var b strings.Builder
	if s.weekdays > 0 && s.weekdays < allWeekdays {
		s.formatWeekdays(&b)
		b.WriteByte(' ')
	}
	formatChain(&b, 4, s.year, false)
	b.WriteByte('-')
	formatChain(&b, 2, s.month, false)
	if s.endOfMonth {
		b.WriteByte('~')
	} else {
		b.WriteByte('-')
	}
	formatChain(&b, 2, s.day, false)
	b.WriteByte(' ')
	formatChain(&b, 2, s.hour, false)
	b.WriteByte(':')
	formatChain(&b, 2, s.minute, false)
	b.WriteByte(':')
	formatChain(&b, 2, s.usec, true)
	if s.utc {
		b.WriteString(" UTC")
	} else if s.zone != "" {
		b.WriteByte(' ')
		b.WriteString(s.zone)
	}
	return b.String()
}

// Location returns the time zone the spec names, time.UTC for " UTC" and
// the "@EPOCH" form, or nil when it names none (Next then works in the
// location of its argument).
func (s *Spec) Location() *time.Location {
	switch {
	case s.utc:
		return time.UTC
	case s.loc != nil:
		return s.loc
	}
	return nil
}

// formatWeekdays prints runs of three or more days as ranges.
func (s *Spec) formatWeekdays(b *strings.Builder) {
	l := -1
	comma := false
	x := 0
	closeRun := func() {
		if x > l+1 {
			if x > l+2 {
				b.WriteString("..")
			} else {
				b.WriteByte(',')
			}
			b.WriteString(shortWeekdays[x-1])
		}
	}
	for ; x < 7; x++ {
		if s.weekdays&(1<<x) != 0 {
			if l < 0 {
				if comma {
					b.WriteByte(',')
				}
				comma = true
				b.WriteString(shortWeekdays[x])
				l = x
			}
		} else if l >= 0 {
			closeRun()
			l = -1
		}
	}
	if l >= 0 {
		closeRun()
	}
}

func chainIsStar(c chain, usec bool) bool {
	if c == nil {
		return true
	}
	if usec {
		for _, x := range c {
			if x.start == 0 && x.stop < 0 && x.repeat == usecPerSec {
				return true
			}
		}
	}
	return false
}

func formatChain(b *strings.Builder, width int, c chain, usec bool) {
	d := 1
	if usec {
		d = usecPerSec
	}
	if chainIsStar(c, usec) {
		b.WriteByte('*')
		return
	}
	for i, x := range c {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(b, "%0*d", width, x.start/d)
		if x.start%d > 0 {
			fmt.Fprintf(b, ".%06d", x.start%d)
		}
		if x.stop > 0 {
			fmt.Fprintf(b, "..%0*d", width, x.stop/d)
		}
		if x.stop%d > 0 {
			fmt.Fprintf(b, ".%06d", x.stop%d)
		}
		if x.repeat > 0 && !(x.stop > 0 && x.repeat == d) {
			fmt.Fprintf(b, "/%d", x.repeat/d)
		}
		if x.repeat%d > 0 {
			fmt.Fprintf(b, ".%06d", x.repeat%d)
		}
	}
}

// fmtValue formats a value for error messages; seconds are in microseconds.
func fmtValue(v int, usec bool) string {
	if !usec {
		return strconv.Itoa(v)
	}
	if v%usecPerSec == 0 {
		return strconv.Itoa(v / usecPerSec)
	}
	return strings.TrimRight(fmt.Sprintf("%d.%06d", v/usecPerSec, v%usecPerSec), "0")
}

// zoneCache keeps loaded zones: time.LoadLocation reads a file each call.
var zoneCache sync.Map // string → *time.Location

// loadZone reports whether name is a time zone systemd would accept
// (its timezone_is_valid: a restricted character set and a zoneinfo file),
// resolved with time.LoadLocation.
func loadZone(name string) (*time.Location, bool) {
	if name == "" {
		return nil, false
	}
	if name == "UTC" {
		return time.UTC, true
	}
	if name[0] == '/' || name[len(name)-1] == '/' || strings.Contains(name, "//") || len(name) >= 4096 {
		return nil, false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isDigit(c) && !isAlpha(c) && c != '-' && c != '_' && c != '+' && c != '/' {
			return nil, false
		}
	}
	if name == "Local" { // Go's alias for time.Local; no such zone file
		return nil, false
	}
	if l, ok := zoneCache.Load(name); ok {
		return l.(*time.Location), true
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, false
	}
	zoneCache.Store(name, loc)
	return loc, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func isAlpha(c byte) bool { return isUpper(c) || (c >= 'a' && c <= 'z') }

func lower(c byte) byte {
	if isUpper(c) {
		return c + 'a' - 'A'
	}
	return c
}

// equalFold is an ASCII-only strings.EqualFold, like C's strcasecmp in the
// C locale (strings.EqualFold would also fold "K" KELVIN SIGN to "k").
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && equalFold(s[:len(prefix)], prefix)
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && equalFold(s[len(s)-len(suffix):], suffix)
}

// word returns the leading run of letters of p, or its first byte, for messages.
func word(p string) string {
	i := 0
	for i < len(p) && isAlpha(p[i]) {
		i++
	}
	if i == 0 && p != "" {
		i = 1
	}
	return p[:i]
}

// quoteRest quotes the remaining input for messages, shortened if long.
func quoteRest(p string) string {
	if len(p) > 24 {
		return strconv.Quote(p[:24]) + "..."
	}
	return strconv.Quote(p)
}
