package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile"
)

// addRollout adds the agent's rollout in flight (from its record in the
// state dir) to the status: a pending service's row shows its wave, a
// failed service of a halted rollout counts as not converged.
func addRollout(rep *statusReport, stateDir string) {
	if stateDir == "" {
		return
	}
	rec, ok, err := reconcile.ReadRolloutRecord(stateDir)
	if err != nil {
		// The agent refuses the record too (RolloutPending: any failed
		// service halts its rollout until the file is fixed or removed):
		// an operator must act, so the host does not read as converged.
		rep.RolloutError = desired.EscapeControl(err.Error())
		rep.Converged = false
		return
	}
	if !ok || !rec.Active || rec.Last == nil {
		return
	}
	rep.Rollout = &rec
	wave := map[string]int{}
	for i, w := range rec.Last.Waves {
		for _, u := range w {
			wave[u] = i + 1
		}
	}
	for i := range rep.Objects {
		row := &rep.Objects[i]
		if n := wave[row.Unit]; n > 0 {
			row.RolloutWave = n
		}
	}
	if rec.Last.Halted {
		rep.Converged = false
	}
}

// rolloutRowWord is what the OBSERVED column adds for a service waiting for
// its wave ("" for others).
func rolloutRowWord(o statusRow, rep statusReport) string {
	if o.RolloutWave == 0 || rep.Rollout == nil {
		return ""
	}
	if rep.Rollout.Last.Halted {
		return " [ROLLOUT HALTED: previous version]"
	}
	return fmt.Sprintf(" [ROLLOUT wave +%d]", o.RolloutWave)
}

// printRolloutLine is status's one line about a rollout in flight.
func printRolloutLine(w io.Writer, rep statusReport, now time.Time) {
	if rep.RolloutError != "" {
		fmt.Fprintf(w, "rollout record refused: %s; the agent halts its rollout on any failed service until the file is fixed or removed\n", rep.RolloutError)
	}
	rec := rep.Rollout
	if rec == nil {
		return
	}
	line := fmt.Sprintf("rollout %s: %d of %d restarted, %s", rolloutWord(*rec), len(rec.Done()), rec.Total(), waves(rec.WaveCount))
	if rec.Last.Halted {
		var failed []string
		for _, f := range rec.Last.Failed {
			failed = append(failed, f.String())
		}
		line += fmt.Sprintf("; failed: %s; %d pending keep their previous version", strings.Join(failed, ", "), len(rec.Last.Pending()))
	}
	fmt.Fprintf(w, "%s (reconciler rollout status)\n", line)
}
