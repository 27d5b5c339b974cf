package desired

import "resil.dev/resil/desired/calendar"

// The calendar package parses OnCalendar expressions as systemd 252 does;
// validation uses it for Timer schedules.
func init() {
	ParseCalendar = func(s string) error {
		_, err := calendar.Parse(s)
		return err
	}
}
