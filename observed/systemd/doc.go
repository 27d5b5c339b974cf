// Package systemd observes systemd over D-Bus for the planner: the state of
// the units the desired set renders plus every unit file in the unit
// directory that carries resil's ownership marker (prune candidates), the
// bytes of those files and of their drop-ins, and the manager's watchdog
// settings.
//
// It is level-triggered: Observe re-reads everything on every pass.
// Subscribe only wakes the loop when a managed unit changes state; its
// signals are hints, never state.
//
// The caller owns one long-lived connection (internal/sdbus.Dial) and
// passes it to both this package and actuators/systemd. Never open a
// connection per pass.
//
// Reaching a sandboxed systemd from the host (tests): systemd refuses its
// private socket /run/systemd/private to a peer outside its PID namespace
// (the peer's PID reads as 0), so host-side tests dial the sandbox's system
// bus with sdbus.DialBus("/proc/PID/root/run/dbus/system_bus_socket"), which does
// EXTERNAL auth then Hello(). Paths systemd reports (FragmentPath,
// DropInPaths) are inside the sandbox; WithRoot("/proc/PID/root") makes
// Observe read them from the host.
package systemd
