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
// with the Observer; the Applier never dials. A file is replaced or removed
// only when it carries resil's ownership marker (internal/ownmark); only
// WithOverwriteForeign lets a write replace a foreign file (adoption).
//
// Files:
//   - applier.go: Client (the slice of *sdbus.Conn it uses), Applier, its
//     options (OwnJobs: the observer told about the Applier's own jobs,
//     reloads and unit-file changes), Apply's dispatch by Op, daemon-reload.
//   - files.go: write and remove owned unit files and drop-ins (atomic,
//     foreign files refused), RemoveTempFiles.
//   - units.go: enable, disable, start/stop/restart jobs and their
//     read-back, reset-failed.
//   - batch.go: ApplyBatch (reconcile.BatchApplier): one EnableUnitFiles
//     or DisableUnitFiles for a pass's steps of that op, jobs queued
//     together and collected from JobRemoved.
//   - manager.go: set manager properties at runtime, ParseUSec.
//   - stamp.go: OpRefreshStamp, the mtime of a persistent timer's stamp
//     file (so a late start does not fire a missed run).
//   - errors.go: the sentinel errors, JobError, ReexecError.
//   - transient.go: ProbeRunner, exec health probes as transient oneshot
//     units with the service's User=/Group=.
package systemd
