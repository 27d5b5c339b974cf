package reconcile

import "strings"

// Reason names what a finding or an event is about. Each reason has one
// Category; the consumers (status, sd_notify STATUS=, metrics, the
// journal) decide by category, never by a list of their own.
type Reason string

// Category groups reasons by what they say about an object.
type Category string

// Reason categories.
const (
	// CategoryDrift: the host differs from a manifest because of a change
	// made outside resil (a file edited, a foreign drop-in, a unit stopped,
	// disabled or inactive out of band). README "Drift" defines it.
	CategoryDrift Category = "drift"
	// CategoryFailure: a unit failed, a step failed, or a foreign unit
	// blocks the object.
	CategoryFailure Category = "failure"
	// CategoryInvalid: a manifest is broken; the last good version stays.
	CategoryInvalid Category = "invalid"
	// CategoryOccurrence: something happened once (a step applied, a
	// restart, a storm); an event, not a standing condition.
	CategoryOccurrence Category = "occurrence"
	// CategoryInformational: everything else worth knowing: the agent's
	// own decisions (a stale process restarted, a missed timer run, a
	// held-back step) and limits of the host or backend.
	CategoryInformational Category = "informational"
)

// Reason constants for drift and failure findings; they end up in events.
const (
	ReasonFileEdited    Reason = "FileEdited"
	ReasonForeignDropIn Reason = "ForeignDropIn"
	ReasonStopped       Reason = "StoppedOutOfBand"
	// ReasonFileDeleted: an owned unit file was deleted out of band while
	// the backend still has the unit loaded from it.
	ReasonFileDeleted Reason = "FileDeleted"
	// ReasonStarted: a service wanted stopped was found active (started
	// by hand, or by a unit that wants it).
	ReasonStarted       Reason = "StartedOutOfBand"
	ReasonFailed        Reason = "Failed"
	ReasonStartLimitHit Reason = "StartLimitHit"
	ReasonWatchdog      Reason = "WatchdogTimeout"
	ReasonDisabled      Reason = "DisabledOutOfBand"
	// ReasonEnablementDrift: an enabled unit's links are not where its
	// [Install] section puts them (one added or removed by hand).
	ReasonEnablementDrift Reason = "EnablementDrift"
	// ReasonStaleProcess: the unit file matches but the running process was
	// started from an older version of it (a restart was lost).
	ReasonStaleProcess Reason = "StaleProcess"
	ReasonConflict     Reason = "ForeignUnitConflict"
	// ReasonOwnerConflict: a unit file carries a desired object's
	// X-Resil-Object marker under a name that object never renders (a
	// copy of one of its units): not the object's, never pruned; reported
	// until the copy's marker line is removed.
	ReasonOwnerConflict    Reason = "OwnerConflict"
	ReasonTimerFailed      Reason = "TimerFailed"
	ReasonTimerInactive    Reason = "TimerInactive"
	ReasonUnsupported      Reason = "Unsupported"
	ReasonNoWatchdogDev    Reason = "NoWatchdogDevice"
	ReasonHeldBack         Reason = "BackoffHeldBack"
	ReasonInvalid          Reason = "InvalidManifest"
	ReasonApplied          Reason = "Applied"
	ReasonApplyFailed      Reason = "ApplyFailed"
	ReasonPruned           Reason = "Pruned"
	ReasonLastGoodRetained Reason = "LastGoodRetained"
	ReasonDriftReported    Reason = "DriftReported"
	ReasonTimerMissed      Reason = "TimerMissed"
	// ReasonTimerCatchUp: a persistent timer is about to run a missed run late.
	ReasonTimerCatchUp Reason = "TimerCatchUp"
	// ReasonExited: a service's process exited by itself with status 0 and
	// its restart policy (on-failure, never) does not restart it: done,
	// not drift; the agent does not start it again until its manifest
	// changes.
	ReasonExited Reason = "Exited"
	// ReasonReexecNeeded: a manager setting (WatchdogDevice) takes effect only
	// after `systemctl daemon-reexec`, which the agent never does by itself.
	ReasonReexecNeeded Reason = "DaemonReexecNeeded"
	// ReasonBusy: a manifest or drop-in was open for writing when read, so it
	// was not read; what it holds keeps its last good version.
	ReasonBusy Reason = "ManifestBusy"
	// Restart ledger and storm alerts (reconcile/ledger records them).
	ReasonRestarted       Reason = "Restarted"
	ReasonRestartStorm    Reason = "RestartStorm"
	ReasonAlertHookFailed Reason = "AlertHookFailed"
	// Operator safety rails (issue 14): pause leases, the mass-prune
	// guard and delayed prune.
	ReasonPaused       Reason = "Paused"
	ReasonResumed      Reason = "Resumed"
	ReasonLeaseExpired Reason = "LeaseExpired"
	ReasonPruneBlocked Reason = "PruneBlocked"
	ReasonPrunePending Reason = "PrunePending"
	// ReasonUnhealthy: a running service failed its liveness probe
	// spec.health.liveness.failures times in a row (restarted, or only
	// reported with action report).
	ReasonUnhealthy Reason = "Unhealthy"
	// ReasonProbeError: the agent cannot run a service's probe (its own
	// sandbox refuses the connection or the user switch, an unknown user):
	// no verdict on the service, which is neither restarted nor ready.
	ReasonProbeError Reason = "ProbeError"
	// ReasonRolloutPending: a changed running service keeps its previous
	// version until its rollout wave (informational).
	ReasonRolloutPending Reason = "RolloutPending"
	// ReasonRolloutHalted: a failed service halts the rollout; the pending
	// services keep running their previous version.
	ReasonRolloutHalted Reason = "RolloutHalted"
	// ReasonRolloutStarted, ReasonRolloutComplete: a rollout's first wave
	// was admitted; every service it restarted is ready (or let pass).
	// ReasonRolloutResumed: `reconciler rollout resume` let failures pass.
	ReasonRolloutStarted  Reason = "RolloutStarted"
	ReasonRolloutComplete Reason = "RolloutComplete"
	ReasonRolloutResumed  Reason = "RolloutResumed"
	// The git source (desired/gitsource): a revision was deployed (the
	// manifests directory switched to it), refused (unsigned, badly signed,
	// or not descending from the deployed one), or not deployed because its
	// manifests do not validate. Refused and invalid revisions leave the
	// deployed one in force as a whole.
	ReasonRevisionDeployed Reason = "RevisionDeployed"
	ReasonRevisionRejected Reason = "RevisionRejected"
	ReasonRevisionInvalid  Reason = "RevisionInvalid"
	// ReasonFetchFailed: an attempt of the git source failed before it
	// could judge the head (the fetch itself, or a local file it needs
	// refused or unreadable); the deployed revision stays. Recorded when a
	// failure starts or its message changes, not on every retry.
	ReasonFetchFailed Reason = "FetchFailed"
	// ReasonCacheDrift: a full read (the resync) found a unit different
	// from the backend's watch-fed cache: a change whose signal was missed.
	ReasonCacheDrift Reason = "CacheDrift"
	// ReasonFolderNotRead: a subfolder of the manifests directory that is
	// not a NAME.d drop-in folder: manifests in it are not read.
	ReasonFolderNotRead Reason = "FolderNotRead"
	// ReasonNotStayedUp: a unit `apply` started or restarted was failed,
	// or between automatic restarts, when read right after the pass's
	// steps: its process exited although systemd reported the start done
	// (NotStayedUp).
	ReasonNotStayedUp Reason = "NotStayedUp"
	// ReasonManifestValid: an object held at its last good version (or
	// left as it was) because its manifest was invalid, busy or empty is
	// applied from its manifest again.
	ReasonManifestValid Reason = "ManifestValid"
)

// categories is the one table of reason → category.
var categories = map[Reason]Category{
	ReasonFileEdited:      CategoryDrift,
	ReasonForeignDropIn:   CategoryDrift,
	ReasonStopped:         CategoryDrift,
	ReasonFileDeleted:     CategoryDrift,
	ReasonStarted:         CategoryDrift,
	ReasonDisabled:        CategoryDrift,
	ReasonEnablementDrift: CategoryDrift,
	ReasonTimerInactive:   CategoryDrift,
	ReasonOwnerConflict:   CategoryDrift,

	ReasonFailed:        CategoryFailure,
	ReasonStartLimitHit: CategoryFailure,
	ReasonWatchdog:      CategoryFailure,
	ReasonTimerFailed:   CategoryFailure,
	ReasonConflict:      CategoryFailure,
	ReasonUnhealthy:     CategoryFailure,
	ReasonProbeError:    CategoryFailure,
	ReasonRolloutHalted: CategoryFailure,

	ReasonInvalid:          CategoryInvalid,
	ReasonLastGoodRetained: CategoryInvalid,
	ReasonBusy:             CategoryInvalid,
	ReasonRevisionRejected: CategoryInvalid,
	ReasonRevisionInvalid:  CategoryInvalid,

	// ApplyFailed is an occurrence (one event per failed step); the object
	// it names is Failed in the status (StatusOf counts failed steps).
	ReasonApplied:     CategoryOccurrence,
	ReasonPruned:      CategoryOccurrence,
	ReasonApplyFailed: CategoryOccurrence,
	// NotStayedUp too: apply's event; the after read's plan reports the
	// unit failed.
	ReasonNotStayedUp:      CategoryOccurrence,
	ReasonRestarted:        CategoryOccurrence,
	ReasonRestartStorm:     CategoryOccurrence,
	ReasonAlertHookFailed:  CategoryOccurrence,
	ReasonRevisionDeployed: CategoryOccurrence,
	ReasonFetchFailed:      CategoryOccurrence,
	ReasonResumed:          CategoryOccurrence,
	ReasonLeaseExpired:     CategoryOccurrence,
	ReasonRolloutStarted:   CategoryOccurrence,
	ReasonRolloutComplete:  CategoryOccurrence,
	ReasonRolloutResumed:   CategoryOccurrence,
	ReasonManifestValid:    CategoryOccurrence,

	ReasonStaleProcess:   CategoryInformational,
	ReasonRolloutPending: CategoryInformational,
	ReasonUnsupported:    CategoryInformational,
	ReasonNoWatchdogDev:  CategoryInformational,
	ReasonHeldBack:       CategoryInformational,
	ReasonDriftReported:  CategoryInformational,
	ReasonTimerMissed:    CategoryInformational,
	ReasonTimerCatchUp:   CategoryInformational,
	ReasonExited:         CategoryInformational,
	ReasonReexecNeeded:   CategoryInformational,
	ReasonPaused:         CategoryInformational,
	ReasonPruneBlocked:   CategoryInformational,
	ReasonPrunePending:   CategoryInformational,
	ReasonCacheDrift:     CategoryInformational,
	ReasonFolderNotRead:  CategoryInformational,
}

// Category returns the reason's category; a reason this package does not
// define (another package's) is informational.
func (r Reason) Category() Category {
	if c, ok := categories[r]; ok {
		return c
	}
	return CategoryInformational
}

// ParseReason returns the reason this package defines whose name is s in
// any case (failed: Failed); false when it defines none.
func ParseReason(s string) (Reason, bool) {
	for r := range categories {
		if strings.EqualFold(string(r), s) {
			return r, true
		}
	}
	return "", false
}

// Reasons returns every reason this package defines.
func Reasons() []Reason {
	out := make([]Reason, 0, len(categories))
	for r := range categories {
		out = append(out, r)
	}
	return out
}
