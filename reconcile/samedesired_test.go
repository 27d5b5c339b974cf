package reconcile

import (
	"context"
	"strings"
	"testing"
)

// TestSameDesired: a dry-run pass with SameDesired plans against the
// manifests the previous pass loaded (apply's status read after its
// steps); without it, against what is on disk now. Only a dry run reuses
// them, and a reused pass keeps them for the next.
func TestSameDesired(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      Options
		wantSteps bool // a step for api.yaml, written after the applying pass
	}{
		{name: "same desired: the loaded manifests", opts: Options{DryRun: true, SameDesired: true}, wantSteps: false},
		{name: "dry run: loaded again", opts: Options{DryRun: true}, wantSteps: true},
		{name: "not a dry run: loaded again", opts: Options{SameDesired: true}, wantSteps: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _, r, _ := appliedWeb(t)
			writeManifest(t, dir, "api.yaml", strings.ReplaceAll(webManifest, "web", "api"))
			res, err := r.Reconcile(context.Background(), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(res.Plan.Steps) > 0; got != tc.wantSteps {
				t.Errorf("steps %v, want steps: %v", res.Plan.Steps, tc.wantSteps)
			}
			if got := res.Objects; got != map[bool]int{false: 1, true: 2}[tc.wantSteps] {
				t.Errorf("%d objects planned", got)
			}
		})
	}
}
