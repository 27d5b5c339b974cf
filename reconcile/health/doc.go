// Package health runs the probes of spec.health (startup, liveness,
// readiness) and turns their results into a per-unit health state.
//
// Files:
//
//	check.go    one attempt of an http, tcp or exec probe (Checker)
//	tracker.go  consecutive results -> passing/failing (Tracker: no I/O,
//	            no clock; a state diagram in its comment)
//	prober.go   the probe loops of every running unit, owned by Run
//	targets.go  Targets: the probes to run for an observed state
//	until.go    Until: one startup probe, tried until it passes or times out
//
// Where probes run. A startup probe is rendered into what runs the service
// (systemd: an ExecStartPost= that waits for it; the process backend: the
// supervisor's start phase), so ordering of other units waits for a
// healthy start even when the agent is down. Liveness and readiness
// probes run here, in the agent: they need the agent to act on them (a
// restart recorded in the ledger, a rollout gated) and to report them
// (status, metrics). A failure count lives in memory only: an agent that
// restarts begins every probe afresh after its initial delay, which can
// delay a liveness restart by up to failures × interval but can never
// turn into a restart storm, and the probes of every running unit start
// again with the agent's first pass.
package health
