// Package systemd observes systemd over D-Bus for the planner: the state of
// the units the desired set renders plus every unit file in the unit
// directory that carries resil's ownership marker (prune candidates, read
// with internal/ownmark), the bytes of those files and of their drop-ins,
// and the manager's watchdog settings.
//
// It is level-triggered: without a running Subscribe (apply, diff) Observe
// re-reads everything on every pass. Subscribe wakes the loop when a
// managed unit changes state, except for the agent's own jobs (JobQueued,
// fed by actuators/systemd.WithOwnJobs: one pass per edit), and when the
// unit files change out of band: inotify on the unit directory and its
// .wants/.requires/.upholds and NAME.d directories (a hand edit, rm or new
// file tells systemd nothing until a reload, so no signal would come) plus
// the manager's UnitFilesChanged and Reloading(false) signals (systemctl
// enable/disable/mask/unmask and daemon-reload, --runtime ones in /run
// too, which inotify does not see). Both are hints that wake; the agent's
// own writes, enables, disables and reloads (OwnFiles) do not, while an
// operator's change made during them still does (ownfiles.go). While it
// runs feeds a cache (cache.go): Observe then reads the properties only of
// the units a signal, a status change or a file change marked, and
// ObserveFull (the loop's resync) reads everything and reports where the
// cache was wrong (State.CacheDrift). apply keeps its pass's reads in that
// cache with no watch (KeepReads) for its status read after acting, which
// then asks one ExecMainStartTimestamp per cached service in place of the
// signals.
//
// The caller owns one long-lived connection (internal/sdbus.Dial) and
// passes it to both this package and actuators/systemd. Never open a
// connection per pass.
//
// Reaching a sandboxed systemd from the host (tests): systemd refuses its
// private socket to a peer outside its PID namespace, so host-side tests
// dial the sandbox's system bus with
// sdbus.DialBus("/proc/PID/root/run/dbus/system_bus_socket"). Paths systemd
// reports (FragmentPath, DropInPaths) are inside the sandbox;
// WithRoot("/proc/PID/root") makes Observe read them from the host.
//
// Files:
//   - observer.go: Client (the slice of *sdbus.Conn it uses), Observer and
//     its options, Observe (list, properties, owned-file scan, files and
//     drop-ins, stamps), HasUnitSuffix, Queryable. A service's or timer's
//     properties are the few fillUnit reads, by pipelined Gets
//     (sdbus.Conn.GetUnitPropertiesContext); other units, or every unit
//     WithGetAll, one GetAll each. Without the watch-fed cache the Gets
//     every read asks go out right after ListUnitsByNames, while the
//     search path is listed (earlyProps); NeedDaemonReload and
//     DropInPaths follow only where the disk does not tell
//     (loadedAsOnDisk, dropInsFromDisk), and a running service's Result
//     is success without asking (resultWhileRunning). FragmentPath is
//     asked only of a loaded unit with no file and a reload pending
//     (readFragments: a file deleted since the load, FileDeleted).
//   - enablement.go: enablement from the UnitFileState property where the
//     dependency symlinks on disk confirm it, ListUnitFilesByPatterns for
//     the rest.
//   - unitfiles.go: what the files on disk say beyond D-Bus: enablement,
//     vendor units and their drop-ins, whether systemd needs a reload, and
//     whether a running process predates its unit file (stale). A unit
//     whose files all changed before systemd's last unit load has no
//     reload pending, and its NeedDaemonReload (the dearest property) is
//     not asked for (loadedAsOnDisk in observer.go).
//   - manager.go: manager watchdog properties, the owned manager drop-in,
//     the watchdog devices in sysfs.
//   - subscribe.go: Watcher and Subscribe (wake-ups from PropertiesChanged).
//   - ownjobs.go: JobQueued, the agent's own jobs whose signals do not wake.
//   - unitwatch.go: Subscribe's watch of the unit files (inotify, the
//     manager's UnitFilesChanged and Reloading, disk checks), OwnFiles.
//   - ownfiles.go: ownFiles, which of those hints are the agent's own.
//   - cache.go: the watch-fed cache of unit properties, ObserveFull's drift
//     check, Reloaded, ChangeSeq (whether anything signalled since).
package systemd
