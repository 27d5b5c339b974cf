package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"resil.dev/resil/reconcile"
)

func newRolloutCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Show or resume the agent's paced restarts (--max-parallel-restarts)",
	}
	cmd.AddCommand(newRolloutStatusCmd(g), newRolloutResumeCmd(g))
	return cmd
}

func newRolloutStatusCmd(g *globals) *cobra.Command {
	var output string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the current or last rollout: waves done, pending, failed",
		Long: "Reads the agent's rollout record (<state-dir>/rollout.json), written by each applying pass of run\n" +
			"or apply. With --wait D, polls until the rollout completed, halted, or D passed.\n" +
			"Exit status: 0 no rollout or in progress or complete, 1 halted (or still running after --wait), 2 error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return exitCode(2, fmt.Errorf("-o must be text or json, got %q", output))
			}
			deadline := time.Now().Add(wait)
			for {
				rec, ok, err := reconcile.ReadRolloutRecord(g.stateDir)
				if err != nil {
					return exitCode(2, err)
				}
				halted := ok && rec.Active && rec.Last != nil && rec.Last.Halted
				if wait > 0 && ok && rec.Active && !halted && time.Now().Before(deadline) {
					time.Sleep(200 * time.Millisecond)
					continue
				}
				out := cmd.OutOrStdout()
				if output == "json" {
					enc := json.NewEncoder(out)
					enc.SetIndent("", "  ")
					if err := enc.Encode(struct {
						Recorded bool `json:"recorded"`
						reconcile.RolloutRecord
					}{ok, rec}); err != nil {
						return exitCode(2, err)
					}
				} else {
					printRollout(out, rec, ok, time.Now())
				}
				if halted || wait > 0 && ok && rec.Active {
					return exitCode(1, nil)
				}
				return nil
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the rollout to complete or halt")
	return cmd
}

// rolloutWord is the rollout's state in one word.
func rolloutWord(rec reconcile.RolloutRecord) string {
	switch {
	case !rec.Active:
		return "complete"
	case rec.Last != nil && rec.Last.Halted:
		return "HALTED"
	default:
		return "in progress"
	}
}

// waves is "1 wave", "3 waves".
func waves(n int) string {
	if n == 1 {
		return "1 wave"
	}
	return fmt.Sprintf("%d waves", n)
}

// printRollout writes the human view of a rollout record.
func printRollout(out io.Writer, rec reconcile.RolloutRecord, ok bool, now time.Time) {
	if !ok {
		fmt.Fprintln(out, "No rollout recorded (the agent records one when --max-parallel-restarts paces a restart).")
		return
	}
	fmt.Fprintf(out, "Rollout %s: %d of %d services restarted in %s, started %s ago",
		rolloutWord(rec), len(rec.Done()), rec.Total(), waves(rec.WaveCount), shortAge(now.Sub(rec.Started)))
	if rec.Ended != nil {
		fmt.Fprintf(out, ", took %s", rec.Ended.Sub(rec.Started).Round(10*time.Millisecond))
	}
	fmt.Fprintln(out)
	if rep := rec.Last; rep != nil {
		fmt.Fprintf(out, "  at most %d at a time\n", rep.MaxParallel)
		for _, f := range rep.Failed {
			fmt.Fprintf(out, "  failed:       %s (%s)\n", f.Unit, f.Why)
		}
		if nr := notReadyOnly(rep); len(nr) > 0 {
			fmt.Fprintf(out, "  not ready:    %s\n", strings.Join(nr, ", "))
		}
		if len(rep.Acknowledged) > 0 {
			fmt.Fprintf(out, "  let pass:     %s (rollout resume)\n", strings.Join(rep.Acknowledged, ", "))
		}
		if rep.HoldUntil != nil {
			fmt.Fprintf(out, "  next wave in: %s (jitter)\n", max(rep.HoldUntil.Sub(now), 0).Round(100*time.Millisecond))
		}
		for i, w := range rep.Waves {
			fmt.Fprintf(out, "  pending wave %d: %s\n", i+1, strings.Join(w, ", "))
		}
		switch {
		case rep.Halted && len(rep.Waves) > 0:
			fmt.Fprintln(out, "  The pending services keep their previous version. Fix the manifests, or `reconciler rollout resume` to go on past the failures.")
		case rep.Halted:
			fmt.Fprintln(out, "  Nothing is pending: fix the failed services' manifests, or `reconciler rollout resume` to let the failures pass.")
		}
	}
	if done := rec.Done(); len(done) > 0 {
		fmt.Fprintf(out, "  restarted:    %s\n", strings.Join(done, ", "))
	}
	fmt.Fprintf(out, "  updated %s ago\n", shortAge(now.Sub(rec.Updated)))
}

func newRolloutResumeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resume",
		Short: "Go on with a halted rollout past the services that failed",
		Long: "Lets the failures that halt the rollout pass: each failed service's current version is recorded in\n" +
			"<state-dir>/rollout-resume.json, and while it keeps that version its failure neither halts the\n" +
			"rollout nor holds a wave slot (a new version of it failing halts again). A running agent sees it\n" +
			"within a second. Exit status 1 when no rollout is halted.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rec, ok, err := reconcile.ReadRolloutRecord(g.stateDir)
			if err != nil {
				return exitCode(2, err)
			}
			if !ok || !rec.Active || rec.Last == nil || !rec.Last.Halted {
				fmt.Fprintln(cmd.OutOrStdout(), "no rollout is halted")
				return exitCode(1, nil)
			}
			rr, err := reconcile.ReadRolloutResume(g.stateDir)
			if err != nil {
				return exitCode(2, err)
			}
			uid, name := whoAmI()
			now := time.Now()
			if rr.Acks == nil {
				rr.Acks = map[string]string{}
			}
			rr.Time, rr.UID, rr.User = now, uid, name
			var units []string
			for _, f := range rec.Last.Failed {
				if f.Hash == "" {
					return exitCode(2, fmt.Errorf("%s: its unit file carries no version; fix or reset it instead", f.Unit))
				}
				rr.Acks[f.Unit] = f.Hash
				units = append(units, f.Unit)
			}
			if err := reconcile.WriteRolloutResume(g.stateDir, rr); err != nil {
				return exitCode(1, err)
			}
			msg := fmt.Sprintf("rollout resumed by %s (uid %d) past %s; %d pending", name, uid, strings.Join(units, ", "), len(rec.Last.Pending()))
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			recordEvents(cmd.ErrOrStderr(), g, []reconcile.Event{{Time: now, Type: reconcile.Normal, Reason: reconcile.ReasonRolloutResumed, Message: msg}})
			return nil
		},
	}
}

// printRolloutPlan is diff's view of the waves a plan's rollout would run:
// the wave this plan restarts, then the later ones.
func printRolloutPlan(out io.Writer, rep *reconcile.RolloutReport, now time.Time) {
	if rep == nil || len(rep.Admitted) == 0 && len(rep.Waves) == 0 {
		return
	}
	fmt.Fprintf(out, "Rollout (at most %d restarting or not ready at once):\n", rep.MaxParallel)
	n := 1
	if len(rep.Admitted) > 0 {
		fmt.Fprintf(out, "  wave %d (this plan): %s\n", n, strings.Join(rep.Admitted, ", "))
		n++
	}
	for _, w := range rep.Waves {
		fmt.Fprintf(out, "  wave %d: %s\n", n, strings.Join(w, ", "))
		n++
	}
	switch {
	case rep.Halted:
		var failed []string
		for _, f := range rep.Failed {
			failed = append(failed, f.String())
		}
		fmt.Fprintf(out, "  halted: %s failed; the pending services keep their previous version\n", strings.Join(failed, ", "))
	case rep.HoldUntil != nil:
		fmt.Fprintf(out, "  next wave in %s (jitter)\n", rep.HoldUntil.Sub(now).Round(100*time.Millisecond))
	case len(rep.Admitted) == 0 && len(notReadyOnly(rep)) > 0:
		fmt.Fprintf(out, "  waiting for %s to be ready\n", strings.Join(notReadyOnly(rep), ", "))
	}
}

// notReadyOnly is rep.NotReady without the services listed as failed (a
// failed service holds its wave slot too, but is shown once, as failed).
func notReadyOnly(rep *reconcile.RolloutReport) []string {
	var out []string
	for _, u := range rep.NotReady {
		if !slices.ContainsFunc(rep.Failed, func(f reconcile.RolloutFailure) bool { return f.Unit == u }) {
			out = append(out, u)
		}
	}
	return out
}
