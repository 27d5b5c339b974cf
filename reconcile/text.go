package reconcile

import "time"

// OrDash returns s, or "-" when s is empty (an unknown state in messages
// and tables).
func OrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// LayoutMilli is RFC 3339 UTC with milliseconds, the layout of the
// timestamps in plan findings.
const LayoutMilli = "2006-01-02T15:04:05.000Z"

// FormatUSec renders µs since the epoch (systemd's timestamps) in UTC
// with layout; "-" for 0 and USEC_INFINITY (not set).
func FormatUSec(v uint64, layout string) string {
	if v == 0 || v == ^uint64(0) {
		return "-"
	}
	return time.UnixMicro(int64(v)).UTC().Format(layout)
}
