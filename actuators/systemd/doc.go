// Package systemd applies actuators.Steps to systemd: unit files and the
// manager drop-in on disk, and units and manager properties over D-Bus.
//
// Every Apply re-checks before acting and is idempotent: a step that
// already took effect returns (actuators.Unchanged, nil), so the
// level-triggered loop may retry any step after a failure or a crash.
//
// The caller owns one long-lived connection (observed/systemd.Dial) shared
// with the Observer; the Applier never dials.
package systemd
