package reconcile

// Reason constants for drift and failure findings; they end up in events.
const (
	ReasonFileEdited    = "FileEdited"
	ReasonForeignDropIn = "ForeignDropIn"
	ReasonStopped       = "StoppedOutOfBand"
	ReasonFailed        = "Failed"
	ReasonStartLimitHit = "StartLimitHit"
	ReasonWatchdog      = "WatchdogTimeout"
	ReasonDisabled      = "DisabledOutOfBand"
	// ReasonStaleProcess: the unit file matches but the running process was
	// started from an older version of it (a restart was lost).
	ReasonStaleProcess     = "StaleProcess"
	ReasonConflict         = "ForeignUnitConflict"
	ReasonTimerFailed      = "TimerFailed"
	ReasonTimerInactive    = "TimerInactive"
	ReasonUnsupported      = "Unsupported"
	ReasonNoWatchdogDev    = "NoWatchdogDevice"
	ReasonHeldBack         = "BackoffHeldBack"
	ReasonInvalid          = "InvalidManifest"
	ReasonApplied          = "Applied"
	ReasonApplyFailed      = "ApplyFailed"
	ReasonPruned           = "Pruned"
	ReasonLastGoodRetained = "LastGoodRetained"
	ReasonDriftReported    = "DriftReported"
	ReasonTimerMissed      = "TimerMissed"
	// ReasonTimerCatchUp: a persistent timer is about to run a missed run late.
	ReasonTimerCatchUp = "TimerCatchUp"
	// ReasonReexecNeeded: a manager setting (WatchdogDevice) takes effect only
	// after `systemctl daemon-reexec`, which the agent never does by itself.
	ReasonReexecNeeded = "DaemonReexecNeeded"
	// Restart ledger and storm alerts (cmd/reconciler records them).
	ReasonRestarted       = "Restarted"
	ReasonRestartStorm    = "RestartStorm"
	ReasonAlertHookFailed = "AlertHookFailed"
)
