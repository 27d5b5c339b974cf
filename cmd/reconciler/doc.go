// Command reconciler is resil's agent and CLI: it keeps a host converged on
// the resil.dev/v1 manifests in a directory (default /etc/resil.d), over
// systemd (D-Bus) or its built-in process supervisor.
//
//	reconciler run        the agent: level-triggered loop, watch, resync
//	reconciler apply      one pass, then exit (0 converged, 1 a step failed)
//	reconciler diff       what apply would do (0 none, 1 changes, 2 error)
//	reconciler validate   check manifests (0 valid, 1 invalid, 2 usage)
//	reconciler render     print the unit files the manifests render to
//	reconciler reset      clear a unit's failed/start-limit state
//	reconciler status     desired vs observed per object from the agent's store (0 converged, 1 drift/failure)
//	reconciler events     the agent's recorded events (--since, --object, --type, -o json, --watch)
//	reconciler probe      try a health probe until it passes or times out (rendered startup probes run it)
//	reconciler sync       ask the agent's git source to fetch now (--source git)
//	reconciler pause      withhold an object's changes for a while (--for, --reason); resume ends it
//	reconciler prune      list what the mass-prune guard holds back; --confirm lets it through once
//	reconciler schema     the JSON Schema of resil.dev/v1 manifests
//	reconciler install    install the agent as a hardened systemd service and start it (--dry-run prints the plan)
//	reconciler version    print the version
//
// run keeps its events, restart ledger and status snapshot in
// <state-dir>/events.db (SQLite, WAL; see resil.dev/resil/reconcile/store),
// sends events to the journal with RESIL_* fields, and serves Prometheus
// metrics, /healthz and /readyz on --metrics-addr (127.0.0.1:9469).
// run and apply keep the last good desired objects in
// <state-dir>/lastgood.json (reconcile.LastGoodFile), so a restarted agent
// keeps in force what the killed one kept; diff only reads it.
//
// This package parses flags, wires packages and prints; the domain logic
// lives in reconcile (planning, reasons, object states) and
// reconcile/ledger (restarts, storm alerts, hooks). Files:
//
//	main.go            root command, global flags, logger, exit codes, version
//	backend*.go        choosing and opening a backend; openCommand (signal context, logger, lock, backend)
//	run.go, apply.go, diff.go, validate.go, render.go, status.go, events.go, install.go: one command each
//	telemetry.go       run's after-pass wiring: ledger.Keeper, status snapshot, metrics, --metrics-addr etc.
//	metrics.go         Prometheus metrics, /healthz, /readyz
//	sdnotify.go        READY=1, STATUS=, WATCHDOG=1 (sd_notify)
//	health.go          run's liveness/readiness probes (reconcile/health.Prober) and their wiring
//	probe.go           `reconciler probe`: a startup probe, as rendered ExecStartPost= run it
//	notes.go           timer notes in diff output and the timer-run log
//	lock.go            the state-dir flock; testhook.go: a crash hook for tests
//	console.go         --log-format console: one aligned line per step and event (a zap core)
//	schema.go          `reconciler schema`; debugpprof.go: pprof on the metrics listener (RESIL_DEBUG_PPROF=1),
//	                   a CPU profile of one command (RESIL_CPUPROFILE=file)
//	codepages_linux.go releaseCodePages: the executable's read-only pages dropped after quiet (memtrim.go)
//	memtrim.go         run: the heap a pass grew goes back to the kernel once the agent is quiet
//	pause.go, safety.go, diff_safety.go, status_safety.go: pause leases, the prune guard and grace
//	                   (the commands, the flags, and their lines in diff and status)
//	rollout.go, status_rollout.go: `rollout status|resume`, the waves in diff, the rollout in status
//	source.go          the git source's wiring (resil.dev/resil/desired/gitsource): run's --source
//	                   flags, sync, the deployed revision in status and diff, diff --revision, its metrics
package main
