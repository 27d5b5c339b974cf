package calendar

import "time"

// tm is C's struct tm, as systemd's calendar code uses it: fields may be out
// of range until mktime normalizes them. year is the full year (tm_year+1900)
// and mon is 0-based.
type tm struct {
	year, mon, mday, hour, min, sec int
	isdst                           int // -1: let mktime decide; 0 or 1
}

// clock converts between broken-down time and seconds since the epoch in
// one zone, like glibc's mktime/localtime (or timegm/gmtime when utc is set).
//
// Where it matters — wall times that fall into a DST gap or occur twice —
// mktime's answer depends on a guess carried over from its previous call
// (glibc's static localtime_offset); off is that guess. systemd evaluates
// zone-suffixed specs in a freshly forked child whose guess comes from a
// parent running in UTC, so a new clock starts at 0.
type clock struct {
	utc bool
	loc *time.Location
	off int64
}

// zoneAt returns the UTC offset in seconds and the DST flag at t.
func (c *clock) zoneAt(t int64) (offset int64, isdst bool) {
	if c.utc {
		return 0, false
	}
	u := time.Unix(t, 0).In(c.loc)
	_, o := u.Zone()
	return int64(o), u.IsDST()
}

// nextOffsetChange returns the first second after t, within two days, at
// which the zone's UTC offset or DST flag changes.
func (c *clock) nextOffsetChange(t int64) (int64, bool) {
	if c.utc {
		return 0, false
	}
	off0, dst0 := c.zoneAt(t)
	same := func(x int64) bool {
		off, dst := c.zoneAt(x)
		return off == off0 && dst == dst0
	}
	for lo := t; lo < t+2*86400; lo += 3600 {
		hi := lo + 3600
		if same(hi) {
			continue
		}
		for hi-lo > 1 { // same(lo) && !same(hi)
			mid := lo + (hi-lo)/2
			if same(mid) {
				lo = mid
			} else {
				hi = mid
			}
		}
		return hi, true
	}
	return 0, false
}

// localtime is localtime_r (gmtime_r when utc).
func (c *clock) localtime(t int64) tm {
	off, dst := c.zoneAt(t)
	w := t + off
	days := floorDiv(w, 86400)
	secs := w - days*86400
	y, m, d := civilFromDays(days)
	r := tm{
		year: int(y), mon: int(m) - 1, mday: int(d),
		hour: int(secs / 3600), min: int(secs / 60 % 60), sec: int(secs % 60),
	}
	if dst {
		r.isdst = 1
	}
	return r
}

// mktime is glibc's mktime (timegm when utc): it interprets x in the zone,
// normalizes x in place and returns seconds since the epoch. ok is false
// where glibc returns -1 (it cannot find a matching time).
//
// The search follows glibc's __mktime_internal: probe with the previous
// offset, correct by the error, and on oscillation inside a spring-forward
// gap settle on one side by the same rule; a requested tm_isdst that does
// not match borrows the offset of the nearest time that does (glibc 2.36).
func (c *clock) mktime(x *tm) (int64, bool) {
	mon := int64(x.mon)
	rem := mon % 12
	neg := int64(0)
	if rem < 0 {
		neg = 1
	}
	year := int64(x.year) + mon/12 - neg
	yday := daysBeforeMonth(year, rem+12*neg) + int64(x.mday) - 1

	secReq := int64(x.sec)
	sec := min(max(secReq, 0), 59) // every minute is taken to have 60 seconds
	wall := (daysFromCivil(year, 1, 1)+yday)*86400 + int64(x.hour)*3600 + int64(x.min)*60 + sec

	if c.utc {
		t := wall + secReq - sec
		*x = c.localtime(t)
		return t, true
	}

	t0 := wall + c.off
	t, t1, t2 := t0, t0, t0
	dst2 := false
	probes := 6
	var isdst bool
	for {
		var off int64
		off, isdst = c.zoneAt(t)
		dt := wall - (t + off)
		if dt == 0 {
			break
		}
		if t == t1 && t != t2 {
			// Oscillating: the wall time is in a gap.
			var settle bool
			if x.isdst < 0 {
				settle = b2i(dst2) <= b2i(isdst)
			} else {
				settle = (x.isdst != 0) != isdst
			}
			if settle {
				goto found
			}
		}
		probes--
		if probes == 0 {
			return -1, false
		}
		t1, t2, t = t2, t, t+dt
		dst2 = isdst
	}
	if x.isdst >= 0 && (x.isdst != 0) != isdst {
		// Wrong DST flag: extrapolate from the nearest time with the
		// requested one, probing one week apart up to ~7 years away, and
		// failing that assume a one-hour DST difference.
		const stride, bound = 601200, 457243200/2 + 601200
		for delta := int64(stride); delta < bound; delta += stride {
			for _, dir := range [2]int64{-1, 1} {
				ot := t + delta*dir
				ooff, odst := c.zoneAt(ot)
				if (x.isdst != 0) == odst {
					t = ot + (wall - (ot + ooff))
					goto found
				}
			}
		}
		t += 3600 * int64(b2i(x.isdst == 0)-b2i(!isdst))
	}
found:
	c.off = t - wall
	t += secReq - sec
	*x = c.localtime(t)
	return t, true
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func isLeap(y int64) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }

var cumDays = [2][13]int64{
	{0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365},
	{0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335, 366},
}

// daysBeforeMonth returns the days in year before month m (0-based, 0..11).
func daysBeforeMonth(year, m int64) int64 {
	return cumDays[b2i(isLeap(year))][m]
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// daysFromCivil returns the days since 1970-01-01 of a proleptic Gregorian
// date (month 1..12).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := floorDiv(y, 400)
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// civilFromDays is the inverse of daysFromCivil.
func civilFromDays(z int64) (y, m, d int64) {
	z += 719468
	era := floorDiv(z, 146097)
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	if mp < 10 {
		m = mp + 3
	} else {
		m = mp - 9
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

// weekday returns 0 for Monday ... 6 for Sunday.
func weekday(year, mon, mday int) int {
	d := daysFromCivil(int64(year), int64(mon)+1, int64(mday))
	// 1970-01-01 was a Thursday (3).
	return int((d%7 + 7 + 3) % 7)
}
