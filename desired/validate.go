package desired

import (
	"encoding/json"
	"fmt"
	"math"
	pathpkg "path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits of what one unit can carry, as the kernel and systemd accept it.
const (
	// MaxArgStrlen is the kernel's MAX_ARG_STRLEN: execve refuses (E2BIG) an
	// argument or environment string of this many bytes or more (the limit
	// counts the terminating NUL). An argument may be at most MaxArgStrlen-1 bytes.
	MaxArgStrlen = 32 * 4096
	// LongLineMax is systemd's LONG_LINE_MAX: the longest unit-file line it reads.
	LongLineMax = 1 << 20
	// MaxUnitLine is the longest line a rendered unit may have: half of
	// LongLineMax, so quoting and the directive name never get near it.
	MaxUnitLine = LongLineMax / 2
	// ExecArgMax is what one execve may pass in all (argument and
	// environment strings with their NULs, plus one pointer each): a quarter
	// of the stack limit, 2 MiB with the default 8 MiB (getconf ARG_MAX).
	ExecArgMax = 2 << 20
	// ExecReserve is kept free of ExecArgMax for what the manifest does not
	// say: the variables systemd or the process backend add (PATH,
	// INVOCATION_ID, NOTIFY_SOCKET, …) and environment files.
	ExecReserve = 64 << 10
	// PathMax is PATH_MAX: a path of this many bytes or more (NUL included)
	// cannot be opened.
	PathMax = 4096
)

// ParseCalendar validates one OnCalendar expression. It is a variable so the
// calendar package can be wired in without an import cycle in tests.
var ParseCalendar = func(expr string) error { return nil }

var (
	envKeyRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	userRE      = regexp.MustCompile(`^([a-z_][a-z0-9_-]{0,30}|[0-9]{1,10})$`) // systemd warns about names longer than 31
	unitRefRE   = regexp.MustCompile(`^[A-Za-z0-9:_.-][A-Za-z0-9:_.@-]*\.(service|target|socket|mount|timer|path|device|slice|scope|swap|automount)$`)
	sizeRE      = regexp.MustCompile(`^([0-9]+[KMGT]?|infinity)$`)
	logSizeRE   = regexp.MustCompile(`^[0-9]+[KMG]?$`)
	cpuQuotaRE  = regexp.MustCompile(`^[0-9]{1,5}%$`)
	stateDirRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)
	directiveRE = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)
	labelKeyRE  = regexp.MustCompile(`^([A-Za-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$`)
	// The escape-hatch sections each kind renders. A Timer that starts a
	// Service object renders no [Service] section of its own.
	serviceSections  = map[string]bool{"Unit": true, "Service": true, "Install": true}
	timerSections    = map[string]bool{"Unit": true, "Timer": true, "Install": true, "Service": true}
	timerRefSections = map[string]bool{"Unit": true, "Timer": true, "Install": true}
	// renderedDirectives are the directives resil itself may write into a
	// unit: an empty passthrough value of one resets what the manifest's
	// fields set (User= empty would run as root). Elsewhere an empty value
	// has a meaning of its own (CapabilityBoundingSet= empty: no
	// capabilities) and passes.
	renderedDirectives = map[string]map[string]bool{
		"Unit": {"Description": true, "After": true, "Requires": true, "Wants": true, "StartLimitIntervalSec": true, "StartLimitBurst": true},
		"Service": {"Type": true, "NotifyAccess": true, "WatchdogSec": true, "ExecStartPre": true, "ExecStart": true, "ExecStartPost": true,
			"Restart": true, "RestartSec": true, "User": true, "Group": true, "WorkingDirectory": true, "Environment": true, "EnvironmentFile": true,
			"StandardOutput": true, "StandardError": true, "MemoryMax": true, "CPUQuota": true, "TasksMax": true, "StateDirectory": true,
			"TimeoutStartSec": true, "TimeoutStopSec": true},
		"Timer": {"OnCalendar": true, "OnBootSec": true, "OnUnitActiveSec": true, "Persistent": true, "AccuracySec": true,
			"RandomizedDelaySec": true, "Unit": true},
		"Install": {"WantedBy": true},
	}
	escapeHatchHelp = map[string]string{
		"Service": "Unit, Service, Install",
		"Timer":   "Unit, Timer, Install and, for an inline command, Service",
	}
)

// sortedKeys returns a map's keys in order, so problems are reported in a
// stable order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// validator collects problems with their field paths.
type validator struct {
	probs []positioned
	// doc is the object's document as decoded from JSON (nil when the
	// object was built in code): what a zero Go value cannot tell, such as
	// whether a field was given as 0 or left out.
	doc map[string]any
}

// explicitZero reports whether the document sets the number at p to 0 (a
// field left out, or null, is not).
func (v *validator) explicitZero(p path) bool {
	var cur any = v.doc
	for _, seg := range p {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[seg]; !ok {
			return false
		}
	}
	n, ok := cur.(float64)
	return ok && n == 0
}

func (v *validator) add(p path, format string, args ...any) {
	v.probs = append(v.probs, positioned{p, fmt.Sprintf(format, args...)})
}

// validateObject runs the semantic checks of one decoded object.
func validateObject(o *Object) []positioned {
	v := &validator{}
	if o.document != nil {
		// Decoded before: it is valid JSON.
		_ = json.Unmarshal(o.document, &v.doc)
	}
	m := path{"metadata"}
	for _, k := range sortedKeys(o.Metadata.Labels) {
		v.label(m.key("labels").key(k), k, o.Metadata.Labels[k])
	}
	for _, k := range sortedKeys(o.Metadata.Annotations) {
		v.text(m.key("annotations").key(k), o.Metadata.Annotations[k])
	}
	switch o.Kind {
	case KindService:
		v.service(path{"spec"}, o.Service)
	case KindTimer:
		v.timer(path{"spec"}, o.Timer)
	case KindWatchdog:
		v.watchdog(path{"spec"}, o.Watchdog)
	}
	return v.probs
}

func (v *validator) label(p path, k, val string) {
	if !validLabelKey(k) {
		v.add(p, "invalid label key %q", k)
	}
	v.text(p, val)
}

// validLabelKey reports whether k is a label key: an optional DNS-like
// prefix and '/', then alphanumerics with '-', '_' and '.' inside; at most
// 253 bytes. Manifest labels, spec.hosts.labels and the host labels file
// share it.
func validLabelKey(k string) bool {
	return labelKeyRE.MatchString(k) && len(k) <= 253
}

// text refuses control characters: a newline would inject a unit-file line.
// C1 controls (U+0080–U+009F, e.g. NEL U+0085) and the Unicode line and
// paragraph separators are refused too: editors, terminals and log viewers
// break lines on them, so a unit file or a log would not show what it holds.
func (v *validator) text(p path, s string) bool {
	if !utf8.ValidString(s) {
		v.add(p, "not valid UTF-8")
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			v.add(p, "control character %q not allowed (it could inject a line into a unit file)", r)
			return false
		}
		if isLineBreaking(r) {
			v.add(p, "character %q not allowed (a C1 control or Unicode line separator: editors, terminals and logs break the line on it)", r)
			return false
		}
	}
	return true
}

// isLineBreaking reports the non-C0 characters text refuses.
func isLineBreaking(r rune) bool {
	return (r >= 0x80 && r <= 0x9f) || r == '\u2028' || r == '\u2029'
}

// unitLine refuses a directive whose rendered line would be longer than
// MaxUnitLine (systemd refuses a unit with a line over LongLineMax).
func (v *validator) unitLine(p path, directive, value string) bool {
	if n := len(directive) + 1 + len(value); n > MaxUnitLine {
		v.add(p, "renders a %d-byte %s= line; a unit-file line may have at most %d bytes (systemd reads lines up to %d)", n, directive, MaxUnitLine, LongLineMax)
		return false
	}
	return true
}

// argLen refuses one exec string (an argument, or an environment entry
// KEY=VALUE) that the kernel would refuse with "argument list too long".
func (v *validator) argLen(p path, what string, n int) bool {
	if n >= MaxArgStrlen {
		v.add(p, "%s is %d bytes; the kernel refuses one of %d bytes or more (MAX_ARG_STRLEN, %d including the terminating NUL)", what, n, MaxArgStrlen, MaxArgStrlen)
		return false
	}
	return true
}

// execSize is what execve counts of argv and env: every string with its
// NUL and one pointer. extra are raw environment entries (KEY=VALUE …).
func execSize(argv []string, env map[string]string, extra ...string) int {
	n := 0
	for _, a := range argv {
		n += len(a) + 1 + 8
	}
	for k, val := range env {
		n += len(k) + 1 + len(val) + 1 + 8
	}
	for _, e := range extra {
		n += len(e) + 1 + 8
	}
	return n
}

// execTotal refuses a command whose argv and environment together exceed
// what one exec may pass. It reports at the environment when there is one
// (each part alone is capped by the line and argument limits).
func (v *validator) execTotal(p path, argv []string, env map[string]string, extra ...string) {
	if n := execSize(argv, env, extra...); n > ExecArgMax-ExecReserve {
		v.add(p, "command line and environment come to %d bytes (strings, NULs and pointers); an exec may pass %d (ARG_MAX with the default 8 MiB stack, %d kept for what systemd adds)", n, ExecArgMax-ExecReserve, ExecReserve)
	}
}

// plain is text for directives without quoting: no control chars, no
// backslash (a trailing one continues the line), no '%' specifier.
func (v *validator) plain(p path, s string) bool {
	if !v.text(p, s) {
		return false
	}
	if strings.ContainsAny(s, `\%`) {
		v.add(p, `'\' and '%%' are not allowed in %q (line continuation / specifier)`, s)
		return false
	}
	// systemd strips leading and trailing whitespace from a value, so the
	// unit would not say what the manifest says.
	if s != strings.TrimSpace(s) {
		v.add(p, "must not begin or end with whitespace, got %q", s)
		return false
	}
	return true
}

func (v *validator) absPath(p path, s string) bool {
	if s == "" {
		v.add(p, "must not be empty")
		return false
	}
	if len(s) >= PathMax {
		v.add(p, "path is %d bytes; a path may have at most %d (PATH_MAX, %d including the terminating NUL)", len(s), PathMax-1, PathMax)
		return false
	}
	if !v.plain(p, s) {
		return false
	}
	if !strings.HasPrefix(s, "/") {
		v.add(p, "must be an absolute path, got %q", s)
		return false
	}
	if strings.IndexFunc(s, unicode.IsSpace) >= 0 {
		v.add(p, "must not contain whitespace, got %q", s)
		return false
	}
	if filepath.Clean(s) != s {
		v.add(p, "must be a clean path (no '..', '//' or trailing '/'), got %q; want %q", s, filepath.Clean(s))
		return false
	}
	return true
}

// command checks one argv; it reports whether the argv is valid.
func (v *validator) command(p path, argv []string) bool {
	if len(argv) == 0 {
		v.add(p, "required: the program and its arguments, e.g. [\"/usr/bin/env\", \"true\"]")
		return false
	}
	ok := v.absPath(p.index(0), argv[0])
	// systemd runs the path as written but expands "$$" in the arguments;
	// a '$' in the path would make the two differ.
	if strings.Contains(argv[0], "$") {
		v.add(p.index(0), "'$' is not allowed in the program path %q", argv[0])
		ok = false
	}
	for i, a := range argv[1:] {
		if !v.argLen(p.index(i+1), "argument", len(a)) || !v.text(p.index(i+1), a) {
			ok = false
		}
	}
	return ok
}

// execCommand checks an argv that a unit runs as directive (ExecStart=,
// ExecStartPre=): the argv itself, then the rendered line and the exec size
// of the argv as wrapped (lock, pre-start loop) with its environment.
// The exec size is reported at envPath when there is an environment.
func (v *validator) execCommand(p path, directive string, argv, wrapped []string, envPath path, env map[string]string, extraEnv []string) {
	if !v.command(p, argv) {
		return
	}
	if !v.unitLine(p, directive, CommandLine(wrapped)) {
		return
	}
	q := p
	if len(env) > 0 || len(extraEnv) > 0 {
		q = envPath
	}
	v.execTotal(q, wrapped, env, extraEnv...)
}

func (v *validator) duration(p path, d Duration, min, max time.Duration) {
	if d == "" {
		return
	}
	x, err := time.ParseDuration(string(d))
	if err != nil {
		v.add(p, "invalid duration %q (use e.g. 500ms, 5s, 1m30s)", string(d))
		return
	}
	if x < min || x > max {
		v.add(p, "duration %s out of range [%s, %s]", d, min, max)
	}
}

func (v *validator) units(p path, directive string, list []string) {
	ok := true
	for i, u := range list {
		switch {
		case !unitRefRE.MatchString(u) || len(u) > 255:
			v.add(p.index(i), "invalid unit name %q (want e.g. network-online.target)", u)
			ok = false
		case strings.Contains(u, "@.") || strings.Count(u, "@") > 1:
			// A template (foo@.service) is not a unit systemd can start
			// or order against: it needs an instance (foo@x.service).
			v.add(p.index(i), "%q is a template unit: name an instance (e.g. %s)", u, strings.Replace(u, "@.", "@instance.", 1))
			ok = false
		}
	}
	if ok {
		v.unitLine(p, directive, joinUnits(list))
	}
}

func (v *validator) user(p path, s string) {
	if s != "" && !userRE.MatchString(s) {
		v.add(p, "invalid user or group name %q", s)
		return
	}
	// Numeric IDs: systemd refuses (uid_t)-1 and the 16-bit -1, 65535, as
	// a fatal unit error.
	if n, err := strconv.ParseUint(s, 10, 64); err == nil && (n >= math.MaxUint32 || n == 65535) {
		v.add(p, "invalid numeric user or group ID %s (systemd refuses 65535 and 4294967295 and above)", s)
	}
}

func (v *validator) env(p path, env map[string]string) {
	for _, k := range sortedKeys(env) {
		val := env[k]
		keyOK := envKeyRE.MatchString(k)
		if !keyOK {
			v.add(p.key(k), "invalid variable name %q", k)
		}
		if !v.argLen(p.key(k), "the entry KEY=VALUE", len(k)+1+len(val)) {
			continue
		}
		if v.text(p.key(k), val) && keyOK {
			v.unitLine(p.key(k), "Environment", envAssignment(k, val))
		}
	}
}

// escapeEnv returns the Environment= assignments of an escape hatch's
// Service section, which add to the environment of every command.
func escapeEnv(m map[string]map[string]string) []string {
	if e, ok := m["Service"]["Environment"]; ok {
		return []string{e}
	}
	return nil
}

func (v *validator) hosts(p path, h *HostSelector) {
	if h == nil {
		return
	}
	for i, g := range h.Names {
		if _, err := pathpkg.Match(g, ""); err != nil || g == "" {
			v.add(p.key("names").index(i), "invalid hostname glob %q", g)
		}
	}
	for _, k := range sortedKeys(h.Labels) {
		v.label(p.key("labels").key(k), k, h.Labels[k])
	}
}

// escapeHatch checks the systemd: passthrough. In [Install], Also= (it
// enables other units, which resil does not own) and DefaultInstance= (for
// templates, which resil does not write) are refused, and Alias= only with
// takeOver: an alias is another name for the unit, linked in the unit
// directory by the enable, which would shadow a vendor unit of that name
// or replace an admin's unit or mask there (the enable is forced).
//
// What systemd would ignore is refused too, since the unit would then run
// with less than the manifest asks for: a directive systemd does not know
// in that section (systemdDirectives), and a value the grammar of
// directives.go says systemd cannot parse.
func (v *validator) escapeHatch(p path, m map[string]map[string]string, sections map[string]bool, kind string, takeOver bool) {
	for _, sec := range sortedKeys(m) {
		kv := m[sec]
		if !sections[sec] {
			if timerSections[sec] && kind == "Timer" {
				v.add(p.key(sec), "section %q only for an inline command; set it on the Service instead", sec)
			} else {
				v.add(p.key(sec), "unknown section %q for a %s (use %s)", sec, kind, escapeHatchHelp[kind])
			}
			continue
		}
		for _, k := range sortedKeys(kv) {
			val := kv[k]
			q := p.key(sec).key(k)
			if !directiveRE.MatchString(k) {
				v.add(q, "invalid directive name %q", k)
				continue
			}
			if strings.HasPrefix(k, "X") {
				v.add(q, "directive %q is reserved", k)
				continue
			}
			if why := unknownDirective(sec, k, sections); why != "" {
				v.add(q, "%s", why)
				continue
			}
			if sec == "Install" {
				switch k {
				case "Also":
					v.add(q, "not allowed: Also= enables other units, which resil does not own (give each its own manifest)")
					continue
				case "DefaultInstance":
					v.add(q, "not allowed: DefaultInstance= is for template units, which resil does not write")
					continue
				case "Alias":
					if !takeOver {
						v.add(q, "Alias= links this unit under another unit's name, over any unit of that name (a vendor unit, an admin's unit or mask): allowed only with takeOver: true")
						continue
					}
				}
			}
			if sec == "Service" && k == "ExecStart" {
				v.add(q, "not allowed: ExecStart= comes from command (systemd refuses a second one but for Type=oneshot, and an empty one drops the command)")
				continue
			}
			if val == "" && renderedDirectives[sec][k] {
				v.add(q, "must not be empty: an empty %s= resets it in systemd, dropping what the manifest's own fields may set there (a user, the environment, the checks before start, the startup probe); leave the directive out", k)
				continue
			}
			if !v.plain(q, val) {
				continue
			}
			// Escape-hatch values are written verbatim, and systemd expands
			// $VAR and ${VAR} in command lines: refuse '$' everywhere here
			// (README: no '$' expansion from a manifest).
			if strings.Contains(val, "$") {
				v.add(q, "'$' is not allowed in %q (systemd would expand it as a variable)", val)
				continue
			}
			if why := directiveValue(sec, k, val); why != "" {
				v.add(q, "%s (systemd %s would not apply it)", why, directivesVersion)
				continue
			}
			v.unitLine(q, k, val)
		}
	}
}

func (v *validator) logs(p path, l *Logs) {
	if l == nil {
		return
	}
	if l.Stdout != "" {
		v.absPath(p.key("stdout"), l.Stdout)
	}
	if l.Stderr != "" {
		v.absPath(p.key("stderr"), l.Stderr)
	}
	if l.MaxSize != "" && !logSizeRE.MatchString(l.MaxSize) {
		v.add(p.key("maxSize"), "invalid size %q (want e.g. 10M)", l.MaxSize)
	}
	if l.MaxBackups != nil && (*l.MaxBackups < 0 || *l.MaxBackups > 100) {
		v.add(p.key("maxBackups"), "must be between 0 and 100, got %d", *l.MaxBackups)
	}
}

func (v *validator) service(p path, s *ServiceSpec) {
	if v.plain(p.key("description"), s.Description) {
		v.unitLine(p.key("description"), "Description", s.Description)
	}
	v.execCommand(p.key("command"), "ExecStart", s.Command, withLock(s.Lock, s.Command), p.key("environment"), s.Environment, escapeEnv(s.Systemd))
	v.user(p.key("user"), s.User)
	v.user(p.key("group"), s.Group)
	if s.WorkingDirectory != "" {
		v.absPath(p.key("workingDirectory"), s.WorkingDirectory)
	}
	v.env(p.key("environment"), s.Environment)
	for i, f := range s.EnvironmentFiles {
		v.absPath(p.key("environmentFiles").index(i), strings.TrimPrefix(f, "-"))
	}
	v.units(p.key("after"), "After", s.After)
	v.units(p.key("requires"), "Requires", s.Requires)
	v.units(p.key("wants"), "Wants", s.Wants)
	v.units(p.key("wantedBy"), "WantedBy", s.WantedBy)
	switch s.State {
	case "", StateRunning, StateStopped:
	default:
		v.add(p.key("state"), "must be running or stopped, got %q", s.State)
	}
	if r := s.Restart; r != nil {
		q := p.key("restart")
		switch r.Policy {
		case "", RestartAlways, RestartOnFailure, RestartNever:
		default:
			v.add(q.key("policy"), "must be always, on-failure or never, got %q", r.Policy)
		}
		v.duration(q.key("delay"), r.Delay, 0, 24*time.Hour)
		if r.Limit != nil {
			if r.Limit.Burst < 1 || r.Limit.Burst > 10000 {
				v.add(q.key("limit").key("burst"), "must be between 1 and 10000, got %d", r.Limit.Burst)
			}
			if r.Limit.Interval == "" {
				v.add(q.key("limit").key("interval"), "required")
			}
			v.duration(q.key("limit").key("interval"), r.Limit.Interval, time.Millisecond, 30*24*time.Hour)
		}
	}
	for i, c := range s.PreStart {
		q := p.key("preStart").index(i)
		v.execCommand(q.key("command"), "ExecStartPre", c.Command, checkArgv(c), p.key("environment"), s.Environment, escapeEnv(s.Systemd))
		if c.Retries < 0 || c.Retries > 1000 {
			v.add(q.key("retries"), "must be between 0 and 1000, got %d", c.Retries)
		}
		v.duration(q.key("delay"), c.Delay, 0, time.Hour)
	}
	if w := s.Watchdog; w != nil {
		q := p.key("watchdog")
		if w.Timeout == "" {
			v.add(q.key("timeout"), "required")
		}
		v.duration(q.key("timeout"), w.Timeout, 100*time.Millisecond, 24*time.Hour)
		switch w.NotifyAccess {
		case "", "main", "all":
		default:
			v.add(q.key("notifyAccess"), "must be main or all, got %q", w.NotifyAccess)
		}
	}
	v.health(p.key("health"), s.Health, s)
	v.logs(p.key("logs"), s.Logs)
	if r := s.Resources; r != nil {
		q := p.key("resources")
		if r.MemoryMax != "" && !validMemoryMax(r.MemoryMax) {
			v.add(q.key("memoryMax"), "invalid size %q (want e.g. 512M or infinity; more than 0, less than 16E)", r.MemoryMax)
		}
		if r.CPUQuota != "" && (!cpuQuotaRE.MatchString(r.CPUQuota) || strings.Trim(r.CPUQuota, "0%") == "") {
			v.add(q.key("cpuQuota"), "invalid quota %q (want e.g. \"50%%\", more than 0%%)", r.CPUQuota)
		}
		if r.TasksMax < 0 {
			v.add(q.key("tasksMax"), "must not be negative, got %d", r.TasksMax)
		}
	}
	if d := s.StateDirectory; d != "" && (!stateDirRE.MatchString(d) || strings.Contains(d, "..") || pathpkg.Clean(d) != d || d == "." || len("/var/lib/"+d) >= PathMax) {
		v.add(p.key("stateDirectory"), "invalid state directory %q (a clean relative path below /var/lib, no '.' or '..')", d)
	}
	if s.Lock != "" {
		v.absPath(p.key("lock"), s.Lock)
	}
	v.duration(p.key("stopTimeout"), s.StopTimeout, 0, time.Hour)
	v.drift(p.key("drift"), s.Drift)
	v.hosts(p.key("hosts"), s.Hosts)
	if a := s.Alert; a != nil {
		q := p.key("alert")
		if a.Restarts < 1 {
			v.add(q.key("restarts"), "must be at least 1, got %d", a.Restarts)
		}
		if a.Within == "" {
			v.add(q.key("within"), "required")
		}
		v.duration(q.key("within"), a.Within, time.Second, 30*24*time.Hour)
		if len(a.Command) > 0 && v.command(q.key("command"), a.Command) {
			v.execTotal(q.key("command"), a.Command, nil)
		}
	}
	v.escapeHatch(p.key("systemd"), s.Systemd, serviceSections, "Service", s.TakeOver)
	typ := "exec"
	if s.Watchdog != nil {
		typ = "notify"
	}
	v.oneshotRestart(p, s.Systemd, typ, systemdRestart(s.RestartPolicy()))
}

// oneshotRestart refuses a passthrough that makes the unit Type=oneshot
// with Restart=always or on-success, which systemd refuses to load
// ("Restart= set to either always or on-success, which isn't allowed for
// Type=oneshot services"). typ and restart are what the manifest's own
// fields render; the passthrough's lines come after them and win.
func (v *validator) oneshotRestart(p path, m map[string]map[string]string, typ, restart string) {
	svc := m["Service"]
	if t, ok := svc["Type"]; ok {
		typ = t
	}
	if r, ok := svc["Restart"]; ok {
		restart = r
	}
	if typ != "oneshot" || (restart != "always" && restart != "on-success") {
		return
	}
	q := p.key("systemd").key("Service").key("Type")
	if _, ok := svc["Type"]; !ok {
		q = p.key("systemd").key("Service").key("Restart")
	}
	if _, ok := svc["Restart"]; !ok && restart == "always" {
		v.add(q, "Type=oneshot with restart.policy: always: systemd refuses to load a oneshot service that restarts always or on success")
		return
	}
	v.add(q, "Type=oneshot with Restart=%s: systemd refuses to load a oneshot service that restarts always or on success", restart)
}

// validMemoryMax accepts what systemd's MemoryMax= does of sizeRE: "infinity",
// or 1 byte up to (not including) 2^64 with an optional K/M/G/T suffix
// (systemd refuses 0 and values that overflow).
func validMemoryMax(s string) bool {
	if !sizeRE.MatchString(s) {
		return false
	}
	if s == "infinity" {
		return true
	}
	shift := map[byte]uint{'K': 10, 'M': 20, 'G': 30, 'T': 40}[s[len(s)-1]]
	digits := strings.TrimRight(s, "KMGT")
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || n == 0 || n > (math.MaxUint64-1)>>shift {
		return false
	}
	return true
}

func (v *validator) drift(p path, d DriftPolicy) {
	switch d {
	case "", DriftEnforce, DriftReport:
	default:
		v.add(p, "must be enforce or report, got %q", d)
	}
}

func (v *validator) timer(p path, t *TimerSpec) {
	if v.plain(p.key("description"), t.Description) {
		// The job service of an inline command says "DESCRIPTION (job)".
		v.unitLine(p.key("description"), "Description", t.Description+" (job)")
	}
	if len(t.Schedule) == 0 && t.OnBoot == "" && t.OnUnitActive == "" {
		v.add(p.key("schedule"), "required: give schedule, onBoot or onUnitActive")
	}
	for i, s := range t.Schedule {
		q := p.key("schedule").index(i)
		if !v.plain(q, s) || !v.unitLine(q, "OnCalendar", s) {
			continue
		}
		if err := ParseCalendar(s); err != nil {
			v.add(q, "%v", err)
		}
	}
	v.duration(p.key("onBoot"), t.OnBoot, time.Millisecond, 365*24*time.Hour)
	v.duration(p.key("onUnitActive"), t.OnUnitActive, time.Millisecond, 365*24*time.Hour)
	v.duration(p.key("randomizedDelay"), t.RandomizedDelay, 0, 7*24*time.Hour)
	v.duration(p.key("accuracy"), t.Accuracy, time.Microsecond, 7*24*time.Hour)
	switch t.CatchUp {
	case "", CatchUpOnce, CatchUpSkip:
	default:
		v.add(p.key("catchUp"), "must be once or skip, got %q", t.CatchUp)
	}
	v.duration(p.key("maxLateness"), t.MaxLateness, time.Second, 365*24*time.Hour)
	if t.MaxLateness != "" && t.CatchUp == CatchUpSkip {
		v.add(p.key("maxLateness"), "has no effect with catchUp: skip")
	}
	if t.CatchUp != "" && len(t.Schedule) == 0 {
		v.add(p.key("catchUp"), "needs a calendar schedule")
	}
	switch {
	case len(t.Command) > 0 && t.Service != "":
		v.add(p.key("service"), "give either command or service, not both")
	case len(t.Command) == 0 && t.Service == "":
		v.add(p.key("command"), "required: an inline command, or service: NAME of a Service")
	case t.Service != "":
		if d := checkName(t.Service); d != "" {
			v.add(p.key("service"), "%s", d)
		}
		for _, f := range []struct {
			k   string
			set bool
		}{{"user", t.User != ""}, {"group", t.Group != ""}, {"workingDirectory", t.WorkingDirectory != ""},
			{"environment", len(t.Environment) > 0}, {"retry", t.Retry != nil}, {"lock", t.Lock != ""}, {"logs", t.Logs != nil}} {
			if f.set {
				v.add(p.key(f.k), "only for an inline command; set it on Service %q instead", t.Service)
			}
		}
	default:
		// What is rendered: the retry loop around the lock around the command.
		v.execCommand(p.key("command"), "ExecStart", t.Command, withRetry(t.Retry, withLock(t.Lock, t.Command)), p.key("environment"), t.Environment, escapeEnv(t.Systemd))
	}
	v.user(p.key("user"), t.User)
	v.user(p.key("group"), t.Group)
	if t.WorkingDirectory != "" {
		v.absPath(p.key("workingDirectory"), t.WorkingDirectory)
	}
	v.env(p.key("environment"), t.Environment)
	if r := t.Retry; r != nil {
		if r.Attempts < 1 || r.Attempts > 100 {
			v.add(p.key("retry").key("attempts"), "must be between 1 and 100, got %d", r.Attempts)
		}
		v.duration(p.key("retry").key("delay"), r.Delay, 0, 24*time.Hour)
	}
	if t.Lock != "" {
		v.absPath(p.key("lock"), t.Lock)
	}
	v.logs(p.key("logs"), t.Logs)
	v.drift(p.key("drift"), t.Drift)
	v.hosts(p.key("hosts"), t.Hosts)
	sections := timerSections
	if t.Service != "" {
		sections = timerRefSections
	}
	v.escapeHatch(p.key("systemd"), t.Systemd, sections, "Timer", t.TakeOver)
	if t.Service == "" {
		// The inline job: Type=oneshot, no Restart= of its own.
		v.oneshotRestart(p, t.Systemd, "oneshot", "no")
	}
}

func (v *validator) watchdog(p path, w *WatchdogSpec) {
	if w.RuntimeTimeout == "" && w.RebootTimeout == "" && w.Device == "" {
		v.add(p, "give at least one of runtimeTimeout, rebootTimeout, device")
	}
	v.duration(p.key("runtimeTimeout"), w.RuntimeTimeout, 0, 24*time.Hour)
	v.duration(p.key("rebootTimeout"), w.RebootTimeout, 0, 24*time.Hour)
	if w.Device != "" {
		v.absPath(p.key("device"), w.Device)
		if !strings.HasPrefix(w.Device, "/dev/") {
			v.add(p.key("device"), "must be below /dev, got %q", w.Device)
		}
	}
	v.hosts(p.key("hosts"), w.Hosts)
}
