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
		{"bad status", &HealthSpec{Liveness: &Probe{HTTP: &HTTPProbe{URL: "http://a/", Status: "299-200"}}}, running, []string{"spec.health.liveness.http.status: status \"299-200\" out of range"}},
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
