package calendar

import "time"

// maxIterations is systemd's MAX_CALENDAR_ITERATIONS: find_next gives up
// after this many rounds, so no spec can make Next spin.
const maxIterations = 1000

// formattableMax is systemd's USEC_TIMESTAMP_FORMATTABLE_MAX (64-bit): later
// base times are refused.
const formattableMax = 253402214399999999

// Next returns the first elapse time strictly after `after`, with systemd's
// semantics (microsecond resolution, as in `systemd-analyze calendar`).
//
// The spec is evaluated in its own zone: UTC for " UTC" and "@EPOCH", the
// named zone for a suffix such as "Europe/Berlin", and after.Location() when
// it names none. The result is in that same location.
//
// Outcomes:
//
//	(t, true)           - t is the next elapse, t.After(after).
//	(time.Time{}, false) - the spec never elapses after `after` (a date or year
//	                       in the past, "*-02-30", years past 2199), or
//	                       systemd would give up on it too (see maxIterations).
//
// Times before 1970 are treated as 1970-01-01 00:00:00 UTC, since systemd
// cannot represent them.
func (s *Spec) Next(after time.Time) (time.Time, bool) {
	t, err := s.next(after)
	return t, err == nil
}

// next is Next with the reason: errNever ("Next elapse: never") or errLoop
// (systemd fails with "Infinite loop in calendar calculation").
func (s *Spec) next(after time.Time) (time.Time, error) {
	ck := clock{}
	out := after.Location()
	switch {
	case s.utc:
		ck.utc, out = true, time.UTC
	case s.loc != nil:
		ck.loc, out = s.loc, s.loc
	default:
		ck.loc = after.Location()
	}

	usec := after.UnixMicro() // floor, as after.Nanosecond() >= 0
	if usec > formattableMax {
		return time.Time{}, errNever
	}
	usec = max(usec, -1) + 1 // strictly after

	sec := floorDiv(usec, usecPerSec)
	lowest := usec // the result must not be earlier
	t, frac, err := s.search(&ck, sec, int(usec-sec*usecPerSec))
	if err != nil {
		return time.Time{}, err
	}
	// Around some DST changes (zones with negative DST such as
	// Europe/Dublin, or changes at midnight) mktime's normalization can go
	// backwards and the search lands at or before `after`. Returning that
	// would make a timer fire again and again, so search again from the
	// next offset change, inclusively; that is where systemd 252 ends up
	// in the cases we have seen.
	for range 3 {
		if t*usecPerSec+int64(frac) >= lowest {
			return time.Unix(t, int64(frac)*1000).In(out), nil
		}
		change, ok := ck.nextOffsetChange(sec)
		if !ok {
			break
		}
		sec = change
		if t, frac, err = s.search(&ck, change, 0); err != nil {
			return time.Time{}, err
		}
	}
	return time.Time{}, errLoop
}

// search runs findNext from sec+usec (inclusive) and converts the result.
func (s *Spec) search(ck *clock, sec int64, usec int) (int64, int, error) {
	c, frac, err := s.findNext(ck, ck.localtime(sec), usec)
	if err != nil {
		return 0, 0, err
	}
	t, ok := ck.mktime(&c)
	if !ok || t < 0 {
		return 0, 0, errNever
	}
	return t, frac, nil
}

// findNext mirrors systemd 252's find_next: starting at c (and usec
// microseconds), it moves each field, from year down to seconds, to the next
// value its chain allows, resetting the smaller fields whenever a larger one
// moves. A value that does not exist as such (Feb 30, second 80, an hour
// skipped by DST) is normalized by mktime and the round starts over from
// there; a field that has no further match moves the next larger unit on.
func (s *Spec) findNext(ck *clock, c tm, usec int) (tm, int, error) {
	resetFrom := func(level int) {
		// level: 1 month, 2 day, 3 hour, 4 minute, 5 second
		if level <= 1 {
			c.mon = 0
		}
		if level <= 2 {
			c.mday = 1
		}
		if level <= 3 {
			c.hour = 0
		}
		if level <= 4 {
			c.min = 0
		}
		c.sec, usec = 0, 0
	}
	// step applies one field's match result: r is -1 (no match, or the
	// time would be invalid or move backwards), 0 (normalized: start over)
	// or 1 (fine as it is).
	step := func(ok, changed bool, reset int) int {
		if !ok {
			return -1
		}
		if changed && reset > 0 {
			resetFrom(reset)
		}
		return s.within(ck, &c)
	}
	for range maxIterations {
		ck.mktime(&c) // normalize; a failure leaves c as it is
		c.isdst = -1

		v, changed, ok := s.match(ck, s.year, false, &c, c.year)
		if !ok {
			return c, 0, errNever
		}
		c.year = v
		if step(true, changed, 1) <= 0 {
			return c, 0, errNever
		}

		v, changed, ok = s.match(ck, s.month, false, &c, c.mon+1)
		if ok {
			c.mon = v - 1
		}
		if r := step(ok, changed, 2); r < 0 {
			c.year++
			resetFrom(1)
			continue
		} else if r == 0 {
			continue
		}

		v, changed, ok = s.match(ck, s.day, s.endOfMonth, &c, c.mday)
		if ok {
			c.mday = v
		}
		if r := step(ok, changed, 3); r < 0 {
			c.mon++
			resetFrom(2)
			continue
		} else if r == 0 {
			continue
		}

		if !s.matchesWeekday(ck, c) {
			c.mday++
			resetFrom(3)
			continue
		}

		v, changed, ok = s.match(ck, s.hour, false, &c, c.hour)
		if ok {
			c.hour = v
		}
		if r := step(ok, changed, 4); r < 0 {
			c.mday++
			resetFrom(3)
			continue
		} else if r == 0 {
			// The hour may be missing because of a DST change; start
			// over from the normalized time.
			continue
		}

		v, changed, ok = s.match(ck, s.minute, false, &c, c.min)
		if ok {
			c.min = v
		}
		if r := step(ok, changed, 5); r < 0 {
			c.hour++
			resetFrom(4)
			continue
		} else if r == 0 {
			continue
		}

		v, _, ok = s.match(ck, s.usec, false, &c, c.sec*usecPerSec+usec)
		if ok {
			c.sec, usec = v/usecPerSec, v%usecPerSec
		}
		if r := step(ok, false, 0); r < 0 {
			c.min++
			resetFrom(5)
			continue
		} else if r == 0 {
			continue
		}
		return c, usec, nil
	}
	return c, 0, errLoop
}

// match mirrors find_matching_component: the earliest value >= val allowed
// by the chain. ok is false when there is none; changed reports v != val.
// A nil chain allows anything.
func (s *Spec) match(ck *clock, ch chain, endOfMonth bool, c *tm, val int) (v int, changed, ok bool) {
	if ch == nil {
		return val, false, true
	}
	d, found := 0, false
	for _, x := range ch {
		start, stop := x.start, x.stop
		if endOfMonth {
			start = s.endOfMonthDay(ck, c, x.start)
			stop = s.endOfMonthDay(ck, c, x.stop)
			if stop > 0 {
				start, stop = stop, start
			}
		}
		if start >= val {
			if !found || start < d {
				d, found = start, true
			}
		} else if x.repeat > 0 {
			k := start + x.repeat*((val-start+x.repeat-1)/x.repeat)
			if (!found || k < d) && (stop < 0 || k <= stop) {
				d, found = k, true
			}
		}
	}
	if !found {
		return val, false, false
	}
	return d, d != val, true
}

// endOfMonthDay mirrors find_end_of_month: the day of c's month that is
// `back` days before its end (1 = the last day), or -1.
func (s *Spec) endOfMonthDay(ck *clock, c *tm, back int) int {
	t := *c
	t.mon++
	t.mday = 1 - back
	if r, ok := ck.mktime(&t); !ok || r < 0 || t.mon != c.mon {
		return -1
	}
	return t.mday
}

// within mirrors systemd 252's tm_within_bounds: 1 when c names an
// existing time as it is; 0 when mktime normalized it to a later time (c
// becomes that time, with the field below the first changed one reset, so
// "Feb 30" continues at Mar 1, not Mar 2); -1 when c is past 2199, invalid,
// or would move backwards.
//
// The normalized copy carries no DST flag (tm_isdst = -1): that is what
// makes the results agree with systemd-analyze 252 across DST gaps.
func (s *Spec) within(ck *clock, c *tm) int {
	if c.year > maxYear {
		return -1
	}
	t := *c
	if r, ok := ck.mktime(&t); !ok || r < 0 {
		return -1
	}
	var cmp int
	switch {
	case t.year != c.year:
		cmp = sign(t.year - c.year)
		t.mon = 0
	case t.mon != c.mon:
		cmp = sign(t.mon - c.mon)
		t.mday = 1
	case t.mday != c.mday:
		cmp = sign(t.mday - c.mday)
		t.hour = 0
	case t.hour != c.hour:
		cmp = sign(t.hour - c.hour)
		t.min = 0
	case t.min != c.min:
		cmp = sign(t.min - c.min)
		t.sec = 0
	default:
		cmp = sign(t.sec - c.sec)
	}
	switch {
	case cmp < 0:
		return -1 // refuse to go backwards
	case cmp > 0:
		t.isdst = -1
		*c = t
		return 0
	}
	return 1
}

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

func (s *Spec) matchesWeekday(ck *clock, c tm) bool {
	if s.weekdays < 0 || s.weekdays >= allWeekdays {
		return true
	}
	if r, ok := ck.mktime(&c); !ok || r < 0 {
		return false
	}
	return s.weekdays&(1<<weekday(c.year, c.mon, c.mday)) != 0
}
