package desired

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// HealthSpec is spec.health of a service: probes of its running process.
type HealthSpec struct {
	// Startup: the start counts as done only once it passes.
	Startup *Probe `json:"startup,omitempty"`
	// Liveness: failing Failures times in a row restarts the service
	// (Action report: only recorded).
	Liveness *Probe `json:"liveness,omitempty"`
	// Readiness: shown by status and metrics, and gates rollouts.
	Readiness *Probe `json:"readiness,omitempty"`
}

// Probe is one health check, run every Interval. Exactly one of HTTP, TCP
// and Exec is set.
type Probe struct {
	HTTP *HTTPProbe `json:"http,omitempty"`
	// TCP is a host:port that must accept a connection.
	TCP string `json:"tcp,omitempty"`
	// Exec is an absolute argv run as the service's user; exit 0 passes.
	Exec []string `json:"exec,omitempty"`
	// Interval between attempts; default 10s (startup: 1s).
	Interval Duration `json:"interval,omitempty"`
	// Timeout bounds one attempt; default 1s. For a startup probe it is
	// the time the start may take until the probe passes; default 60s.
	Timeout Duration `json:"timeout,omitempty"`
	// Failures in a row that make the probe fail; default 3.
	Failures int `json:"failures,omitempty"`
	// Successes in a row that make a failed probe pass again; default 1.
	Successes int `json:"successes,omitempty"`
	// InitialDelay after the process started before the first attempt.
	InitialDelay Duration `json:"initialDelay,omitempty"`
	// Action of a failed liveness probe: restart (default) or report.
	Action ProbeAction `json:"action,omitempty"`
}

// HTTPProbe passes when a GET of URL answers with a status in Status.
type HTTPProbe struct {
	// URL is an http:// or https:// URL.
	URL string `json:"url"`
	// Status is the accepted status range, "200-399" by default; a single
	// code (204 or "204") or a range ("200-299").
	Status HTTPStatus `json:"status,omitempty"`
	// Headers are sent with the request.
	Headers map[string]string `json:"headers,omitempty"`
}

// HTTPStatus is an http probe's accepted status: a code or a range
// ("200-299"), see StatusRange. In a manifest a code may be a YAML integer
// (status: 204) as well as a string.
type HTTPStatus string

// UnmarshalJSON takes a string, or an integer as its decimal text.
func (s *HTTPStatus) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("http status: %w", err)
	}
	switch x := v.(type) {
	case string:
		*s = HTTPStatus(x)
		return nil
	case json.Number:
		if _, err := x.Int64(); err == nil {
			*s = HTTPStatus(x.String())
			return nil
		}
	case nil:
		return nil
	}
	return &json.UnmarshalTypeError{Value: jsonKindOf(v), Type: reflect.TypeOf(""), Offset: dec.InputOffset()}
}

// ProbeAction is what a failed liveness probe does.
type ProbeAction string

// Probe actions.
const (
	ProbeRestart ProbeAction = "restart"
	ProbeReport  ProbeAction = "report"
)

// Probe kinds, as in events and metrics.
const (
	ProbeStartup   = "startup"
	ProbeLiveness  = "liveness"
	ProbeReadiness = "readiness"
)

// Defaults of a probe.
const (
	DefaultProbeInterval        = 10 * time.Second
	DefaultStartupProbeInterval = time.Second
	DefaultProbeTimeout         = time.Second
	DefaultStartupProbeTimeout  = 60 * time.Second
	DefaultProbeFailures        = 3
	DefaultProbeSuccesses       = 1
)

// Effective returns the probe with its defaults filled in, for kind
// (ProbeStartup, ProbeLiveness or ProbeReadiness).
func (p Probe) Effective(kind string) Probe {
	if !p.Interval.IsSet() {
		p.Interval = Duration(DefaultProbeInterval.String())
		if kind == ProbeStartup {
			p.Interval = Duration(DefaultStartupProbeInterval.String())
		}
	}
	if !p.Timeout.IsSet() {
		p.Timeout = Duration(DefaultProbeTimeout.String())
		if kind == ProbeStartup {
			p.Timeout = Duration(DefaultStartupProbeTimeout.String())
		}
	}
	if p.Failures == 0 {
		p.Failures = DefaultProbeFailures
	}
	if p.Successes == 0 {
		p.Successes = DefaultProbeSuccesses
	}
	if p.Action == "" && kind == ProbeLiveness {
		p.Action = ProbeRestart
	}
	if p.HTTP != nil && p.HTTP.Status == "" {
		h := *p.HTTP
		h.Status = "200-399"
		p.HTTP = &h
	}
	return p
}

// StatusRange returns the accepted HTTP status codes [lo, hi] of s ("200",
// "200-299"; "" is 200-399).
func StatusRange(st HTTPStatus) (lo, hi int, err error) {
	s := string(st)
	if s == "" {
		return 200, 399, nil
	}
	a, b, isRange := strings.Cut(s, "-")
	lo, err = strconv.Atoi(a)
	if err != nil {
		return 0, 0, fmt.Errorf("bad status %q", s)
	}
	hi = lo
	if isRange {
		if hi, err = strconv.Atoi(b); err != nil {
			return 0, 0, fmt.Errorf("bad status %q", s)
		}
	}
	if lo < 100 || lo > 599 || hi < 100 || hi > 599 {
		return 0, 0, fmt.Errorf("status %q out of range 100-599", s)
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("status %q: the low code comes first, %d-%d", s, hi, lo)
	}
	return lo, hi, nil
}

var headerNameRE = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)

func (v *validator) health(p path, h *HealthSpec, s *ServiceSpec) {
	if h == nil {
		return
	}
	for _, k := range []struct {
		name  string
		probe *Probe
	}{{ProbeStartup, h.Startup}, {ProbeLiveness, h.Liveness}, {ProbeReadiness, h.Readiness}} {
		if k.probe != nil {
			v.probe(p.key(k.name), k.name, k.probe, s)
		}
	}
}

func (v *validator) probe(p path, kind string, pr *Probe, s *ServiceSpec) {
	before := len(v.probs)
	n := 0
	if pr.HTTP != nil {
		n++
		q := p.key("http")
		v.probeURL(q.key("url"), pr.HTTP.URL)
		if _, _, err := StatusRange(pr.HTTP.Status); err != nil {
			v.add(q.key("status"), "%v (want a code like 204 or a range like 200-299)", err)
		}
		for _, k := range sortedKeys(pr.HTTP.Headers) {
			if !headerNameRE.MatchString(k) {
				v.add(q.key("headers").key(k), "invalid header name %q", k)
				continue
			}
			if !v.text(q.key("headers").key(k), pr.HTTP.Headers[k]) {
				continue
			}
			if n := len(k) + 2 + len(pr.HTTP.Headers[k]); n > MaxProbeHeader {
				v.add(q.key("headers").key(k), "header is %d bytes (name: value); a probe header may have at most %d", n, MaxProbeHeader)
			}
		}
	}
	if pr.TCP != "" {
		n++
		host, port, err := net.SplitHostPort(pr.TCP)
		if pn, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || pn < 1 || pn > 65535 {
			v.add(p.key("tcp"), "want host:port like 127.0.0.1:8080, got %q", pr.TCP)
		} else {
			v.text(p.key("tcp"), pr.TCP)
		}
	}
	if len(pr.Exec) > 0 {
		n++
		if v.command(p.key("exec"), pr.Exec) && kind != ProbeStartup {
			// A transient unit's ExecStart= (systemd backend) or the
			// agent's own exec (process backend): the service command's
			// limits, with no environment of the manifest's.
			v.unitLine(p.key("exec"), "ExecStart", CommandLine(pr.Exec))
			v.execTotal(p.key("exec"), pr.Exec, nil)
		}
		if kind != ProbeStartup && s != nil {
			if keys := probeUnsharedKeys(s.Systemd["Service"]); len(keys) > 0 {
				v.add(p.key("exec"), "the service's systemd.Service %s would not apply to this probe (on systemd it runs as a transient unit with only the service's User= and Group=): use an http or tcp probe, or drop them", strings.Join(keys, ", "))
			}
		}
	}
	if n != 1 {
		v.add(p, "exactly one of http, tcp and exec is required, got %d", n)
	}
	v.duration(p.key("interval"), pr.Interval, 100*time.Millisecond, 24*time.Hour)
	v.duration(p.key("timeout"), pr.Timeout, 10*time.Millisecond, 24*time.Hour)
	v.duration(p.key("initialDelay"), pr.InitialDelay, 0, 24*time.Hour)
	// 0 is the Go value of a count left out (the default); given, it is
	// out of range like any other.
	if pr.Failures < 0 || pr.Failures > 1000 || v.explicitZero(p.key("failures")) {
		v.add(p.key("failures"), "must be between 1 and 1000, got %d", pr.Failures)
	}
	if pr.Successes < 0 || pr.Successes > 1000 || v.explicitZero(p.key("successes")) {
		v.add(p.key("successes"), "must be between 1 and 1000, got %d", pr.Successes)
	}
	if kind == ProbeStartup && pr.InitialDelay.IsSet() {
		e := pr.Effective(kind)
		if d, t := pr.InitialDelay.D(), e.Timeout.D(); d > 0 && t > 0 && d >= t {
			v.add(p.key("initialDelay"), "initial delay %s is not shorter than the startup timeout %s, which includes it: the probe could never pass (raise timeout)", pr.InitialDelay, e.Timeout)
		}
	}
	switch pr.Action {
	case "":
	case ProbeRestart, ProbeReport:
		if kind != ProbeLiveness {
			v.add(p.key("action"), "only a liveness probe has an action")
		}
	default:
		v.add(p.key("action"), "must be restart or report, got %q", pr.Action)
	}
	if kind == ProbeStartup && n == 1 && len(v.probs) == before {
		v.startupLine(p, pr, s)
	}
	if kind == ProbeStartup && s != nil && s.DesiredState() == StateStopped {
		v.add(p, "a stopped service has no start to probe")
	}
}

// Limits of an http probe's request.
const (
	// MaxProbeURL is the longest http probe URL, in bytes.
	MaxProbeURL = 8 << 10
	// MaxProbeHeader is the longest http probe header ("Name: value"), in bytes.
	MaxProbeHeader = 8 << 10
)

// probeCommandBound stands for the agent binary in a startup probe's
// ExecStartPost= line when its length is checked: the binary is the
// running agent's own path (RenderOptions.ProbeCommand), so the check
// counts the longest one (PATH_MAX - 1 bytes).
var probeCommandBound = "/" + strings.Repeat("x", PathMax-2)

// startupLine checks a valid startup probe as it is rendered: the
// ExecStartPost= line (the agent's probe command with the probe's
// arguments, `$` escaped), each argument, and what the exec passes with
// the service's environment, against the limits of the service command.
// Problems are reported at the probe's http, tcp or exec field.
func (v *validator) startupLine(p path, pr *Probe, s *ServiceSpec) {
	q := p.key("exec")
	switch {
	case pr.HTTP != nil:
		q = p.key("http")
	case pr.TCP != "":
		q = p.key("tcp")
	}
	argv := startupProbeArgv(probeCommandBound, *pr)
	for _, a := range argv {
		if !v.argLen(q, "a probe command argument", len(a)) {
			return
		}
	}
	if !v.unitLine(q, "ExecStartPost", CommandLine(argv)) {
		return
	}
	if s != nil {
		v.execTotal(q, argv, s.Environment, escapeEnv(s.Systemd)...)
	}
}

func (v *validator) probeURL(p path, s string) {
	if s == "" {
		v.add(p, "required, e.g. http://127.0.0.1:8080/healthz")
		return
	}
	if len(s) > MaxProbeURL {
		v.add(p, "URL is %d bytes; a probe URL may have at most %d", len(s), MaxProbeURL)
		return
	}
	if !v.text(p, s) {
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(p, "want an http:// or https:// URL with a host, got %q", s)
		return
	}
	if strings.ContainsAny(s, " \t") {
		v.add(p, "must not contain whitespace, got %q", s)
	}
}

// probeSharedKeys are the [Service] passthrough directives an exec
// liveness or readiness probe may do without: they do not narrow who the
// service's processes run as or what they can reach (User= and Group= are
// carried to the probe). Any other directive — DynamicUser=, Protect*=,
// Private*=, capabilities, system-call filters, paths — is
// isolation the probe, run beside the service rather than in it, would
// not get, so such a service must use an http or tcp probe (a startup
// probe runs in the service: ExecStartPost=).
var probeSharedKeys = map[string]bool{
	"Type": true, "Restart": true, "RestartSec": true, "RestartPreventExitStatus": true,
	"RestartForceExitStatus": true, "SuccessExitStatus": true, "TimeoutSec": true,
	"TimeoutStartSec": true, "TimeoutStopSec": true, "TimeoutAbortSec": true,
	"RuntimeMaxSec": true, "RuntimeRandomizedExtraSec": true, "WatchdogSec": true,
	"NotifyAccess": true, "RemainAfterExit": true, "GuessMainPID": true, "PIDFile": true,
	"ExecCondition": true, "ExecStartPre": true, "ExecStart": true, "ExecStartPost": true,
	"ExecReload": true, "ExecStop": true, "ExecStopPost": true,
	"KillMode": true, "KillSignal": true, "RestartKillSignal": true, "FinalKillSignal": true,
	"SendSIGKILL": true, "SendSIGHUP": true, "WatchdogSignal": true,
	"User": true, "Group": true,
	"Environment": true, "EnvironmentFile": true, "PassEnvironment": true, "UnsetEnvironment": true,
	"WorkingDirectory": true, "StandardInput": true, "StandardOutput": true, "StandardError": true,
	"SyslogIdentifier": true, "SyslogFacility": true, "SyslogLevel": true, "SyslogLevelPrefix": true,
	"LogLevelMax": true, "LogExtraFields": true, "LogRateLimitIntervalSec": true, "LogRateLimitBurst": true,
	"Nice": true, "CPUSchedulingPolicy": true, "CPUSchedulingPriority": true,
	"IOSchedulingClass": true, "IOSchedulingPriority": true, "OOMScoreAdjust": true, "OOMPolicy": true,
	"FileDescriptorStoreMax": true, "Slice": true,
	"CPUQuota": true, "CPUWeight": true, "StartupCPUWeight": true, "AllowedCPUs": true,
	"MemoryMin": true, "MemoryLow": true, "MemoryHigh": true, "MemoryMax": true, "MemorySwapMax": true,
	"TasksMax": true, "IOWeight": true, "StartupIOWeight": true,
	"CPUAffinity": true, "UMask": true, "SupplementaryGroups": true, "TimeoutStartFailureMode": true,
	"TimeoutStopFailureMode": true, "RuntimeDirectoryPreserve": true,
}

// probeSharedPrefixes are families of such directives: resource limits
// (rlimits, like the cgroup limits above, bound what the service uses, not
// what it may reach) and the directories systemd creates for it.
var probeSharedPrefixes = []string{"Limit", "RuntimeDirectory", "StateDirectory", "CacheDirectory", "LogsDirectory", "ConfigurationDirectory"}

// probeUnsharedKeys lists, sorted, the directives of a service's [Service]
// passthrough that are not in probeSharedKeys.
func probeUnsharedKeys(svc map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(svc) {
		shared := probeSharedKeys[k]
		for _, p := range probeSharedPrefixes {
			shared = shared || strings.HasPrefix(k, p)
		}
		if !shared {
			out = append(out, k)
		}
	}
	return out
}
