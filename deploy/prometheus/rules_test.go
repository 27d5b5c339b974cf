package prometheus

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"resil.dev/resil/e2e/sandbox"
)

func promtool(t *testing.T, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		sandbox.Missing(t, "promtool (Debian package prometheus; scripts/test-deps.sh installs it)")
	}
	out, err := exec.Command("promtool", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestRulesValid(t *testing.T) { promtool(t, "check", "rules", "rules.yml") }

func TestRulesUnit(t *testing.T) { promtool(t, "test", "rules", "rules_test.yml") }

// metricRE finds resil's metric names in an expression.
var metricRE = regexp.MustCompile(`\bresil_[a-z_]+\b`)

// The dashboard is valid JSON, every panel has a query, and every metric it
// queries is one the agent exports.
func TestDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	src, err := os.ReadFile("../../cmd/reconciler/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`Name: "(resil_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		exported[m[1]] = true
	}
	if len(exported) < 5 {
		t.Fatalf("found %d metric names in metrics.go; the pattern is stale", len(exported))
	}
	if len(d.Panels) < 4 {
		t.Fatalf("%d panels", len(d.Panels))
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range metricRE.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
				if !exported[base] {
					t.Errorf("panel %q queries %s, which the agent does not export", p.Title, m)
				}
			}
		}
	}
}

// Every metric the rules use is one the agent exports.
func TestRulesMetricsExported(t *testing.T) {
	rules, err := os.ReadFile("rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("../../cmd/reconciler/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range metricRE.FindAllString(string(rules), -1) {
		if !strings.Contains(string(src), `"`+m+`"`) {
			t.Errorf("rules.yml uses %s, which the agent does not export", m)
		}
	}
}
