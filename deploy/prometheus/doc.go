// Package prometheus holds the fleet view of resil on Prometheus: alerting
// rules over the agents' metrics (rules.yml, unit-tested by promtool with
// rules_test.yml) and a Grafana dashboard (grafana-dashboard.json). It has
// no Go code; its tests run promtool and check the dashboard. The e2e
// test e2e.TestFleetPrometheusAlert runs a real Prometheus scraping two
// agents.
package prometheus
