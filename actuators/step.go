package actuators

import (
	"context"
	"errors"
	"fmt"
)

// ErrUnsupported is wrapped by a backend's render error when an object asks
// for something that backend cannot honour (a directive, an isolation or
// resource setting). The object is not applied there: the reconciler
// reports an Unsupported finding and never starts it with less than it asks.
var ErrUnsupported = errors.New("not supported by this backend")

// Refusal is one field of an object a backend cannot honour, and why.
type Refusal struct {
	Field  string // e.g. "spec.requires"
	Reason string
}

// Refusals returns the fields an ErrUnsupported error names (one with a
// Refused() []Refusal method in its chain), nil for any other error: they
// are reported at the line that sets each.
func Refusals(err error) []Refusal {
	var r interface{ Refused() []Refusal }
	if errors.As(err, &r) {
		return r.Refused()
	}
	return nil
}

// ErrNotObserved is wrapped by a backend's step error when the backend
// accepted the step (for a job: it finished "done") but reading the unit
// back does not show its effect (actuators/systemd.ErrNotObserved).
var ErrNotObserved = errors.New("effect not observed afterwards")

// ErrJobTimeout: the backend did not see a job it queued finish within its
// job timeout; the job goes on (systemd's applier re-exports it).
var ErrJobTimeout = errors.New("job did not finish in time")

// Op is what a step does.
type Op string

// Step operations. Every backend implements all of them; a backend for which
// an op means nothing (DaemonReload in the process backend re-reads its
// specs) still treats it as a safe, idempotent step.
const (
	OpWriteFile    Op = "write"
	OpRemoveFile   Op = "remove"
	OpDaemonReload Op = "daemon-reload"
	OpEnable       Op = "enable"
	OpDisable      Op = "disable"
	OpStart        Op = "start"
	OpStop         Op = "stop"
	OpRestart      Op = "restart"
	OpResetFailed  Op = "reset-failed"
	// OpSetManager sets systemd manager properties (host watchdog) at runtime.
	OpSetManager Op = "set-manager"
	// OpRefreshStamp sets a persistent timer's stamp file (Path) to now,
	// before the timer starts, so systemd does not fire a run missed by more
	// than maxLateness. Props["missed"] is the missed run (µs since the
	// epoch): a stamp already at or after it means the run happened or was
	// skipped, and the step does nothing. systemd only.
	OpRefreshStamp Op = "refresh-stamp"
)

// Step is one idempotent action, as data. Plan produces steps; diff prints
// them; apply executes them. Nothing else decides what happens.
type Step struct {
	Op Op `json:"op"`
	// Object is the manifest object ID ("Service/worker") the step serves.
	Object string `json:"object,omitempty"`
	// Unit is the unit name ("worker.service") for unit ops.
	Unit string `json:"unit,omitempty"`
	// Path is the absolute file path for write/remove.
	Path string `json:"path,omitempty"`
	// Data is the full new content for write (from unit.Serialize: same input, same bytes).
	Data []byte `json:"-"`
	// Old is the content observed before, for diffs (nil: file absent).
	Old []byte `json:"-"`
	// Props are manager properties for OpSetManager (name → value as text).
	Props map[string]string `json:"props,omitempty"`
	// Reason says why, e.g. "content differs", "inactive, want active".
	Reason string `json:"reason"`
}

// String is shared by diff, events and logs.
func (s Step) String() string {
	target := s.Unit
	if s.Op == OpWriteFile || s.Op == OpRemoveFile {
		target = s.Path
	}
	if s.Op == OpDaemonReload {
		return fmt.Sprintf("daemon-reload (%s)", s.Reason)
	}
	if target == "" {
		target = s.Object
	}
	return fmt.Sprintf("%s %s (%s)", s.Op, target, s.Reason)
}

// Result says whether a step changed anything, like controllerutil.OperationResult.
type Result string

// Results.
const (
	Unchanged Result = "unchanged"
	Changed   Result = "changed"
)

// Applier executes steps. Apply re-checks before acting and is idempotent:
// retrying a step that already took effect returns (Unchanged, nil).
type Applier interface {
	Apply(ctx context.Context, s Step) (Result, error)
}
