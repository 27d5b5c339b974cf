// Package observed declares the plain data (State, Unit, Manager) a backend
// fills with what it read of the host, for the pure planner. It only
// declares types (state.go) and reads nothing: the readers are
// observed/systemd (D-Bus, files, /sys) and the process supervisor's
// Observe (actuators/process). Observations are level-triggered: every
// pass re-reads everything it needs; subscriptions only wake the loop and
// are never trusted as state.
package observed
