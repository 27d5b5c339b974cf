package reconcile

import (
	"sort"
	"strings"
	"testing"
)

// TestReasonCategories pins the one reason → category table: the drift
// reasons are the ones sd_notify's STATUS= counts as drift, the
// occurrences the ones the journal sends on every repeat.
func TestReasonCategories(t *testing.T) {
	by := map[Category][]string{}
	for _, r := range Reasons() {
		by[r.Category()] = append(by[r.Category()], string(r))
	}
	for c := range by {
		sort.Strings(by[c])
	}
	for c, want := range map[Category]string{
		CategoryDrift:      "DisabledOutOfBand EnablementDrift FileDeleted FileEdited ForeignDropIn OwnerConflict StartedOutOfBand StoppedOutOfBand TimerInactive",
		CategoryFailure:    "Failed ForeignUnitConflict ProbeError RolloutHalted StartLimitHit TimerFailed Unhealthy WatchdogTimeout",
		CategoryInvalid:    "InvalidManifest LastGoodRetained ManifestBusy RevisionInvalid RevisionRejected",
		CategoryOccurrence: "AlertHookFailed Applied ApplyFailed FetchFailed LeaseExpired ManifestValid NotStayedUp Pruned RestartStorm Restarted Resumed RevisionDeployed RolloutComplete RolloutResumed RolloutStarted",
		CategoryInformational: "BackoffHeldBack CacheDrift DaemonReexecNeeded DriftReported Exited FolderNotRead NoWatchdogDevice Paused PruneBlocked PrunePending " +
			"RolloutPending StaleProcess TimerCatchUp TimerMissed Unsupported",
	} {
		if got := strings.Join(by[c], " "); got != want {
			t.Errorf("%s: %s, want %s", c, got, want)
		}
	}
	if c := Reason("SomethingElse").Category(); c != CategoryInformational {
		t.Errorf("unknown reason: %s", c)
	}
}
