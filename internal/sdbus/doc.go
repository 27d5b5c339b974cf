// Package sdbus is resil's one connection to systemd over D-Bus, shared by
// observed/systemd (reads) and actuators/systemd (writes). It holds no
// state about units: each consumer declares the small interface it needs,
// and *Conn satisfies them all.
//
// Files:
//   - conn.go: Conn (the property pipe, and go-systemd's *dbus.Conn with
//     the raw connection under it, one for its calls and signals, dialed
//     on first use and again once closed), Dial (private socket as root,
//     else the system bus; it dials the pipe only, so a read-only command
//     costs PID 1 one connection), DialBus and DialPrivate, Wire (message
//     counters), manager properties with a context (read on the pipe), and
//     WatchUnitSignals.
//   - godbus.go: the go-systemd methods the consumers use (jobs, unit
//     files, transient units), each dialing the go-systemd connection if
//     it is not yet; a unit's single property is read on the pipe (on
//     the watch's connection while a watch runs).
//   - watch.go: WatchUnitSignals on the private socket: a connection of
//     its own read by one goroutine, headers parsed, only the observer's
//     signals decoded, reads gathered a few ms (a reload's thousands of
//     signals in a few reads, not a wake-up each). While it runs it also
//     carries the daemon-reloads (the idle pipe closed first), the jobs
//     and the small reads (a ListUnitsByNames, one Get), its reader
//     handing each reply and JobRemoved to its caller: during a reload
//     the agent is one connection of systemd's, not two, and the
//     applier's checks after a job dial none (an observation's reads, the
//     manager's properties and GetUnitPropertiesContext still take a
//     pipe). Whoever receives the watch's signals must not wait for a call
//     of the same Conn. The go-systemd connection is then dialed only for
//     the rarer calls and closed after godbusIdle unused (conn.go).
//   - blocking.go: the watch connection moved out of Go's network poller
//     (blockingConn): PID 1 writes each signal to it as it emits it, and
//     through the poller each write woke the runtime, gathering or not.
//   - jobs.go: RunJobsContext, start/stop/restart jobs queued together and
//     awaited by their JobRemoved, on the private socket on the watch's
//     connection or else the pipe (there the go-systemd connection would
//     decode every unit's signal queued after a daemon-reload before the
//     job's reply), through
//     go-systemd on a bus; RunJobsWith, the same over go-systemd-style
//     calls. A restart's ExecMainStartTimestamp before the job
//     (Job.MainStartBefore) is read by a Get written with the job's call.
//   - props.go, pipe.go: GetUnitPropertiesContext, the named properties of
//     many units by Properties.Get calls pipelined on a connection of
//     their own (the property pipe: a hand-written encoder and a decoder of
//     the few value types unit properties have, at most 100 calls in
//     flight, all on the calling goroutine). The pipe's handshake waits for
//     systemd to answer a Ping (sd-bus swallows a small first message sent
//     right after BEGIN).
//   - list.go: ListUnitsByNamesContext on the pipe (on the watch's
//     connection while a watch runs), decoded by hand, and
//     the pipe's argument-less call.
//   - pipepool.go: one pipe kept for the calls of an observation, closed
//     250 ms after the last (systemd sends every signal to every peer of
//     its private socket, so an idle pipe would make PID 1 queue them);
//     Prewarm, which dials it ahead of need; ReloadContext, the
//     daemon-reload on the watch's connection or else the pipe (each
//     skips the signal per unit systemd sends before the reply, which
//     godbus would decode first).
//   - busreload.go: a command's daemon-reload (no watch running) through
//     the system bus daemon when there is one, the private idle pipe
//     closed first: PID 1 sends every unit's signals to each peer of its
//     private socket but none to the bus while nobody there subscribed.
//     The few jobs queued right after it (busJobsMax) go the same way,
//     their JobRemoved through a match rule. Without a bus daemon, the
//     private socket as before.
//   - cost_test.go: what PID 1 spends per call of each kind, on the bus
//     and on the private socket (by hand, RESIL_BENCH=1): the figures
//     behind the choices above.
//   - text.go: D-Bus values and paths as text: PropertyText (a property as
//     observed.Manager.Properties holds it), UnitNameFromPath, and the
//     PropertiesChanged signal name.
//   - sdbustest/: Fake, an in-memory systemd for unit tests of the
//     consumers (fake.go), and DialSandbox, a Conn to a sandboxed systemd,
//     the real thing to test against when in doubt (sandbox.go).
//
// The caller owns one long-lived connection and closes it; never open one
// per pass. The host cannot use a sandbox's private socket (systemd resets
// peers outside its PID namespace): host-side tests use DialBus on
// "/proc/PID/root/run/dbus/system_bus_socket".
package sdbus
