package process

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
)

// Unit types, as systemd's Type=.
const (
	TypeSimple  = "simple"  // started once the process runs (systemd Type=exec)
	TypeNotify  = "notify"  // started on READY=1 (watchdog services)
	TypeOneshot = "oneshot" // started when the process exited successfully (timer jobs)
)

// Spec is what the supervisor needs to run one unit. It is the JSON body of a
// rendered unit file. A service or timer job has Command set; a timer has
// Timer set. Durations are kept as written in the manifest.
type Spec struct {
	// Kind is "service" or "timer" (the unit's suffix).
	Kind string `json:"kind"`
	// Object is the manifest object ID, e.g. "Service/worker".
	Object string `json:"object"`
	// Unit is the unit name, e.g. "worker.service".
	Unit string `json:"unit"`
	Type string `json:"type,omitempty"`

	Command          []string          `json:"command,omitempty"`
	User             string            `json:"user,omitempty"`
	Group            string            `json:"group,omitempty"`
	WorkingDirectory string            `json:"workingDirectory,omitempty"`
	Environment      map[string]string `json:"environment,omitempty"`
	EnvironmentFiles []string          `json:"environmentFiles,omitempty"`
	Restart          *RestartSpec      `json:"restart,omitempty"`
	PreStart         []desired.Check   `json:"preStart,omitempty"`
	// Startup is spec.health.startup, defaults filled in: the start is
	// done only once it passes (see runner_probe.go).
	Startup     *desired.Probe           `json:"startup,omitempty"`
	Watchdog    *desired.ServiceWatchdog `json:"watchdog,omitempty"`
	Logs        *desired.Logs            `json:"logs,omitempty"`
	Lock        string                   `json:"lock,omitempty"`
	StopTimeout desired.Duration         `json:"stopTimeout,omitempty"`
	// Retry is a timer job's retry within one run: up to Attempts tries,
	// Delay apart, while the unit stays activating; the run fails with the
	// last attempt's result. Never restarts, never a start limit.
	Retry *desired.Retry `json:"retry,omitempty"`

	Timer *TimerSpec `json:"timer,omitempty"`
	// Stopped: the manifest wants the service stopped (state: stopped).
	// An agent's start (startEnabled) never runs it: a program declared
	// stopped does not run, not even until the first pass stops it. The
	// planner starts and stops by the manifest, as on systemd.
	Stopped bool `json:"stopped,omitempty"`
}

// RestartSpec is the effective restart policy of a unit: defaults filled in.
type RestartSpec struct {
	Policy desired.RestartPolicy `json:"policy"`
	Delay  desired.Duration      `json:"delay,omitempty"`
	// Burst starts within Interval are allowed; the next is refused
	// (start-limit-hit). Burst <= 0: no limit (a timer job: its schedule is
	// the timer's business and its retries are Spec.Retry).
	Burst    int              `json:"burst"`
	Interval desired.Duration `json:"interval,omitempty"`
}

// TimerSpec is the schedule of a timer unit.
type TimerSpec struct {
	Schedule        []string         `json:"schedule,omitempty"`
	OnBoot          desired.Duration `json:"onBoot,omitempty"`
	OnUnitActive    desired.Duration `json:"onUnitActive,omitempty"`
	Persistent      bool             `json:"persistent,omitempty"`
	CatchUp         desired.CatchUp  `json:"catchUp,omitempty"`
	MaxLateness     desired.Duration `json:"maxLateness,omitempty"`
	RandomizedDelay desired.Duration `json:"randomizedDelay,omitempty"`
	// Unit is the service the timer starts.
	Unit string `json:"unit"`
}

// Defaults shared with systemd.
const (
	defaultRestartDelay  = "100ms" // RestartSec
	defaultBurst         = 5       // DefaultStartLimitBurst
	defaultBurstInterval = "10s"   // DefaultStartLimitIntervalSec
	defaultStopTimeout   = "10s"   // TimeoutStopSec
	defaultReadyTimeout  = "90s"   // TimeoutStartSec for Type=notify
)

// Render turns a validated object into the files of the process backend: one
// per unit, named like systemd units, in desired.DirUnit. Each file is
//
//	# X-Resil-Object=Service/worker
//	# X-Resil-Source=worker.yaml worker.d/10-env.yaml
//	# Managed by resil (process backend). Do not edit: the agent restores this file.
//	X-Resil-Hash=sha256:...
//	{...Spec as indented JSON...}
//
// so ownmark.IsOwned, ownmark.SourceOf and ownmark.HashOf work on it, as on
// systemd units: an agent with no memory tells a broken manifest from a
// deleted one by the source marker. Same object, same bytes.
//
// An object asking for something the supervisor cannot do (see supported)
// is refused with an error wrapping actuators.ErrUnsupported.
func Render(o *desired.Object) ([]desired.UnitFile, error) {
	esc, err := supported(o)
	if err != nil {
		return nil, err
	}
	switch o.Kind {
	case desired.KindService:
		if o.Service == nil {
			return nil, fmt.Errorf("render %s: no service spec", o.ID())
		}
		f, err := finish(o, esc.apply(serviceSpec(o)))
		if err != nil {
			return nil, err
		}
		return []desired.UnitFile{f}, nil
	case desired.KindTimer:
		t := o.Timer
		if t == nil {
			return nil, fmt.Errorf("render %s: no timer spec", o.ID())
		}
		ts := &Spec{Kind: "timer", Object: o.ID(), Unit: o.Metadata.Name + ".timer", Timer: &TimerSpec{
			Schedule: t.Schedule, OnBoot: t.OnBoot, OnUnitActive: t.OnUnitActive,
			Persistent: t.Persistent, CatchUp: t.CatchUp, MaxLateness: t.MaxLateness,
			RandomizedDelay: t.RandomizedDelay, Unit: t.TriggeredService(o.Metadata.Name),
		}}
		tf, err := finish(o, ts)
		if err != nil {
			return nil, err
		}
		files := []desired.UnitFile{tf}
		if t.Service == "" {
			jf, err := finish(o, esc.apply(jobSpec(o)))
			if err != nil {
				return nil, err
			}
			files = append(files, jf)
		}
		return files, nil
	case desired.KindWatchdog:
		// The host watchdog is systemd's; the planner reports it as
		// unsupported on this backend (no files, nothing to prune).
		return nil, nil
	}
	return nil, fmt.Errorf("render %s: kind %q has no process-backend unit", o.ID(), o.Kind)
}

func serviceSpec(o *desired.Object) *Spec {
	s := o.Service
	r := &RestartSpec{Policy: desired.RestartOnFailure, Delay: defaultRestartDelay, Burst: defaultBurst, Interval: defaultBurstInterval}
	if s.Restart != nil {
		if s.Restart.Policy != "" {
			r.Policy = s.Restart.Policy
		}
		if s.Restart.Delay.IsSet() {
			r.Delay = s.Restart.Delay
		}
		if l := s.Restart.Limit; l != nil {
			r.Burst, r.Interval = l.Burst, l.Interval
		}
	}
	typ := TypeSimple
	var wd *desired.ServiceWatchdog
	if s.Watchdog != nil {
		typ = TypeNotify
		w := *s.Watchdog
		if w.NotifyAccess == "" {
			w.NotifyAccess = "main"
		}
		wd = &w
	}
	stop := s.StopTimeout
	if !stop.IsSet() {
		stop = defaultStopTimeout
	}
	var startup *desired.Probe
	if s.Health != nil && s.Health.Startup != nil {
		p := s.Health.Startup.Effective(desired.ProbeStartup)
		startup = &p
	}
	return &Spec{
		Kind: "service", Object: o.ID(), Unit: o.Metadata.Name + ".service", Type: typ, Startup: startup,
		Command: s.Command, User: s.User, Group: s.Group, WorkingDirectory: s.WorkingDirectory,
		Environment: s.Environment, EnvironmentFiles: s.EnvironmentFiles,
		Restart: r, PreStart: s.PreStart, Watchdog: wd, Logs: s.Logs, Lock: s.Lock, StopTimeout: stop,
		Stopped: s.DesiredState() == desired.StateStopped,
	}
}

func jobSpec(o *desired.Object) *Spec {
	t := o.Timer
	var retry *desired.Retry
	if t.Retry != nil && t.Retry.Attempts > 1 {
		retry = &desired.Retry{Attempts: t.Retry.Attempts, Delay: desired.Duration(desired.RetryDelay(t.Retry).String())}
	}
	return &Spec{
		Kind: "service", Object: o.ID(), Unit: o.Metadata.Name + ".service", Type: TypeOneshot,
		Command: t.Command, User: t.User, Group: t.Group, WorkingDirectory: t.WorkingDirectory,
		Environment: t.Environment, Restart: &RestartSpec{Policy: desired.RestartNever}, Retry: retry,
		Logs: t.Logs, Lock: t.Lock, StopTimeout: defaultStopTimeout,
	}
}

func finish(o *desired.Object, s *Spec) (desired.UnitFile, error) {
	body, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return desired.UnitFile{}, fmt.Errorf("render %s: %w", s.Unit, err)
	}
	src := strings.Join(append([]string{o.Source.File}, o.Source.DropIns...), " ")
	head := fmt.Sprintf("# %s=%s\n# %s=%s\n# Managed by resil (process backend). Do not edit: the agent restores this file.\n",
		ownmark.KeyObject, o.ID(), ownmark.KeySource, headerSafe(src))
	unhashed := head + string(body) + "\n"
	sum := sha256.Sum256([]byte(unhashed))
	data := head + ownmark.KeyHash + "=sha256:" + hex.EncodeToString(sum[:12]) + "\n" + string(body) + "\n"
	return desired.UnitFile{Name: s.Unit, Dir: desired.DirUnit, Data: []byte(data), Object: o.ID()}, nil
}

// headerSafe keeps a header value on one line.
func headerSafe(v string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0x85 || r == 0x2028 || r == 0x2029 {
			return '?'
		}
		return r
	}, v)
}

var errNoBody = errors.New("no JSON body")

// ParseUnitFile decodes a rendered unit file back into its Spec.
func ParseUnitFile(data []byte) (*Spec, error) {
	i := bytes.IndexByte(data, '{')
	if i < 0 {
		return nil, errNoBody
	}
	for _, line := range strings.Split(string(data[:i]), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, ownmark.KeyHash+"=") {
			return nil, fmt.Errorf("unexpected header line %q", line)
		}
	}
	var s Spec
	dec := json.NewDecoder(bytes.NewReader(data[i:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decode spec: %w", err)
	}
	if s.Unit == "" || (s.Kind == "service" && len(s.Command) == 0) || (s.Kind == "timer" && s.Timer == nil) {
		return nil, fmt.Errorf("incomplete spec for %q", s.Unit)
	}
	return &s, nil
}
