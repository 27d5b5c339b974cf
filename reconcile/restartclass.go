package reconcile

import (
	"bytes"
	"slices"
	"strings"
)

// Change classification of a rewritten unit file: does the running process
// need a restart, or does systemd apply the change on daemon-reload alone?
//
// systemd re-reads every unit file on daemon-reload and applies to the live
// unit object what only the manager consults: its description, its
// dependencies and ordering, its restart policy and start limit (they act
// at the next exit or start), the stop timeout (at the next stop) and the
// [Install] section (enablement, read by enable/disable). Everything that
// shapes the process itself (command, environment, user, working
// directory, limits, sandboxing, the service type and its notify protocol,
// the watchdog) takes effect only when the process starts again, so a
// change to it is a restart. An unknown key is a restart: restarting too
// often is safer than running a process that does not match its file.
//
// The e2e test TestReloadOnlyChangeKeepsMainPID checks each reload-only key
// against a real systemd (the new value shows after daemon-reload, the
// main PID is unchanged).

// reloadOnly lists, per section, the keys systemd applies on daemon-reload
// alone.
var reloadOnly = map[string]map[string]bool{
	"Unit": set(
		"Description", "Documentation",
		"After", "Before", "Wants", "Requires", "Requisite", "BindsTo", "PartOf", "Upholds", "Conflicts",
		"OnFailure", "OnSuccess", "OnFailureJobMode",
		"StartLimitIntervalSec", "StartLimitBurst", "StartLimitAction",
		"JobTimeoutSec", "JobRunningTimeoutSec", "JobTimeoutAction",
		"StopWhenUnneeded", "RefuseManualStart", "RefuseManualStop", "AllowIsolate",
	),
	"Service": set(
		"Restart", "RestartSec", "RestartPreventExitStatus", "RestartForceExitStatus", "SuccessExitStatus",
		"TimeoutStopSec", "TimeoutAbortSec",
	),
	"Install": nil, // every key: read only by enable/disable
}

func set(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// reloadOnlyKey reports whether a change to key in section needs no
// restart.
func reloadOnlyKey(section, key string) bool {
	if strings.HasPrefix(key, "X-") {
		return true // systemd ignores X- keys (resil's own markers are X-Resil-*)
	}
	keys, ok := reloadOnly[section]
	if !ok {
		return false
	}
	return keys == nil || keys[key]
}

// unitKey is one setting of a unit file: section and key.
type unitKey struct{ section, key string }

func (k unitKey) String() string { return k.key }

// parseUnitSettings returns the values of every setting of a unit file,
// in file order per key (comments and blank lines dropped, continuation
// lines joined). It never fails: what it cannot parse is kept as a value
// of the key "" so that any change to it is a restart.
func parseUnitSettings(data []byte) map[unitKey][]string {
	out := map[unitKey][]string{}
	eachUnitSetting(data, "", func(k unitKey, v string) bool {
		out[k] = append(out[k], v)
		return true
	})
	return out
}

// eachUnitSetting calls f with each setting of a unit file in file order,
// as parseUnitSettings reads them (a line that is no setting: key ""),
// until f returns false; with only set, just those of that section. It
// builds nothing but what it hands f: the planner asks every pass for the
// [Install] section of every owned unit file (installLinks; 1000 files: a
// map of all their settings was 2/3 of a converged plan's time).
func eachUnitSetting(data []byte, only string, f func(k unitKey, v string) bool) {
	section, skip := "", only != ""
	var pending []byte
	rest := data
	for more := true; more; {
		var line []byte
		line, rest, more = bytes.Cut(rest, []byte("\n"))
		if pending != nil {
			line = append(pending, line...)
			pending = nil
		}
		t := bytes.TrimSpace(line)
		comment := bytes.HasPrefix(t, []byte("#")) || bytes.HasPrefix(t, []byte(";"))
		if bytes.HasSuffix(t, []byte("\\")) && !comment {
			pending = append(bytes.Clone(t[:len(t)-1]), ' ')
			continue
		}
		switch {
		case len(t) == 0 || comment:
			continue
		case t[0] == '[' && t[len(t)-1] == ']':
			name := t[1 : len(t)-1]
			if skip = only != "" && string(name) != only; !skip {
				section = string(name)
			}
			continue
		case skip:
			continue
		}
		k, v, ok := bytes.Cut(t, []byte("="))
		if !ok {
			if !f(unitKey{section, ""}, string(t)) {
				return
			}
			continue
		}
		if !f(unitKey{section, string(bytes.TrimSpace(k))}, string(bytes.TrimSpace(v))) {
			return
		}
	}
	if pending != nil && !skip {
		f(unitKey{section, ""}, string(pending))
	}
}

// UnitChange is how a rewritten unit file affects its running process.
type UnitChange struct {
	// Restart: a setting that shapes the process changed.
	Restart bool
	// Keys are the changed settings that decided it: the restart keys
	// when Restart, else the reload-only keys; sorted, deduplicated.
	Keys []string
	// Why, for a restart, says why the keys need one where that depends
	// on the unit's state (timers: timerChange).
	Why string
	// StopFirst: the restart is a stop before the files are written (and
	// daemon-reload reschedules the unit) and a start after.
	StopFirst bool
}

// ClassifyUnitChange compares the old and new contents of one unit file
// (or drop-in). Equal contents, or contents differing only in comments,
// give a zero UnitChange.
func ClassifyUnitChange(old, cur []byte) UnitChange {
	if bytes.Equal(old, cur) {
		return UnitChange{}
	}
	a, b := parseUnitSettings(old), parseUnitSettings(cur)
	restart, reload := map[string]bool{}, map[string]bool{}
	visit := func(k unitKey) {
		if slices.Equal(a[k], b[k]) {
			return
		}
		name := k.key
		if strings.HasPrefix(name, "X-Resil-") {
			return // resil's own bookkeeping (hash, source): not a setting
		}
		if name == "" {
			name = "[" + k.section + "] line"
		}
		if reloadOnlyKey(k.section, k.key) {
			reload[name] = true
		} else {
			restart[name] = true
		}
	}
	for k := range a {
		visit(k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			visit(k)
		}
	}
	switch {
	case len(restart) > 0:
		return UnitChange{Restart: true, Keys: sortedKeys(restart)}
	case len(reload) > 0:
		return UnitChange{Keys: sortedKeys(reload)}
	}
	return UnitChange{}
}

// Reason is the diff wording of a change: "reload only: RestartSec
// changed" or "unit file changed: ExecStart, Environment".
func (c UnitChange) Reason() string {
	switch {
	case c.Restart:
		return "unit file changed: " + strings.Join(c.Keys, ", ")
	case len(c.Keys) > 0:
		return "reload only: " + strings.Join(c.Keys, ", ") + " changed"
	}
	return "unit file changed: comments only"
}

// ReloadOnlyKeys returns, per section, the keys a change of which needs
// no restart ("*" for every key of the section), sorted; for tests that
// check the table against a real systemd.
func ReloadOnlyKeys() map[string][]string {
	out := map[string][]string{}
	for section, keys := range reloadOnly {
		if keys == nil {
			out[section] = []string{"*"}
			continue
		}
		out[section] = sortedKeys(keys)
	}
	return out
}
