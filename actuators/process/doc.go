// Package process is resil's process backend: where systemd is not PID 1
// (containers, CI), the agent itself supervises the units, like
// supervisord, runit or s6, driven by the same manifests and the same
// planner as the systemd backend.
//
// The package is level-triggered like the rest of resil: the planner
// observes (Supervisor.Observe), plans, and applies idempotent steps
// (Applier.Apply); the supervisor only calls Options.Wake when a unit
// changes state, so the loop plans again. Restarting a crashed unit is the
// supervisor's own job, as it is systemd's: a Nomad-style Tracker decides
// restarts with an injected clock.
//
// Files, all under the state dir:
//
//	units/NAME.service, units/NAME.timer  rendered specs (Render): ownership header + JSON
//	units/NAME.enabled                    enable marker: started when the agent starts
//	processes.json                        process table: unit, pid, start time, spec hash
//	run/NAME.<id>.out|.err                stdout/stderr FIFOs of a running process
//	run/NAME.notify                       NOTIFY_SOCKET of a watchdog (Type=notify) service
//	timers/NAME.timer.stamp               last trigger of a timer (persistent catch-up)
//	reset/NAME                            reset requests (RequestReset)
//
// Processes outlive the agent: a new agent adopts every process whose PID
// and /proc start time match the table (watching it with a pidfd, since it
// is not its child), re-opens its output FIFOs and re-binds its notify
// socket; what it cannot adopt it stops before starting anew.
//
// sd_notify: NOTIFY_SOCKET is a unixgram socket with SO_PASSCRED. With
// NotifyAccess=main only datagrams whose sender PID is the main PID count.
// systemd-notify(1) sends from its own PID, so a shell worker that pings
// with "systemd-notify WATCHDOG=1" needs NotifyAccess=all - on systemd and
// here alike (or, as root, "systemd-notify --pid=$$ ..." which makes the
// kernel stamp the shell's PID). Under all, a sender that already exited
// cannot be checked and is accepted.
package process
