package systemd

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/actuators"
	"resil.dev/resil/internal/sdbus"
)

type propKind int

const (
	propUSec propKind = iota + 1
	propBool
	propString
	propReadOnly
)

// managerProps are the manager properties OpSetManager knows, with how to
// set them. Writable ones were checked with busctl introspect on systemd
// 252; WatchdogDevice is read-only ("const") there.
var managerProps = map[string]propKind{
	"RuntimeWatchdogUSec":        propUSec,
	"RebootWatchdogUSec":         propUSec,
	"KExecWatchdogUSec":          propUSec,
	"RuntimeWatchdogPreUSec":     propUSec,
	"RuntimeWatchdogPreGovernor": propString,
	"ServiceWatchdogs":           propBool,
	"WatchdogDevice":             propReadOnly,
}

// setManager sets manager properties at runtime, each only when systemd
// reports another value, and reads each back.
//
// Note (measured on systemd 252): a runtime value is an override that wins
// over system.conf.d across daemon-reload and daemon-reexec, until it is set
// to 0 or infinity, which drops the override and restores the file's value.
// daemon-reload alone re-reads RuntimeWatchdogSec and RebootWatchdogSec from
// system.conf.d; WatchdogDevice needs daemon-reexec.
func (a *Applier) setManager(ctx context.Context, s actuators.Step) (actuators.Result, error) {
	if len(s.Props) == 0 {
		return actuators.Unchanged, fmt.Errorf("set-manager: %w: no properties", ErrInvalidStep)
	}
	want := make(map[string]godbus.Variant, len(s.Props))
	for _, name := range sortedKeys(s.Props) {
		kind, ok := managerProps[name]
		if !ok {
			return actuators.Unchanged, fmt.Errorf("set-manager: %w: unknown property %s", ErrInvalidStep, name)
		}
		v, err := parseProp(kind, s.Props[name])
		if err != nil {
			return actuators.Unchanged, fmt.Errorf("set-manager %s: %w: %w", name, ErrInvalidStep, err)
		}
		want[name] = v
	}

	res := actuators.Unchanged
	reexec := &ReexecError{Props: map[string]string{}, Current: map[string]string{}}
	for _, name := range sortedKeys(s.Props) {
		a.count("Get " + name)
		cur, err := a.c.GetManagerPropertyContext(ctx, name)
		if err != nil {
			return res, fmt.Errorf("set-manager: %w", err)
		}
		if sameValue(cur, want[name]) {
			continue
		}
		if managerProps[name] == propReadOnly {
			reexec.Props[name], reexec.Current[name] = s.Props[name], sdbus.PropertyText(cur)
			continue
		}
		a.count("Set " + name)
		if err := a.c.SetManagerProperty(ctx, name, want[name]); err != nil {
			return res, fmt.Errorf("set-manager: %w", err)
		}
		res = actuators.Changed
		a.count("Get " + name)
		after, err := a.c.GetManagerPropertyContext(ctx, name)
		if err != nil {
			return res, fmt.Errorf("set-manager: %w", err)
		}
		if !sameValue(after, want[name]) {
			return res, fmt.Errorf("set-manager %s=%s: systemd reports %s: %w", name, s.Props[name], sdbus.PropertyText(after), ErrNotApplied)
		}
	}
	if len(reexec.Props) > 0 {
		return res, reexec
	}
	return res, nil
}

func parseProp(kind propKind, s string) (godbus.Variant, error) {
	switch kind {
	case propUSec:
		u, err := ParseUSec(s)
		return godbus.MakeVariant(u), err
	case propBool:
		b, err := strconv.ParseBool(s)
		return godbus.MakeVariant(b), err
	default:
		return godbus.MakeVariant(s), nil
	}
}

// ParseUSec parses a manager time value: microseconds in decimal (as
// observed.Manager.Properties holds them), "infinity", or a duration
// ("30s", "500ms", "10min", Go syntax plus systemd's "min").
func ParseUSec(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "infinity" {
		return math.MaxUint64, nil
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return u, nil
	}
	d, err := time.ParseDuration(strings.ReplaceAll(s, "min", "m"))
	if err != nil {
		return 0, fmt.Errorf("time value %q: want microseconds, infinity or a duration", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("time value %q is negative", s)
	}
	return uint64(d / time.Microsecond), nil
}

func sameValue(a, b godbus.Variant) bool {
	return a.Signature() == b.Signature() && a.Value() == b.Value()
}
