package desired

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"resil.dev/resil/internal/ownmark"
)

// FileDir says which directory a rendered file belongs in.
type FileDir string

// File directories.
const (
	// DirUnit is the unit directory (default /etc/systemd/system).
	DirUnit FileDir = "unit"
	// DirManager is systemd's manager drop-in directory (/etc/systemd/system.conf.d).
	DirManager FileDir = "manager"
)

// Ownership markers written into every rendered unit, defined in
// internal/ownmark and named here too for desired's callers.
const (
	KeyObject = ownmark.KeyObject
	KeySource = ownmark.KeySource
	KeyHash   = ownmark.KeyHash
	// WatchdogFile is the manager drop-in the Watchdog kind renders.
	WatchdogFile = ownmark.WatchdogFile
	headerMark   = "# Managed by resil"
)

// UnitFile is one rendered file.
type UnitFile struct {
	// Name is the file name, e.g. "worker.service".
	Name string
	Dir  FileDir
	Data []byte
	// Object is the ID of the object it was rendered from.
	Object string
}

// Render turns a validated object into its files with the default
// RenderOptions. Same object, same bytes.
func Render(o *Object) ([]UnitFile, error) { return render(o, RenderOptions{}) }

func render(o *Object, ro RenderOptions) ([]UnitFile, error) {
	switch o.Kind {
	case KindService:
		return []UnitFile{finishUnit(o, o.Metadata.Name+".service", serviceOptions(o, ro))}, nil
	case KindTimer:
		files := []UnitFile{finishUnit(o, o.Metadata.Name+".timer", timerOptions(o))}
		if o.Timer.Service == "" {
			files = append(files, finishUnit(o, o.Metadata.Name+".service", timerJobOptions(o)))
		}
		return files, nil
	case KindWatchdog:
		return []UnitFile{renderWatchdog(o)}, nil
	}
	return nil, fmt.Errorf("render %s: unknown kind %q", o.ID(), o.Kind)
}

type opts []*unit.UnitOption

func (o *opts) add(section, name, value string) {
	*o = append(*o, unit.NewUnitOption(section, name, value))
}

func (o *opts) addIf(section, name, value string) {
	if value != "" {
		o.add(section, name, value)
	}
}

func ownershipHeader(o *Object) string {
	return fmt.Sprintf("%s from %s (%s). Do not edit: the agent restores this file.\n"+
		"# Local changes belong in a drop-in manifest %s.d/*.yaml beside it.\n", headerMark, o.ID(), o.Source.File, o.Metadata.Name)
}

// finishUnit adds the ownership keys, serializes and stamps the hash.
func finishUnit(o *Object, name string, body opts) UnitFile {
	// The ownership keys go at the end of [Unit]; the hash covers all else.
	var withKeys opts
	inserted := false
	src := strings.Join(append([]string{o.Source.File}, o.Source.DropIns...), " ")
	for i, op := range body {
		withKeys = append(withKeys, op)
		last := i == len(body)-1 || body[i+1].Section != "Unit"
		if op.Section == "Unit" && last && !inserted {
			withKeys.add("Unit", KeyObject, o.ID())
			withKeys.add("Unit", KeySource, src)
			if o.TakesOver() {
				withKeys.add("Unit", ownmark.KeyTakeOver, "yes")
			}
			inserted = true
		}
	}
	if !inserted {
		keys := opts{unit.NewUnitOption("Unit", KeyObject, o.ID()), unit.NewUnitOption("Unit", KeySource, src)}
		if o.TakesOver() {
			keys = append(keys, unit.NewUnitOption("Unit", ownmark.KeyTakeOver, "yes"))
		}
		withKeys = append(keys, withKeys...)
	}
	var buf bytes.Buffer
	buf.WriteString(ownershipHeader(o))
	_, _ = io.Copy(&buf, unit.Serialize(withKeys))
	data := buf.Bytes()
	h := ownmark.Hash(data)
	// Insert the hash line right after the X-Resil-Source line. The marker
	// starts at a line start: a value may contain the same text.
	marker := []byte("\n" + KeySource + "=" + src + "\n")
	i := bytes.Index(data, marker) + len(marker)
	out := make([]byte, 0, len(data)+len(h)+len(KeyHash)+2)
	out = append(out, data[:i]...)
	out = append(out, KeyHash+"="+h+"\n"...)
	out = append(out, data[i:]...)
	return UnitFile{Name: name, Dir: DirUnit, Data: out, Object: o.ID()}
}

// Span renders a duration as a systemd time span ("5s", "500ms", "250us").
func Span(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	default:
		return strconv.FormatInt(int64(d/time.Microsecond), 10) + "us"
	}
}

// QuoteArg quotes one command-line argument by systemd's rules
// (systemd.service(5) "Command lines"): '$' becomes "$$" (no variable
// expansion), '%' becomes "%%" (no specifier), and anything beyond a
// conservative safe set is double-quoted with '\' and '"' escaped.
func QuoteArg(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, "$", "$$")
	if s != "" && isSafeArg(s) {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func isSafeArg(s string) bool {
	if s == ";" || strings.HasPrefix(s, "'") {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("/._-+=:,@%$", r):
		default:
			return false
		}
	}
	return true
}

// CommandLine renders argv for an Exec*= directive.
func CommandLine(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = QuoteArg(a)
	}
	return strings.Join(q, " ")
}

// envAssignment renders one Environment= value, quoted.
func envAssignment(k, v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `"`, `\"`)
	v = strings.ReplaceAll(v, "%", "%%")
	return `"` + k + "=" + v + `"`
}

// Shell snippets run by /bin/sh with the real command passed as "$0" "$@",
// so no manifest value is ever spliced into shell code.
const (
	lockScript  = `exec 9>>"$0" && /usr/bin/flock 9 && exec "$@"`
	checkScript = `n=0; until "$0" "$@"; do n=$((n+1)); if [ "$n" -gt %d ]; then echo "resil: pre-start check $0 failed after %d tries" >&2; exit 1; fi; sleep %s; done`
	// retryScript runs a timer job's command up to retry.attempts times,
	// retry.delay apart, within one run; it exits with the last status.
	retryScript = `n=1; until "$0" "$@"; do s=$?; if [ "$n" -ge %d ]; then echo "resil: job failed after $n attempts (exit status $s)" >&2; exit "$s"; fi; echo "resil: job attempt $n failed (exit status $s), retrying in %ss" >&2; n=$((n+1)); sleep %s; done`
)

// DefaultRetryDelay is the pause between a timer job's attempts when
// retry.delay is not set (systemd's RestartSec= default).
const DefaultRetryDelay = 100 * time.Millisecond

// RetryDelay is the pause between attempts of r.
func RetryDelay(r *Retry) time.Duration {
	if r == nil || !r.Delay.IsSet() {
		return DefaultRetryDelay
	}
	return r.Delay.D()
}

// withRetry wraps argv in a bounded retry loop: one run of the job makes up
// to r.Attempts attempts. The loop lives inside the run, so the retries
// never count against a start limit shared with the timer's schedule.
func withRetry(r *Retry, argv []string) []string {
	if r == nil || r.Attempts <= 1 {
		return argv
	}
	secs := strconv.FormatFloat(RetryDelay(r).Seconds(), 'f', -1, 64)
	script := fmt.Sprintf(retryScript, r.Attempts, secs, secs)
	return append([]string{"/bin/sh", "-c", script}, argv...)
}

// withLock wraps argv so it runs holding an exclusive flock on lock; the
// shell execs the command, so MainPID (and sd_notify) stay the command's.
func withLock(lock string, argv []string) []string {
	if lock == "" {
		return argv
	}
	return append([]string{"/bin/sh", "-c", lockScript, lock}, argv...)
}

func checkArgv(c Check) []string {
	delay := c.Delay.D()
	if !c.Delay.IsSet() {
		delay = time.Second
	}
	secs := strconv.FormatFloat(delay.Seconds(), 'f', -1, 64)
	script := fmt.Sprintf(checkScript, c.Retries, c.Retries+1, secs)
	return append([]string{"/bin/sh", "-c", script}, c.Command...)
}

func joinUnits(list []string) string { return strings.Join(list, " ") }

func description(o *Object, d string) string {
	if d != "" {
		return d
	}
	return fmt.Sprintf("resil %s %s", strings.ToLower(string(o.Kind)), o.Metadata.Name)
}

func serviceOptions(o *Object, ro RenderOptions) opts {
	s := o.Service
	var u opts
	u.add("Unit", "Description", description(o, s.Description))
	u.addIf("Unit", "After", joinUnits(s.After))
	u.addIf("Unit", "Requires", joinUnits(s.Requires))
	u.addIf("Unit", "Wants", joinUnits(s.Wants))
	if s.Restart != nil && s.Restart.Limit != nil {
		u.add("Unit", "StartLimitIntervalSec", Span(s.Restart.Limit.Interval.D()))
		u.add("Unit", "StartLimitBurst", strconv.Itoa(s.Restart.Limit.Burst))
	}
	addEscape(&u, "Unit", s.Systemd)

	if w := s.Watchdog; w != nil {
		u.add("Service", "Type", "notify")
		access := w.NotifyAccess
		if access == "" {
			access = "main"
		}
		u.add("Service", "NotifyAccess", access)
		u.add("Service", "WatchdogSec", Span(w.Timeout.D()))
	} else {
		u.add("Service", "Type", "exec")
	}
	var preTotal time.Duration
	for _, c := range s.PreStart {
		u.add("Service", "ExecStartPre", CommandLine(checkArgv(c)))
		d := c.Delay.D()
		if !c.Delay.IsSet() {
			d = time.Second
		}
		preTotal += time.Duration(c.Retries) * (d + 5*time.Second)
	}
	u.add("Service", "ExecStart", CommandLine(withLock(s.Lock, s.Command)))
	var startTotal time.Duration
	if h := s.Health; h != nil && h.Startup != nil {
		u.add("Service", "ExecStartPost", CommandLine(startupProbeArgv(ro.probeCommand(), *h.Startup)))
		startTotal = startupBudget(*h.Startup)
	}
	policy, delay := RestartOnFailure, Duration("")
	if s.Restart != nil {
		if s.Restart.Policy != "" {
			policy = s.Restart.Policy
		}
		delay = s.Restart.Delay
	}
	u.add("Service", "Restart", systemdRestart(policy))
	if delay.IsSet() {
		u.add("Service", "RestartSec", Span(delay.D()))
	}
	if preTotal+startTotal > 0 {
		u.add("Service", "TimeoutStartSec", Span(preTotal+startTotal+90*time.Second))
	}
	if s.StopTimeout.IsSet() {
		u.add("Service", "TimeoutStopSec", Span(s.StopTimeout.D()))
	}
	addProcess(&u, s.User, s.Group, s.WorkingDirectory, s.Environment, s.EnvironmentFiles, s.Logs)
	if r := s.Resources; r != nil {
		u.addIf("Service", "MemoryMax", r.MemoryMax)
		u.addIf("Service", "CPUQuota", r.CPUQuota)
		if r.TasksMax > 0 {
			u.add("Service", "TasksMax", strconv.Itoa(r.TasksMax))
		}
	}
	u.addIf("Service", "StateDirectory", s.StateDirectory)
	addEscape(&u, "Service", s.Systemd)

	wanted := s.WantedBy
	if wanted == nil {
		wanted = []string{"multi-user.target"}
	}
	u.addIf("Install", "WantedBy", joinUnits(wanted))
	addEscape(&u, "Install", s.Systemd)
	return u
}

func addProcess(u *opts, user, group, wd string, env map[string]string, envFiles []string, logs *Logs) {
	u.addIf("Service", "User", user)
	u.addIf("Service", "Group", group)
	u.addIf("Service", "WorkingDirectory", wd)
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		u.add("Service", "Environment", envAssignment(k, env[k]))
	}
	for _, f := range envFiles {
		u.add("Service", "EnvironmentFile", f)
	}
	if logs != nil {
		if logs.Stdout != "" {
			u.add("Service", "StandardOutput", "append:"+logs.Stdout)
		}
		if logs.Stderr != "" {
			u.add("Service", "StandardError", "append:"+logs.Stderr)
		}
	}
}

// addEscape appends the escape-hatch directives of one section, sorted.
// systemd takes the last assignment of most settings, so they override.
func addEscape(u *opts, section string, m map[string]map[string]string) {
	kv := m[section]
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		u.add(section, k, kv[k])
	}
}

// DefaultAccuracy is the timer AccuracySec when the manifest gives none.
const DefaultAccuracy = time.Second

// AgentUnit is the agent's own unit, as `reconciler install` writes it.
const AgentUnit = "resil-agent.service"

func timerOptions(o *Object) opts {
	t := o.Timer
	var u opts
	u.add("Unit", "Description", description(o, t.Description))
	if t.Persistent && t.CatchUp != CatchUpSkip && t.MaxLateness.IsSet() {
		// At boot, start the timer only after the agent's first pass (its
		// READY=1): the pass refreshes the stamp of a run missed by more than
		// maxLateness before systemd reads it. Ordering only: without the
		// agent, or if it fails, the timer starts anyway.
		u.add("Unit", "After", AgentUnit)
	}
	addEscape(&u, "Unit", t.Systemd)
	for _, s := range t.Schedule {
		u.add("Timer", "OnCalendar", s)
	}
	if t.OnBoot.IsSet() {
		u.add("Timer", "OnBootSec", Span(t.OnBoot.D()))
	}
	if t.OnUnitActive.IsSet() {
		u.add("Timer", "OnUnitActiveSec", Span(t.OnUnitActive.D()))
	}
	if t.Persistent && t.CatchUp != CatchUpSkip {
		u.add("Timer", "Persistent", "true")
	}
	if t.RandomizedDelay.IsSet() {
		u.add("Timer", "RandomizedDelaySec", Span(t.RandomizedDelay.D()))
	}
	acc := DefaultAccuracy
	if t.Accuracy.IsSet() {
		acc = t.Accuracy.D()
	}
	u.add("Timer", "AccuracySec", Span(acc))
	u.add("Timer", "Unit", t.TriggeredService(o.Metadata.Name))
	addEscape(&u, "Timer", t.Systemd)
	u.add("Install", "WantedBy", "timers.target")
	addEscape(&u, "Install", t.Systemd)
	return u
}

func timerJobOptions(o *Object) opts {
	t := o.Timer
	var u opts
	u.add("Unit", "Description", description(o, t.Description)+" (job)")
	// systemd counts every start against a unit's start limit, the timer's
	// activations included: a job scheduled faster than the default 5 starts
	// per 10s would be refused (start-limit-hit). The schedule is the
	// timer's business, so the job has no start limit; retries happen
	// within one run (withRetry), never as restarts.
	u.add("Unit", "StartLimitIntervalSec", "0")
	u.add("Service", "Type", "oneshot")
	u.add("Service", "ExecStart", CommandLine(withRetry(t.Retry, withLock(t.Lock, t.Command))))
	addProcess(&u, t.User, t.Group, t.WorkingDirectory, t.Environment, nil, t.Logs)
	addEscape(&u, "Service", t.Systemd)
	return u
}

func renderWatchdog(o *Object) UnitFile {
	w := o.Watchdog
	var u opts
	if w.RuntimeTimeout.IsSet() {
		u.add("Manager", "RuntimeWatchdogSec", Span(w.RuntimeTimeout.D()))
	}
	if w.RebootTimeout.IsSet() {
		u.add("Manager", "RebootWatchdogSec", Span(w.RebootTimeout.D()))
	}
	if w.Device != "" {
		u.add("Manager", "WatchdogDevice", w.Device)
	}
	var buf bytes.Buffer
	buf.WriteString(ownershipHeader(o))
	fmt.Fprintf(&buf, "# %s=%s\n", KeyObject, o.ID())
	// The source files, as a unit's X-Resil-Source: an agent with no
	// memory does not prune this drop-in while one of them is invalid.
	fmt.Fprintf(&buf, "# %s=%s\n", KeySource, strings.Join(append([]string{o.Source.File}, o.Source.DropIns...), " "))
	_, _ = io.Copy(&buf, unit.Serialize(u))
	return UnitFile{Name: WatchdogFile, Dir: DirManager, Data: buf.Bytes(), Object: o.ID()}
}

// systemdRestart is the Restart= value of a restart policy ("" is the
// default, on-failure).
func systemdRestart(p RestartPolicy) string {
	return map[RestartPolicy]string{"": "on-failure", RestartAlways: "always", RestartOnFailure: "on-failure", RestartNever: "no"}[p]
}
