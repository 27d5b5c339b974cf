package e2e

// Issue 15's fleet view on a real Prometheus: two agents (process backend,
// on the host), scraped by Prometheus with the shipped rules
// (deploy/prometheus/rules.yml); a crash-looping service on one host fires
// ResilRestartStorm for that host and object only.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/internal/syncbuf"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestFleetPrometheusAlert(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		sandbox.Missing(t, "prometheus (Debian package prometheus; scripts/test-deps.sh installs it)")
	}
	rules, err := filepath.Abs("../deploy/prometheus/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	crash := `apiVersion: resil.dev/v1
kind: Service
metadata: {name: crasher}
spec:
  command: ["/bin/sh", "-c", "sleep 0.3; exit 3"]
  restart: {policy: always, delay: 100ms, limit: {burst: 10000, interval: 10s}}
`
	steady := `apiVersion: resil.dev/v1
kind: Service
metadata: {name: steady}
spec:
  command: ["/bin/sleep", "infinity"]
`
	hosts := map[string]string{"a": crash, "b": steady}
	addrs := map[string]string{}
	for name, manifest := range hosts {
		dir := t.TempDir()
		m := filepath.Join(dir, "m")
		if err := os.Mkdir(m, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(m, "svc.yaml"), []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		addrs[name] = freeAddr(t)
		startProcAgent(t, m, filepath.Join(dir, "state"), "--metrics-addr", addrs[name], "--stop-on-exit")
	}

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: resil
    static_configs:
      - targets: [%q, %q]
`, rules, addrs["a"], addrs["b"])
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	web := freeAddr(t)
	cmd := exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	out := new(syncbuf.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})

	get := func(path string, v any) bool {
		resp, err := http.Get("http://" + web + path)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && json.Unmarshal(b, v) == nil
	}
	// Both agents scraped.
	waitFor(t, "both agents up in Prometheus", 60*time.Second, func() bool {
		var r struct {
			Data struct {
				Result []struct {
					Value []any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if !get("/api/v1/query?query=sum(up%7Bjob%3D%22resil%22%7D)", &r) || len(r.Data.Result) != 1 {
			return false
		}
		return r.Data.Result[0].Value[1] == "2"
	})
	start := time.Now()
	type alert struct {
		Labels map[string]string `json:"labels"`
		State  string            `json:"state"`
	}
	var firing []alert
	waitFor(t, "ResilRestartStorm firing", 90*time.Second, func() bool {
		var r struct {
			Data struct {
				Alerts []alert `json:"alerts"`
			} `json:"data"`
		}
		if !get("/api/v1/alerts", &r) {
			return false
		}
		firing = nil
		for _, a := range r.Data.Alerts {
			if a.Labels["alertname"] == "ResilRestartStorm" && a.State == "firing" {
				firing = append(firing, a)
			}
		}
		return len(firing) > 0
	})
	t.Logf("ResilRestartStorm fired %s after both agents were scraped", time.Since(start).Round(100*time.Millisecond))
	for _, a := range firing {
		if a.Labels["instance"] != addrs["a"] || a.Labels["object"] != "Service/crasher" {
			t.Errorf("alert for the wrong host or object: %v (crasher runs on %s)", a.Labels, addrs["a"])
		}
	}
}
