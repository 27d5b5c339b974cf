// Package actuators holds the steps the planner produces, as data, and the
// backends that execute them idempotently: systemd over D-Bus
// (actuators/systemd) and the built-in process supervisor
// (actuators/process). Every Apply re-checks before acting, so a retried or
// repeated step is harmless; the loop is level-triggered and may run any step
// again after a crash.
package actuators
