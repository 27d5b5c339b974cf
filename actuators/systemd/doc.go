// Package systemd applies actuators.Steps to systemd: unit files and the
// manager drop-in on disk, and units and manager properties over D-Bus.
//
// Every Apply re-checks before acting and is idempotent: a step that
// already took effect returns (actuators.Unchanged, nil), so the
// level-triggered loop may retry any step after a failure or a crash.
//
// Every Apply also reads its effect back: enablement from the files on disk
// (ListUnitFilesByPatterns), a unit's state after its job, a new main
// process after a restart. A step systemd accepted whose effect is not
// seen fails with ErrNotObserved, never a silent success.
//
// The caller owns one long-lived connection (internal/sdbus.Dial) shared
// with the Observer; the Applier never dials.
package systemd
