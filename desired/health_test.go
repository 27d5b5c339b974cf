package desired

import (
	"strings"
	"testing"
)

func TestValidateHealth(t *testing.T) {
	running := &ServiceSpec{}
	stopped := &ServiceSpec{State: StateStopped}
	tests := []struct {
		name string
		h    *HealthSpec
		s    *ServiceSpec
		want []string // "path: substring", in order; none: valid
	}{
		{"all three kinds", &HealthSpec{
			Startup:   &Probe{HTTP: &HTTPProbe{URL: "http://127.0.0.1:8080/healthz"}, Timeout: "60s"},
			Liveness:  &Probe{TCP: "127.0.0.1:8080", Interval: "10s", Timeout: "2s", Failures: 3},
			Readiness: &Probe{Exec: []string{"/usr/local/bin/check-ready"}, Interval: "5s"},
		}, running, nil},
		{"http status and headers", &HealthSpec{Liveness: &Probe{HTTP: &HTTPProbe{URL: "https://[::1]:8443/h", Status: "200-299", Headers: map[string]string{"Host": "web"}}, Action: ProbeReport}}, running, nil},
		{"none of the three", &HealthSpec{Liveness: &Probe{Interval: "1s"}}, running, []string{"spec.health.liveness: exactly one of http, tcp and exec is required, got 0"}},
		{"two of them", &HealthSpec{Readiness: &Probe{TCP: "a:1", Exec: []string{"/bin/true"}}}, running, []string{"spec.health.readiness: exactly one"}},
		{"bad url", &HealthSpec{Liveness: &Probe{HTTP: &HTTPProbe{URL: "ftp://x/"}}}, running, []string{"spec.health.liveness.http.url: want an http:// or https:// URL"}},
		{"missing url", &HealthSpec{Liveness: &Probe{HTTP: &HTTPProbe{}}}, running, []string{"spec.health.liveness.http.url: required"}},
		{"bad status", &HealthSpec{Liveness: &Probe{HTTP: &HTTPProbe{URL: "http://a/", Status: "299-200"}}}, running, []string{"spec.health.liveness.http.status: status \"299-200\": the low code comes first, 200-299"}},
		{"status out of range", &HealthSpec{Liveness: &Probe{HTTP: &HTTPProbe{URL: "http://a/", Status: "200-600"}}}, running, []string{"spec.health.liveness.http.status: status \"200-600\" out of range 100-599"}},
		{"header injection", &HealthSpec{Liveness: &Probe{HTTP: &HTTPProbe{URL: "http://a/", Headers: map[string]string{"X": "a\nb"}}}}, running, []string{"spec.health.liveness.http.headers.X:"}},
		{"bad header name", &HealthSpec{Liveness: &Probe{HTTP: &HTTPProbe{URL: "http://a/", Headers: map[string]string{"X Y": "a"}}}}, running, []string{"invalid header name"}},
		{"bad tcp", &HealthSpec{Liveness: &Probe{TCP: "8080"}}, running, []string{"spec.health.liveness.tcp: want host:port"}},
		{"tcp port range", &HealthSpec{Liveness: &Probe{TCP: "a:70000"}}, running, []string{"spec.health.liveness.tcp: want host:port"}},
		{"relative exec", &HealthSpec{Liveness: &Probe{Exec: []string{"check"}}}, running, []string{"spec.health.liveness.exec[0]: must be an absolute path"}},
		{"durations", &HealthSpec{Liveness: &Probe{TCP: "a:1", Interval: "1ms", Timeout: "x", InitialDelay: "-1s"}}, running,
			[]string{"spec.health.liveness.interval: duration 1ms out of range", "spec.health.liveness.timeout: invalid duration", "spec.health.liveness.initialDelay: duration -1s out of range"}},
		{"thresholds", &HealthSpec{Liveness: &Probe{TCP: "a:1", Failures: -1, Successes: 1001}}, running,
			[]string{"spec.health.liveness.failures: must be between 1 and 1000", "spec.health.liveness.successes: must be between 1 and 1000"}},
		{"action on readiness", &HealthSpec{Readiness: &Probe{TCP: "a:1", Action: ProbeReport}}, running, []string{"spec.health.readiness.action: only a liveness probe"}},
		{"bad action", &HealthSpec{Liveness: &Probe{TCP: "a:1", Action: "kill"}}, running, []string{"spec.health.liveness.action: must be restart or report"}},
		{"startup of a stopped service", &HealthSpec{Startup: &Probe{TCP: "a:1"}}, stopped, []string{"spec.health.startup: a stopped service has no start"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &validator{}
			v.health(path{"spec", "health"}, tt.h, tt.s)
			var got []string
			for _, p := range v.probs {
				got = append(got, p.p.String()+": "+p.detail)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i := range got {
				if !strings.Contains(got[i], tt.want[i]) {
					t.Errorf("problem %d: %q, want it to contain %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestProbeEffective(t *testing.T) {
	s := Probe{HTTP: &HTTPProbe{URL: "http://a/"}}.Effective(ProbeStartup)
	if s.Interval.D().String() != "1s" || s.Timeout.D().String() != "1m0s" || s.Failures != 3 || s.Successes != 1 || s.HTTP.Status != "200-399" || s.Action != "" {
		t.Fatalf("startup defaults: %+v", s)
	}
	l := Probe{TCP: "a:1", Failures: 5}.Effective(ProbeLiveness)
	if l.Interval.D().String() != "10s" || l.Timeout.D().String() != "1s" || l.Failures != 5 || l.Action != ProbeRestart {
		t.Fatalf("liveness defaults: %+v", l)
	}
}

// TestProbeValues: probe fields as written in a manifest. A status may be
// a YAML integer; a count given as 0 is out of range (left out, it is the
// default); a startup probe's initial delay must leave time for its
// timeout, which includes it.
func TestProbeValues(t *testing.T) {
	svc := func(health string) string {
		return "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  command: [/bin/true]\n  health:\n" + health
	}
	for _, tc := range []struct {
		name, manifest string
		want           string       // error lines, "" for none
		check          func(*Probe) // on success: the liveness or startup probe
	}{
		{"status an integer", svc("    liveness: {http: {url: 'http://a/', status: 204}}\n"), "",
			func(p *Probe) {
				if lo, hi, err := StatusRange(p.HTTP.Status); p.HTTP.Status != "204" || lo != 204 || hi != 204 || err != nil {
					t.Errorf("status %q: %d-%d, %v", p.HTTP.Status, lo, hi, err)
				}
			}},
		{"status a string", svc("    liveness: {http: {url: 'http://a/', status: '200-299'}}\n"), "",
			func(p *Probe) {
				if p.HTTP.Status != "200-299" {
					t.Errorf("status %q", p.HTTP.Status)
				}
			}},
		{"status an integer out of range", svc("    liveness: {http: {url: 'http://a/', status: 99}}\n"),
			`m.yaml:7:41: spec.health.liveness.http.status: status "99" out of range 100-599 (want a code like 204 or a range like 200-299)`, nil},
		{"status a float", svc("    liveness: {http: {url: 'http://a/', status: 204.5}}\n"),
			"m.yaml:7:41: spec.health.liveness.http.status: expected a string, got number", nil},
		{"status a list", svc("    liveness: {http: {url: 'http://a/', status: [204]}}\n"),
			"m.yaml:7:41: spec.health.liveness.http.status: expected a string, got array", nil},
		{"counts left out are the defaults", svc("    liveness: {tcp: 'localhost:1'}\n"), "",
			func(p *Probe) {
				if e := p.Effective(ProbeLiveness); e.Failures != DefaultProbeFailures || e.Successes != DefaultProbeSuccesses {
					t.Errorf("effective failures %d, successes %d", e.Failures, e.Successes)
				}
			}},
		{"counts null are the defaults", svc("    liveness: {tcp: 'localhost:1', failures: ~, successes: null}\n"), "", nil},
		{"counts of 1", svc("    liveness: {tcp: 'localhost:1', failures: 1, successes: 1}\n"), "", nil},
		{"failures 0", svc("    liveness: {tcp: 'localhost:1', failures: 0}\n"),
			"m.yaml:7:36: spec.health.liveness.failures: must be between 1 and 1000, got 0", nil},
		{"successes 0", svc("    readiness: {tcp: 'localhost:1', successes: 0}\n"),
			"m.yaml:7:37: spec.health.readiness.successes: must be between 1 and 1000, got 0", nil},
		{"startup delay shorter than its timeout", svc("    startup: {tcp: 'localhost:1', initialDelay: 9s, timeout: 10s}\n"), "", nil},
		{"startup delay as long as its timeout", svc("    startup: {tcp: 'localhost:1', initialDelay: 10s, timeout: 10s}\n"),
			"m.yaml:7:35: spec.health.startup.initialDelay: initial delay 10s is not shorter than the startup timeout 10s, which includes it: the probe could never pass (raise timeout)", nil},
		{"startup delay beyond its timeout", svc("    startup: {tcp: 'localhost:1', initialDelay: 5m, timeout: 10s}\n"),
			"m.yaml:7:35: spec.health.startup.initialDelay: initial delay 5m is not shorter than the startup timeout 10s, which includes it: the probe could never pass (raise timeout)", nil},
		{"startup delay beyond the default timeout", svc("    startup: {tcp: 'localhost:1', initialDelay: 2m}\n"),
			"m.yaml:7:35: spec.health.startup.initialDelay: initial delay 2m is not shorter than the startup timeout 1m0s, which includes it: the probe could never pass (raise timeout)", nil},
		{"liveness delay beyond its timeout", svc("    liveness: {tcp: 'localhost:1', initialDelay: 5m, timeout: 10s}\n"), "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"m.yaml": tc.manifest})
			set, err := Load(dir, Options{Host: testHost, Insecure: true})
			if got := strings.TrimSpace(errorLines(t, err, dir)); got != tc.want {
				t.Fatalf("errors:\n got %s\nwant %s", got, tc.want)
			}
			if tc.check != nil {
				h := set.Objects["Service/s"].Service.Health
				p := h.Liveness
				if p == nil {
					p = h.Startup
				}
				tc.check(p)
			}
		})
	}
}
