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
//	units/NAME.service, units/NAME.timer  rendered specs (Render): ownership header
//	                                      (X-Resil-Object, X-Resil-Source, X-Resil-Hash) + JSON
//	units/NAME.enabled                    enable marker: started when the agent starts
//	supervisor-id                         the supervisor ID, a random secret (0600)
//	processes.json                        process table (0600): unit, pid, start time, hash of
//	                                      the unit file the process was started from, launch
//	                                      ID, and whether (and why: stop or restart) it is
//	                                      being stopped
//	status.json                           unit status snapshot for read-only observers (diff)
//	run/NAME.<id>.out|.err                stdout/stderr FIFOs of a running process
//	run/NAME.notify                       NOTIFY_SOCKET of a watchdog (Type=notify) service
//	timers/NAME.timer.stamp               last trigger of a timer (persistent catch-up)
//	reset/NAME                            reset requests (RequestReset)
//
// The state dir and run/ are 0711: nobody else may list them, but a unit's
// user reaches its notify socket.
//
// Processes outlive the agent: a new agent adopts every process whose PID
// and /proc start time match the table (watching it with a pidfd, since it
// is not its child), re-opens its output FIFOs and re-binds its notify
// socket; what it cannot adopt it stops before starting anew. The table is
// crash-safe whatever instant the agent is killed: a main process's row is
// written (temp file, fsync, rename; one writer at a time) as an intent,
// PID 0, before the fork, and with its PID after. Every child carries
// INVOCATION_ID (the launch ID, as systemd sets it), RESIL_UNIT and
// RESIL_SUPERVISOR (the supervisor ID) in its environment: on start the
// agent scans /proc/*/environ, resolves an intent to the launch's group
// leader (or to the process holding its stdout FIFO, should it have
// rewritten its environment), and stops every marked process that is not of
// an adopted launch (strays: a lost row, an orphaned pre-start check). A
// marked process counts only when its real and effective UIDs are root or
// its unit's user (anyone may copy an environment); a stray's group is
// signalled only when its leader is of the same launch, otherwise the stray
// alone, and never a group none of the strays is still in (a reused ID).
// (The first agent after an upgrade from hash-derived IDs also accepts
// those.) A row being stopped when the agent was killed is finished: a
// stop stands even when the process exited meanwhile (the unit is not
// started again), a restart is completed. It also removes temporary files
// and FIFOs a killed agent left behind. Ready is closed only once every
// unit has its first status (adopted processes active), so the agent's
// first pass never takes an adopted service for stopped: it neither starts
// it again nor prunes it without a stop. So a
// service whose manifest did not change keeps its PID across any number of
// kill -9s, and none runs twice.
//
// A running process keeps the spec it was started from. Its table row and
// status record the hash of that unit file, and Observe (live, or offline
// from status.json and the table for diff) sets observed.Unit.StaleProcess
// when the file on disk is newer: the planner restarts it (a restart lost
// when the agent was killed between writing the file and restarting). The
// supervisor never restarts a stale process on its own, so diff shows the
// restart before apply runs it.
//
// Render refuses (actuators.ErrUnsupported: an Unsupported finding, the
// object not applied, the manifest invalid on this backend) whatever the
// supervisor cannot honour: spec.requires,
// spec.resources, spec.stateDirectory, and spec.systemd directives outside
// an allowlist (Unit Description/Documentation/After/Before/Wants, Service
// User/Group/WorkingDirectory mapped onto the spec, Install WantedBy). A
// manifest never runs here with less isolation than it asks for.
//
// Output: stdout and stderr are FIFOs the child holds open read-write, so a
// write never fails with EPIPE while no agent reads (it blocks once 64 KiB
// are buffered); copiers write whole lines to a lumberjack file (rotated by
// maxSize/maxBackups; stderr follows stdout unless logs.stderr is set) or to
// Options.Output as "NAME: line"; a last line without newline is flushed at
// exit. Children: own process group (stop signals the group; what is left
// of the group after the main process exits is killed, like
// KillMode=control-group), setuid/setgid from user/group, stdin /dev/null,
// lock as an inherited flock'd fd 3 (held for the process's life, also
// across agent restarts). One reaper calls wait4, for registered PIDs only,
// so exec.Cmd.Wait elsewhere in the agent keeps working; with
// Options.Subreaper (forced as PID 1) it also reaps orphans with
// wait4(-1), and then nothing else in the process may wait for children
// and only one Supervisor may run per process.
//
// sd_notify: NOTIFY_SOCKET is a unixgram socket with SO_PASSCRED, so each
// datagram carries the sender's PID; WATCHDOG_USEC is set like systemd does
// (WATCHDOG_PID is not: the PID is unknown before fork, and sd_watchdog_enabled
// accepts its absence). A notify service is started on READY=1; WATCHDOG=1
// re-arms the watchdog; on expiry the group gets SIGABRT, then SIGKILL after
// the stop timeout, Result is "watchdog" and the restart policy applies.
// BARRIER=1 file descriptors are closed at once, so systemd-notify(1) never
// waits on us.
//
// NotifyAccess=main accepts only datagrams from the main PID, all accepts any
// process of the main process's group (a sender that already exited cannot
// be checked and is accepted). systemd-notify(1) (systemd 252, as here) sends
// READY=1/WATCHDOG=1 with its parent's PID in the credentials when it may
// (as root), so a shell that is itself the main process works under main;
// anything else - a non-root shell worker, a helper process, systemd-notify
// run from a subshell - needs NotifyAccess=all. That is the same on systemd
// and here, so a manifest means the same on both backends; for shell workers,
// use notifyAccess: all.
//
// Timer jobs: a timer's trigger is ignored while its job is not idle (never
// two runs at once). retry: {attempts, delay} retries within one run, as
// the loop the systemd backend renders into ExecStart: between attempts the
// job stays activating (a trigger is ignored), no restart is counted, and
// after the last attempt it fails with that attempt's result (exit-code).
// A job has no start limit: its schedule is the timer's business.
//
// Differences from systemd worth knowing: the start-limit window starts
// afresh when the agent restarts (NRestarts does not: it is kept in the
// process table, and a process that died while no agent ran is started
// again as an automatic restart); an adopted process's exit
// status is unknown unless it is still our child (Result "unknown", treated
// as a failure by restart policies); AccuracySec is not applied (timers fire
// on time); a failed preStart check fails the unit without restarting it;
// onUnitActive counts from the timer's last trigger; the notify socket path
// (<stateDir>/run/NAME.service.notify) must fit in 107 bytes.
package process
