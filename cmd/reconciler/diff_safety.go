package main

import (
	"fmt"
	"io"
	"time"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile"
)

// safetyReasons are the findings printSafety shows in sections of their
// own; the Findings list of diff leaves them out.
var safetyReasons = map[reconcile.Reason]bool{
	reconcile.ReasonPaused: true, reconcile.ReasonPruneBlocked: true, reconcile.ReasonPrunePending: true,
}

// printSafety prints what the safety rails did to the plan: paused objects
// with what they would do, a blocked prune, pending prunes.
func printSafety(out io.Writer, res reconcile.Result, now time.Time) {
	rep := res.Plan.SafetyReport
	if len(rep.Paused) > 0 {
		fmt.Fprintln(out, "Paused (not applied):")
		for _, p := range rep.Paused {
			fmt.Fprintf(out, "  %s: %s (%s left)\n", desired.EscapeControl(p.Object), desired.EscapeControl(p.Lease.Describe(now)), p.Lease.Until.Sub(now).Round(time.Second))
			if len(p.Withheld) == 0 {
				fmt.Fprintln(out, "      would do nothing")
			}
			for _, s := range p.Withheld {
				fmt.Fprintf(out, "      would %s\n", desired.EscapeControl(s.String()))
			}
		}
	}
	if b := rep.PruneBlocked; b != nil {
		fmt.Fprintf(out, "Prune blocked: %s\n", desired.EscapeControl(b.Why))
		for _, o := range b.Objects {
			fmt.Fprintf(out, "  %s\n", desired.EscapeControl(o))
		}
		for _, s := range b.Steps {
			fmt.Fprintf(out, "      would %s\n", desired.EscapeControl(s.String()))
		}
	}
	var pending []reconcile.Finding
	for _, f := range res.Plan.Findings {
		if f.Reason == reconcile.ReasonPrunePending {
			pending = append(pending, f)
		}
	}
	if len(pending) > 0 {
		fmt.Fprintln(out, "Prune pending:")
		for _, f := range pending {
			left := ""
			if d, ok := rep.PrunePending[f.Object]; ok {
				left = fmt.Sprintf(" (in %s)", d.Sub(now).Round(time.Second))
			}
			fmt.Fprintf(out, "  %s%s: %s\n", desired.EscapeControl(f.Object), left, desired.EscapeControl(f.Message))
		}
	}
}
