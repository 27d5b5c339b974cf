package systemd

import (
	"errors"
	"fmt"
	"strings"

	"resil.dev/resil/actuators"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrNotOwned: the file at the step's path exists but does not carry
	// resil's ownership marker (or is not a regular file, e.g. a mask
	// symlink to /dev/null); resil neither removes nor overwrites it.
	ErrNotOwned = errors.New("not owned by resil")
	// ErrOutsideDirs: the step's path is not a file directly in the unit
	// directory, in a unit's drop-in directory, or in the manager drop-in
	// directory.
	ErrOutsideDirs = errors.New("path outside the managed directories")
	// ErrJobTimeout: systemd did not finish the job within the job timeout.
	// The job keeps running in systemd.
	ErrJobTimeout = actuators.ErrJobTimeout
	// ErrNoInstallInfo: the unit has no [Install] section, so it cannot be
	// enabled.
	ErrNoInstallInfo = errors.New("unit file has no installation config")
	// ErrReexecRequired: a manager property cannot be set at runtime
	// (WatchdogDevice is read-only over D-Bus); the owned manager drop-in
	// takes effect at the next daemon-reexec (or boot). See ReexecError for
	// which properties.
	ErrReexecRequired = errors.New("needs daemon-reexec")
	// ErrNotApplied: systemd accepted a manager property but reports
	// another value. systemd 252 treats 0 and infinity as "drop the runtime
	// override" and falls back to system.conf(.d); set such values in the
	// drop-in and daemon-reload instead.
	ErrNotApplied = errors.New("systemd kept another value")
	// ErrNotObserved: systemd accepted the step (the call returned, the job
	// finished "done") but reading the unit back does not show its effect:
	// an enable after which the unit file is not enabled on disk, a start
	// after which the unit is failed, a restart that started no new main
	// process. The step is reported as failed, never as a silent success.
	ErrNotObserved = actuators.ErrNotObserved
	// ErrUnknownOp: the step's op is not one this backend knows.
	ErrUnknownOp = errors.New("unknown op")
	// ErrInvalidStep: the step lacks a field its op needs, or a value is malformed.
	ErrInvalidStep = errors.New("invalid step")
)

// JobError is a unit job that finished with a result other than "done":
// "failed", "canceled", "timeout", "dependency", "skipped", "invalid",
// "assert", "unsupported", "collected", "once". Match it with errors.As.
type JobError struct {
	Unit   string
	Op     actuators.Op
	Result string
	// JobID is systemd's job number, for the journal.
	JobID int
}

var _ interface{ JobResult() string } = (*JobError)(nil) // reconcile's startMade asks

// JobResult is systemd's result of the job.
func (e *JobError) JobResult() string { return e.Result }

func (e *JobError) Error() string {
	return fmt.Sprintf("%s %s: job result %q", e.Op, e.Unit, e.Result)
}

// ReexecError lists the manager properties that did not take the requested
// value at runtime. It wraps ErrReexecRequired.
type ReexecError struct {
	// Props maps property name to the value requested.
	Props map[string]string
	// Current maps property name to the value systemd reports.
	Current map[string]string
}

func (e *ReexecError) Error() string {
	var parts []string
	for _, k := range sortedKeys(e.Props) {
		parts = append(parts, fmt.Sprintf("%s=%s (now %q)", k, e.Props[k], e.Current[k]))
	}
	return fmt.Sprintf("set manager %s: %v", strings.Join(parts, ", "), ErrReexecRequired)
}

func (e *ReexecError) Unwrap() error { return ErrReexecRequired }
