package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/spf13/cobra"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/desired/gitsource"
	"resil.dev/resil/reconcile"
)

// stepJSON is a step as `diff -o json` prints it.
type stepJSON struct {
	actuators.Step
	Text string `json:"text"`
	Diff string `json:"diff,omitempty"`
}

type diffJSON struct {
	Backend  string              `json:"backend"`
	Hash     string              `json:"hash"`
	Changes  bool                `json:"changes"`
	Steps    []stepJSON          `json:"steps"`
	Findings []reconcile.Finding `json:"findings"`
	Errors   []string            `json:"errors,omitempty"`
	// paused, pruneBlocked, prunePending, pruned (diff_safety.go)
	reconcile.SafetyReport
	// Revision is the git source's revision the manifests come from.
	Revision *gitsource.Revision `json:"revision,omitempty"`
	// Rollout: the waves the plan's paced restarts form (rollout.go).
	Rollout *reconcile.RolloutReport `json:"rollout,omitempty"`
}

func newDiffCmd(g *globals) *cobra.Command {
	var output, revision string
	cmd := &cobra.Command{
		Use:   "diff",
		Short: "Show exactly what apply would do, touching nothing",
		Long: "Compute the plan with the same code apply executes and print unified diffs of every unit file that\n" +
			"would be written or removed, then the runtime actions with their reasons and the plan hash.\n" +
			"Nothing is written, reloaded or started. Exit status: 0 no changes, 1 changes, 2 error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return exitCode(2, fmt.Errorf("-o must be text or json, got %q", output))
			}
			c, done, err := g.openCommand("error", false, true, 2)
			if err != nil {
				return err
			}
			defer done()
			ctx, log, be := c.ctx, c.log, c.be
			var pre *reconcile.Prefetched
			if be.Name == "systemd" && revision == "" {
				// systemd's state is read while the manifests load (reconcile/prefetch.go).
				pre = reconcile.StartPrefetch(ctx, be.Observer)
				defer pre.Wait()
			}
			rev, cleanup, err := diffSource(ctx, cmd, g, revision) // git source (source.go)
			if err != nil {
				return exitCode(2, err)
			}
			defer cleanup()
			r, err := newReconciler(g, be, log, nil, true)
			if err != nil {
				return exitCode(2, err)
			}
			res, err := r.Reconcile(ctx, reconcile.Options{DryRun: true, Prefetched: pre})
			if err != nil {
				return exitCode(2, err)
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				findings := res.Plan.Findings
				if findings == nil {
					findings = []reconcile.Finding{}
				}
				rep := diffJSON{Backend: be.Name, Hash: res.Hash, Changes: !res.Plan.Empty(), Steps: []stepJSON{}, Findings: findings, Revision: rev, SafetyReport: res.Plan.SafetyReport, Rollout: res.Plan.Rollout}
				for _, s := range res.Plan.Steps {
					rep.Steps = append(rep.Steps, stepJSON{Step: s, Text: s.String(), Diff: fileDiff(s)})
				}
				if res.LoadErr != nil {
					rep.Errors = strings.Split(res.LoadErr.Error(), "\n")
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				if rev != nil {
					fmt.Fprintf(out, "Manifests: %s\n", revisionLine(rev, time.Now()))
				}
				printPlan(out, be.Name, res)
			}
			if res.LoadErr != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "invalid manifests (their last good version, if any, stays in force):\n%v\n", res.LoadErr)
				return exitCode(2, nil)
			}
			if !res.Plan.Empty() {
				return exitCode(1, nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	cmd.Flags().StringVar(&revision, "revision", "", "git source: diff against this commit, branch or ref of the agent's repository instead of the deployed revision (composed as the agent would)")
	addSafetyFlags(g, cmd)
	return cmd
}

// fileDiff renders a unified diff for write/remove steps.
func fileDiff(s actuators.Step) string {
	if s.Op != actuators.OpWriteFile && s.Op != actuators.OpRemoveFile {
		return ""
	}
	var newData []byte
	if s.Op == actuators.OpWriteFile {
		newData = s.Data
	}
	from, to := s.Path, s.Path
	if s.Old == nil {
		from = "/dev/null"
	}
	if s.Op == actuators.OpRemoveFile {
		to = "/dev/null"
	}
	text, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(s.Old)), B: difflib.SplitLines(string(newData)),
		FromFile: from, ToFile: to, Context: 3,
	})
	return text
}

func printPlan(out io.Writer, backend string, res reconcile.Result) {
	for _, s := range res.Plan.Steps {
		if d := fileDiff(s); d != "" {
			fmt.Fprint(out, d)
			if !strings.HasSuffix(d, "\n") {
				fmt.Fprintln(out)
			}
		}
	}
	if len(res.Plan.Steps) > 0 {
		fmt.Fprintln(out, "Steps:")
		for i, s := range res.Plan.Steps {
			fmt.Fprintf(out, "  %2d. %s\n", i+1, desired.EscapeControl(s.String()))
		}
	}
	var findings []reconcile.Finding
	for _, f := range res.Plan.Findings {
		if !safetyReasons[f.Reason] {
			findings = append(findings, f)
		}
	}
	if len(findings) > 0 {
		fmt.Fprintln(out, "Findings:")
		for _, f := range findings {
			mark := " "
			if f.Warning {
				mark = "!"
			}
			what := string(f.Reason)
			if f.Object != "" { // ManifestBusy, PruneBlocked: about a file or the host, not one object
				what += " " + desired.EscapeControl(f.Object)
			}
			fmt.Fprintf(out, "  %s %s: %s\n", mark, what, desired.EscapeControl(f.Message))
		}
	}
	printSafety(out, res, time.Now())
	printRolloutPlan(out, res.Plan.Rollout, time.Now())
	if res.Observed != nil {
		for _, line := range timerNotes(res) {
			fmt.Fprintln(out, line)
		}
	}
	if rep := res.Plan.Rollout; res.Plan.Empty() && rep != nil && len(rep.Waves) > 0 {
		fmt.Fprintf(out, "No steps now: the rollout holds %d services on their previous version (%d objects, %s backend, plan %s).\n", len(rep.Pending()), res.Objects, backend, res.Hash)
	} else if res.Plan.Empty() && res.LoadErr != nil {
		// Not converged: what the invalid files declare is not applied.
		n, what := invalidFiles(res.LoadErr), "invalid manifests (listed on stderr) are"
		if n == 1 {
			what = "invalid manifest (listed on stderr) is"
		}
		fmt.Fprintf(out, "No changes to apply; %d %s not applied (%d objects, %s backend, plan %s).\n", n, what, res.Objects, backend, res.Hash)
	} else if res.Plan.Empty() {
		fmt.Fprintf(out, "No changes: %d objects converged on the %s backend (plan %s).\n", res.Objects, backend, res.Hash)
	} else {
		fmt.Fprintf(out, "Plan: %d steps for %d objects on the %s backend (plan %s).\n", len(res.Plan.Steps), res.Objects, backend, res.Hash)
	}
}
