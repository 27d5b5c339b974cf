package desired

import "time"

// APIVersion is the only manifest API version this build understands.
const APIVersion = "resil.dev/v1"

// Kind names the type of an object.
type Kind string

// Object kinds.
const (
	KindService  Kind = "Service"
	KindTimer    Kind = "Timer"
	KindWatchdog Kind = "Watchdog"
)

// Kinds returns every object kind, in a fixed order.
func Kinds() []Kind { return []Kind{KindService, KindTimer, KindWatchdog} }

// ObjectMeta is the metadata every object carries.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Object is one manifest document after drop-ins were merged and the spec was
// decoded. Exactly one of Service, Timer and Watchdog is set, by Kind.
type Object struct {
	APIVersion string     `json:"apiVersion"`
	Kind       Kind       `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`

	Service  *ServiceSpec  `json:"-"`
	Timer    *TimerSpec    `json:"-"`
	Watchdog *WatchdogSpec `json:"-"`

	// Source says where the object came from.
	Source Source `json:"-"`

	// docs are the parsed documents (base, then drop-ins), for positions.
	docs []*doc
	// document is the merged JSON document the object was decoded from
	// (base with its drop-ins), see Document.
	document []byte
}

// Source records the files an object was assembled from.
type Source struct {
	// File is the manifest path relative to the manifests directory.
	File string
	// Doc is the 0-based index of the document inside File.
	Doc int
	// DropIns are the drop-in paths (relative) merged onto the object, in order.
	DropIns []string
}

// ID is the kind-qualified name, e.g. "Service/worker"; unique in a Set.
func (o *Object) ID() string { return string(o.Kind) + "/" + o.Metadata.Name }

// String implements fmt.Stringer.
func (o *Object) String() string { return o.ID() }

// Hosts returns the object's host selector, nil meaning every host.
func (o *Object) Hosts() *HostSelector {
	switch {
	case o.Service != nil:
		return o.Service.Hosts
	case o.Timer != nil:
		return o.Timer.Hosts
	case o.Watchdog != nil:
		return o.Watchdog.Hosts
	}
	return nil
}

// DriftPolicy returns what to do when the host drifts from this object.
func (o *Object) DriftPolicy() DriftPolicy {
	var p DriftPolicy
	switch {
	case o.Service != nil:
		p = o.Service.Drift
	case o.Timer != nil:
		p = o.Timer.Drift
	}
	if p == "" {
		return DriftEnforce
	}
	return p
}

// State is the desired run state of a service.
type State string

// Service states.
const (
	StateRunning State = "running"
	StateStopped State = "stopped"
)

// RestartPolicy maps onto systemd's Restart=.
type RestartPolicy string

// Restart policies.
const (
	RestartAlways    RestartPolicy = "always"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartNever     RestartPolicy = "never"
)

// DriftPolicy says whether drift is corrected or only reported.
type DriftPolicy string

// Drift policies.
const (
	DriftEnforce DriftPolicy = "enforce"
	DriftReport  DriftPolicy = "report"
)

// CatchUp says what a timer does about runs missed while the host or agent was down.
type CatchUp string

// Catch-up policies.
const (
	CatchUpOnce CatchUp = "once"
	CatchUpSkip CatchUp = "skip"
)

// Duration is a Go-syntax duration string ("500ms", "5s", "1m30s"). It is kept
// as written so validation can point at the bad text; D parses it.
type Duration string

// D returns the parsed duration, 0 when empty or invalid (validation rejects
// invalid values before anything uses them).
func (d Duration) D() time.Duration {
	if d == "" {
		return 0
	}
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0
	}
	return v
}

// IsSet reports whether the duration was given.
func (d Duration) IsSet() bool { return d != "" }

// ServiceSpec is the spec of kind Service; it renders NAME.service.
type ServiceSpec struct {
	Description      string            `json:"description,omitempty"`
	Command          []string          `json:"command"`
	User             string            `json:"user,omitempty"`
	Group            string            `json:"group,omitempty"`
	WorkingDirectory string            `json:"workingDirectory,omitempty"`
	Environment      map[string]string `json:"environment,omitempty"`
	EnvironmentFiles []string          `json:"environmentFiles,omitempty"`
	After            []string          `json:"after,omitempty"`
	Requires         []string          `json:"requires,omitempty"`
	Wants            []string          `json:"wants,omitempty"`
	// WantedBy defaults to [multi-user.target] when absent; an explicit empty list means none.
	WantedBy []string `json:"wantedBy,omitempty"`
	// State defaults to running.
	State State `json:"state,omitempty"`
	// Enabled defaults to true.
	Enabled  *bool            `json:"enabled,omitempty"`
	Restart  *RestartSpec     `json:"restart,omitempty"`
	PreStart []Check          `json:"preStart,omitempty"`
	Watchdog *ServiceWatchdog `json:"watchdog,omitempty"`
	// Health are the service's startup, liveness and readiness probes.
	Health         *HealthSpec                  `json:"health,omitempty"`
	Logs           *Logs                        `json:"logs,omitempty"`
	Resources      *Resources                   `json:"resources,omitempty"`
	StateDirectory string                       `json:"stateDirectory,omitempty"`
	Lock           string                       `json:"lock,omitempty"`
	StopTimeout    Duration                     `json:"stopTimeout,omitempty"`
	Drift          DriftPolicy                  `json:"drift,omitempty"`
	Hosts          *HostSelector                `json:"hosts,omitempty"`
	Alert          *Alert                       `json:"alert,omitempty"`
	Systemd        map[string]map[string]string `json:"systemd,omitempty"`
	// TakeOver lets resil replace a unit of the same name that systemd has
	// from elsewhere (a vendor unit in /lib/systemd/system, a runtime one
	// in /run/systemd/system); see Object.TakesOver.
	TakeOver bool `json:"takeOver,omitempty"`
}

// RestartSpec is the restart policy of a service.
type RestartSpec struct {
	// Policy defaults to on-failure.
	Policy RestartPolicy `json:"policy,omitempty"`
	// Delay is RestartSec; default 100ms like systemd.
	Delay Duration    `json:"delay,omitempty"`
	Limit *StartLimit `json:"limit,omitempty"`
}

// StartLimit is StartLimitBurst / StartLimitIntervalSec.
type StartLimit struct {
	Burst    int      `json:"burst"`
	Interval Duration `json:"interval"`
}

// Check is a health check run before the main command.
type Check struct {
	Command []string `json:"command"`
	// Retries is how many times a failed check is tried again (0: once only).
	Retries int `json:"retries,omitempty"`
	// Delay between tries; default 1s.
	Delay Duration `json:"delay,omitempty"`
}

// ServiceWatchdog makes a service Type=notify with WatchdogSec.
type ServiceWatchdog struct {
	Timeout Duration `json:"timeout"`
	// NotifyAccess is main (default) or all (pings come from children).
	NotifyAccess string `json:"notifyAccess,omitempty"`
}

// Logs says where stdout/stderr go; default the journal (systemd) or the
// agent's own output with a NAME: prefix (process backend).
type Logs struct {
	Stdout string `json:"stdout,omitempty"`
	Stderr string `json:"stderr,omitempty"`
	// MaxSize and MaxBackups rotate log files in the process backend
	// (systemd appends and leaves rotation to logrotate). MaxSize is a size
	// like "10M"; default 10M, 3 backups.
	MaxSize    string `json:"maxSize,omitempty"`
	MaxBackups *int   `json:"maxBackups,omitempty"`
}

// Resources are cgroup limits.
type Resources struct {
	MemoryMax string `json:"memoryMax,omitempty"`
	CPUQuota  string `json:"cpuQuota,omitempty"`
	TasksMax  int    `json:"tasksMax,omitempty"`
}

// HostSelector selects hosts by hostname glob and/or labels. Both parts must
// match when both are given; within Names any glob may match.
type HostSelector struct {
	Names  []string          `json:"names,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Alert configures restart-storm alerts.
type Alert struct {
	Restarts int      `json:"restarts"`
	Within   Duration `json:"within"`
	Command  []string `json:"command,omitempty"`
}

// TimerSpec is the spec of kind Timer; it renders NAME.timer and, for an
// inline command, NAME.service.
type TimerSpec struct {
	Description     string   `json:"description,omitempty"`
	Schedule        []string `json:"schedule,omitempty"`
	OnBoot          Duration `json:"onBoot,omitempty"`
	OnUnitActive    Duration `json:"onUnitActive,omitempty"`
	Persistent      bool     `json:"persistent,omitempty"`
	RandomizedDelay Duration `json:"randomizedDelay,omitempty"`
	// Accuracy is AccuracySec; default 1s (systemd's own default, 1min, makes short timers late).
	Accuracy    Duration `json:"accuracy,omitempty"`
	CatchUp     CatchUp  `json:"catchUp,omitempty"`
	MaxLateness Duration `json:"maxLateness,omitempty"`

	// Command is an inline oneshot job; Service names a Service object instead.
	Command          []string          `json:"command,omitempty"`
	Service          string            `json:"service,omitempty"`
	User             string            `json:"user,omitempty"`
	Group            string            `json:"group,omitempty"`
	WorkingDirectory string            `json:"workingDirectory,omitempty"`
	Environment      map[string]string `json:"environment,omitempty"`
	Retry            *Retry            `json:"retry,omitempty"`
	Lock             string            `json:"lock,omitempty"`
	Logs             *Logs             `json:"logs,omitempty"`
	// Enabled defaults to true; a disabled timer is stopped.
	Enabled *bool                        `json:"enabled,omitempty"`
	Drift   DriftPolicy                  `json:"drift,omitempty"`
	Hosts   *HostSelector                `json:"hosts,omitempty"`
	Systemd map[string]map[string]string `json:"systemd,omitempty"`
	// TakeOver: as ServiceSpec.TakeOver, for the timer and its job.
	TakeOver bool `json:"takeOver,omitempty"`
}

// Retry is how an inline timer job retries: Attempts is the total number of
// tries (3 = the first run plus two retries), Delay the pause between them.
type Retry struct {
	Attempts int      `json:"attempts"`
	Delay    Duration `json:"delay,omitempty"`
}

// WatchdogSpec is the host watchdog (kind Watchdog; at most one per host).
type WatchdogSpec struct {
	RuntimeTimeout Duration      `json:"runtimeTimeout,omitempty"`
	RebootTimeout  Duration      `json:"rebootTimeout,omitempty"`
	Device         string        `json:"device,omitempty"`
	Hosts          *HostSelector `json:"hosts,omitempty"`
}

// TakesOver reports whether the object may replace units of its names that
// systemd has from elsewhere (spec.takeOver). Without it such a unit is a
// ForeignUnitConflict and resil writes nothing for the object. With it,
// resil writes its own unit to the unit directory (/etc/systemd/system),
// which systemd loads instead of the vendor file, and pruning removes only
// that file, so the vendor unit is in force again.
func (o *Object) TakesOver() bool {
	switch {
	case o.Service != nil:
		return o.Service.TakeOver
	case o.Timer != nil:
		return o.Timer.TakeOver
	}
	return false
}

// IsEnabled reports the effective enabled flag (default true).
func (s *ServiceSpec) IsEnabled() bool { return s.Enabled == nil || *s.Enabled }

// RestartPolicy returns the effective restart policy (default on-failure).
func (s *ServiceSpec) RestartPolicy() RestartPolicy {
	if s.Restart == nil || s.Restart.Policy == "" {
		return RestartOnFailure
	}
	return s.Restart.Policy
}

// ActiveOnExec reports whether the rendered unit is active as soon as its
// main process has exec'd: Type=exec (no watchdog, so not notify; no
// passthrough Type= but exec or simple) and no ExecStartPost= (a startup
// probe, or one given through the passthrough). Then "activating" is only
// that exec window (observed.Unit.ExitedBeforeActive).
func (s *ServiceSpec) ActiveOnExec() bool {
	if s.Watchdog != nil || (s.Health != nil && s.Health.Startup != nil) {
		return false
	}
	svc := s.Systemd["Service"]
	if _, ok := svc["ExecStartPost"]; ok {
		return false
	}
	t, ok := svc["Type"]
	return !ok || t == "exec" || t == "simple"
}

// DesiredState reports the effective state (default running).
func (s *ServiceSpec) DesiredState() State {
	if s.State == "" {
		return StateRunning
	}
	return s.State
}

// IsEnabled reports the effective enabled flag (default true).
func (t *TimerSpec) IsEnabled() bool { return t.Enabled == nil || *t.Enabled }

// UnitName returns the main unit an object renders to ("" for Watchdog).
func (o *Object) UnitName() string {
	switch o.Kind {
	case KindService:
		return o.Metadata.Name + ".service"
	case KindTimer:
		return o.Metadata.Name + ".timer"
	}
	return ""
}

// UnitNames returns every unit an object of its kind and name can render,
// whatever its spec (Render gives the ones the spec renders now):
// NAME.service for a Service, NAME.timer and its inline job NAME.service
// for a Timer, none for a Watchdog (a manager drop-in). A unit file whose
// X-Resil-Object names the object under any other name was never written
// for it (a copy of one of its units): it is not the object's to prune.
func (o *Object) UnitNames() []string {
	switch o.Kind {
	case KindService:
		return []string{o.Metadata.Name + ".service"}
	case KindTimer:
		return []string{o.Metadata.Name + ".timer", o.Metadata.Name + ".service"}
	}
	return nil
}

// OwnedUnits returns the units o owns with its spec as it is: its own
// unit, and a timer's inline job (the job first: what fails a timer is its
// job). UnitNames is every name it could own whatever its spec.
func (o *Object) OwnedUnits() []string {
	if o.Kind == KindTimer && o.Timer != nil && o.Timer.Service == "" {
		return []string{o.Timer.TriggeredService(o.Metadata.Name), o.UnitName()}
	}
	if u := o.UnitName(); u != "" {
		return []string{u}
	}
	return nil
}

// TriggeredService returns the service unit a timer starts.
func (t *TimerSpec) TriggeredService(timerName string) string {
	if t.Service != "" {
		return t.Service + ".service"
	}
	return timerName + ".service"
}
