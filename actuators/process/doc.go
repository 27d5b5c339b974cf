// Package process is resil's process backend: where systemd is not PID 1
// (containers, CI) the agent itself supervises the units, like supervisord,
// runit or s6, from the same manifests and the same planner as systemd.
// Level-triggered: the planner observes (Supervisor.Observe), plans and
// applies idempotent steps (Applier); the supervisor only calls
// Options.Wake when a unit changes state. Restarting a crashed unit is the
// supervisor's job, as it is systemd's, decided by a Nomad-style Tracker.
// Processes outlive the agent; a new agent adopts them (adopt.go).
//
// Files of the package, by role:
//
//	supervisor.go       Supervisor: New, Run, Release (starts held until the first pass), commands to units, shutdown
//	supervisor_load.go  loading unit files; adoption and stale processes at Run
//	table.go            the process table (processes.json), crash-safe: intent (or,
//	                    for an automatic restart, the previous row's reservation)
//	                    before fork, group-committed writes (replaceFile: temp, fsync, rename),
//	                    each row encoded once per change
//	preintent.go        a batch of starts: every intent in one table write before the forks
//	adopt.go            launch markers, /proc scan, intents and strays
//	reset.go            reset requests (RequestReset)
//	unit.go             a unit: its spec, status and commands
//	runner.go           a service's goroutine: phases (diagram, phase x command table)
//	runner_start.go     start: limit, lock, preStart checks, spawn
//	runner_exit.go      stop and exit: signals, retries, Tracker decision
//	runner_notify.go    sd_notify messages and the watchdog
//	runner_adopt.go     taking over a process; pidfd exit watch
//	tracker.go          restart decisions (no I/O, injected clock)
//	timer.go            timer units and their jobs
//	spawn.go, reaper.go fork/exec with identity and FIFOs; the wait4 reaper
//	notify.go, logs.go  NOTIFY_SOCKET; output copiers and log files
//	render.go, supported.go  unit files (Spec as JSON); what is refused
//	observe.go, snapshot.go  Observe: live, or offline for diff (status.json)
//	applier.go          planner steps; proc.go /proc readers
//	batch.go            BatchApplier: file and runtime steps of many units at once
//	reloadonly.go       what a running process depends on (procHash, ClassifyChange)
//	runner_probe.go     the startup probe in the start phase (spec.health.startup)
//
// State dir: units/NAME.service|.timer (rendered, ownership header + JSON),
// units/NAME.enabled, supervisor-id (0600 secret), processes.json, status.json,
// run/NAME.<id>.out[|.err] (output FIFOs; .err only for a stderr file of its own), run/NAME.notify, timers/NAME.timer.stamp,
// reset/NAME. The state dir and run/ are 0711.
//
// Differences from systemd are listed in the README (process backend).
//
// Why Observe is here and not in observed/process: it returns observed
// types (a types-only package), and it reads the supervisor's in-memory
// unit status, status.json, the process table and /proc under the
// supervisor's locks. Moving it out would need either those internals
// exported or a second struct mirroring observed.Unit field by field plus
// a copy, and the package's own tests (which observe through it) would
// have to change their types, since they cannot import a package that
// imports this one. The edge actuators/process -> observed only names types;
// the observation it stands for is tested against apply's in
// cmd/reconciler (TestProcessBackendDiffObservesLikeApply).
package process
