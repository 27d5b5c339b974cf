package sdbus

import (
	"strconv"

	godbus "github.com/godbus/dbus/v5"
)

// PropertyText renders a property value as observed.Manager.Properties
// holds it: integers in decimal (microseconds for *USec, UINT64_MAX for
// "infinity"), strings as they are, booleans as "true"/"false".
func PropertyText(v godbus.Variant) string {
	switch x := v.Value().(type) {
	case string:
		return x
	case uint64:
		return strconv.FormatUint(x, 10)
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case int64:
		return strconv.FormatInt(x, 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case bool:
		return strconv.FormatBool(x)
	default:
		return v.String()
	}
}

// UnitNameFromPath returns the unit name of a systemd unit object path
// ("/org/freedesktop/systemd1/unit/worker_2eservice" → "worker.service"),
// and false for other paths.
func UnitNameFromPath(p godbus.ObjectPath) (string, bool) {
	s := string(p)
	if len(s) <= len(unitPathPrefix) || s[:len(unitPathPrefix)] != unitPathPrefix {
		return "", false
	}
	esc := s[len(unitPathPrefix):]
	out := make([]byte, 0, len(esc))
	for i := 0; i < len(esc); i++ {
		if esc[i] == '_' && i+2 < len(esc) {
			if b, err := strconv.ParseUint(esc[i+1:i+3], 16, 8); err == nil {
				out = append(out, byte(b))
				i += 2
				continue
			}
		}
		out = append(out, esc[i])
	}
	return string(out), true
}

// PropertiesChanged is the member name of the signals WatchUnitSignals
// delivers (godbus.Signal.Name).
const PropertiesChanged = propsChanged
