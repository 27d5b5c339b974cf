package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"resil.dev/resil/actuators/process"
	"resil.dev/resil/desired"
	"resil.dev/resil/desired/gitsource"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/store"
)

func storePath(g *globals) string { return filepath.Join(g.stateDir, store.FileName) }

// objectStatuses computes the snapshot rows of one pass. It does no I/O.
func objectStatuses(res reconcile.Result, now time.Time) []store.ObjectStatus {
	var out []store.ObjectStatus
	classes := reconcile.Classify(res)
	// An object --prune-quiet keeps at its last version (its file declares
	// it no more, and changed a moment ago) is desired for the pass, so
	// Classify has it converged: its row says it waits for its prune.
	quiet := map[string]string{}
	for _, f := range res.Plan.Findings {
		if f.Reason == reconcile.ReasonPrunePending && f.Object != "" {
			quiet[f.Object] = string(f.Reason) + ": " + f.Message
		}
	}
	for _, o := range append(slices.Clip(res.Desired), res.Unsupported...) {
		id := o.ID()
		c := classes[id]
		state, msg := string(c.State), c.Message
		if m, ok := quiet[id]; ok && c.State == reconcile.StateConverged {
			state, msg = StatePrunePending, m
		}
		out = append(out, store.ObjectStatus{Object: id, Kind: string(o.Kind), Name: o.Metadata.Name, Unit: o.UnitName(), Updated: now,
			Desired: desiredWord(o), Observed: observedWord(o, res.Observed),
			State: state, Failed: c.Failed, Drift: c.Drift, Message: msg,
			Ready: reconcile.Readiness(o, res.Observed, res.Health)})
	}
	// One row per object: a held object (its manifest broken) is Invalid
	// even when a pause or a prune deadline also concerns it.
	seen := map[string]bool{}
	for _, row := range out {
		seen[row.Object] = true
	}
	for _, row := range append(heldStatuses(res, classes, now), pendingStatuses(res, now)...) { // status_safety.go
		if !seen[row.Object] {
			seen[row.Object] = true
			out = append(out, row)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Object < out[j].Object })
	return out
}

// heldStatuses are the rows of objects whose manifest is broken and that
// have no last good version (Classify lists them, res.Desired does not):
// what the host has of them is shown and left alone.
func heldStatuses(res reconcile.Result, classes map[string]reconcile.ObjectStatus, now time.Time) []store.ObjectStatus {
	listed := map[string]bool{}
	for _, o := range append(slices.Clip(res.Desired), res.Unsupported...) {
		listed[o.ID()] = true
	}
	var out []store.ObjectStatus
	for id, c := range classes {
		if listed[id] {
			continue
		}
		row := goneRow(res, id, string(c.State), c.Message, now)
		row.Desired = "invalid"
		row.Failed, row.Drift = c.Failed, c.Drift
		out = append(out, row)
	}
	return out
}

func desiredWord(o *desired.Object) string {
	switch {
	case o.Service != nil:
		w := string(o.Service.DesiredState())
		if !o.Service.IsEnabled() {
			w += ",disabled"
		}
		return w
	case o.Timer != nil:
		if !o.Timer.IsEnabled() {
			return "disabled"
		}
		return "active"
	case o.Watchdog != nil:
		var parts []string
		if o.Watchdog.RuntimeTimeout.IsSet() {
			parts = append(parts, "runtime "+string(o.Watchdog.RuntimeTimeout))
		}
		if o.Watchdog.RebootTimeout.IsSet() {
			parts = append(parts, "reboot "+string(o.Watchdog.RebootTimeout))
		}
		return strings.Join(parts, ",")
	}
	return "-"
}

func observedWord(o *desired.Object, obs *observed.State) string {
	if obs == nil {
		return "unknown"
	}
	if o.Kind == desired.KindWatchdog {
		if obs.Manager == nil {
			return "unsupported"
		}
		if obs.Manager.File == nil {
			return "absent"
		}
		return "configured"
	}
	u := obs.Units[o.UnitName()]
	if u != nil && u.LoadState == "masked" {
		return "masked" // systemctl mask: nothing of it can run
	}
	if u == nil || (u.File == nil && u.LoadState != "loaded") {
		return "absent"
	}
	return unitWord(u)
}

// unitWord is a unit's OBSERVED word: its state and sub-state, or, failed,
// why it failed.
func unitWord(u *observed.Unit) string {
	if u.ActiveState == "failed" && u.Result != "" {
		return "failed (" + u.Result + ")"
	}
	if u.SubState != "" {
		return u.ActiveState + " (" + u.SubState + ")"
	}
	return reconcile.OrDash(u.ActiveState)
}

// statusRow is one object in `status` output.
type statusRow struct {
	store.ObjectStatus
	Restarts24h int                `json:"restarts24h"`
	LastEvent   *store.StoredEvent `json:"lastEvent,omitempty"`
	// Paused is the lease pausing the object, PruneAt its prune deadline
	// (status_safety.go).
	Paused  *reconcile.Lease `json:"paused,omitempty"`
	PruneAt *time.Time       `json:"pruneAt,omitempty"`
	// RolloutWave: the service waits for the nth later wave of the
	// rollout in flight (status_rollout.go).
	RolloutWave int `json:"rolloutWave,omitempty"`
}

type statusReport struct {
	Agent   store.Agent `json:"agent"`
	Objects []statusRow `json:"objects"`
	// Converged is false when an object is drifting, failed or invalid, a
	// manifest is broken, or the agent (run) that wrote the snapshot is no
	// longer running (AgentGone): nothing watches the host, and what the
	// rows show may have changed since.
	Converged bool `json:"converged"`
	AgentGone bool `json:"agentGone,omitempty"`
	// Revision is the git source's deployed revision; LastFetch its last
	// fetch (source.go).
	Revision  *gitsource.Revision `json:"revision,omitempty"`
	LastFetch *gitsource.Attempt  `json:"lastFetch,omitempty"`
	// Rollout is the rollout in flight (status_rollout.go).
	Rollout *reconcile.RolloutRecord `json:"rollout,omitempty"`
	// RolloutError says why the rollout record was refused (not trusted
	// or not readable); the report is then not converged.
	RolloutError string `json:"rolloutError,omitempty"`
}

func newStatusCmd(g *globals) *cobra.Command {
	var output string
	var watch bool
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "status [NAME...]",
		Short: "Show each object's desired and observed state from the agent's last pass",
		Long: "Reads the agent's store (<state-dir>/events.db) directly; needs no backend and works whether or\n" +
			"not the agent runs. NAME is an object name (web), ID (Service/web) or unit (web.service, job.timer;\n" +
			"a timer's job stands for the timer). A paused object shows [PAUSED 29m left] (from its lease, at\n" +
			"once), one kept by --prune-grace [PRUNE in 9m].\n" +
			"Exit status: 0 everything converged, 1 something is drifting, failed or invalid, or the agent\n" +
			"(run) that wrote the snapshot is no longer running, 2 error.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" && output != "yaml" && output != "wide" {
				return exitCode(2, fmt.Errorf("-o must be json, yaml or wide, got %q", output))
			}
			s, err := store.OpenReader(storePath(g))
			if err != nil {
				return exitCode(2, err)
			}
			defer s.Close()
			if watch {
				if output != "" && output != "wide" {
					return exitCode(2, errors.New("--watch draws the table: -o wide or nothing"))
				}
				return watchStatus(cmd.Context(), cmd.OutOrStdout(), s, args, output == "wide", every, g.stateDir)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			rep, err := buildStatus(ctx, s, args, time.Now())
			if err != nil {
				return exitCode(2, err)
			}
			rep.Revision = deployedRevision(g)
			rep.LastFetch, _ = gitsource.LastAttempt(gitsource.Dir(g.stateDir))
			addSafety(&rep, g.stateDir, time.Now())
			addRollout(&rep, g.stateDir)
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				err = enc.Encode(rep)
			case "yaml":
				var b []byte
				if b, err = yaml.Marshal(rep); err == nil {
					_, err = out.Write(b)
				}
			default:
				err = printStatus(out, rep, output == "wide", time.Now())
			}
			if err != nil {
				return exitCode(2, err)
			}
			if !rep.Converged {
				return exitCode(1, nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json, yaml or wide (default: table)")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "redraw the table whenever the agent's store changes, until interrupted")
	cmd.Flags().DurationVar(&every, "interval", time.Second, "with --watch: how often to look for a change")
	return cmd
}

// watchStatus redraws the status table each time what it shows changes
// (the agent's last pass or an object's row), checking every interval,
// until ctx is done (Ctrl-C). On a terminal each table replaces the last.
func watchStatus(ctx context.Context, out io.Writer, s *store.Store, names []string, wide bool, every time.Duration, stateDir string) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	clear := false
	if f, ok := out.(*os.File); ok && isTerminal(f) {
		clear = true
	}
	last, first := "", true
	for {
		rep, err := buildStatus(ctx, s, names, time.Now())
		if err != nil && ctx.Err() == nil {
			return exitCode(2, err)
		}
		addSafety(&rep, stateDir, time.Now())
		addRollout(&rep, stateDir)
		var b strings.Builder
		if err == nil {
			_ = printStatus(&b, rep, wide, time.Now())
		}
		// Ages in the table change every second; redraw on a change of
		// anything else.
		k, _ := json.Marshal(rep)
		if key := string(k); err == nil && key != last {
			last = key
			if clear {
				fmt.Fprint(out, "\x1b[H\x1b[2J")
			} else if !first {
				fmt.Fprintln(out, "---")
			}
			first = false
			fmt.Fprint(out, b.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

var errNoObject = errors.New("no such object in the agent's last pass")

func buildStatus(ctx context.Context, s *store.Store, names []string, now time.Time) (statusReport, error) {
	objs, agent, err := s.Status(ctx)
	if err != nil {
		return statusReport{}, err
	}
	counts, err := s.RestartCounts(ctx, now.Add(-24*time.Hour))
	if err != nil {
		return statusReport{}, err
	}
	last, err := s.LastEvents(ctx)
	if err != nil {
		return statusReport{}, err
	}
	rep := statusReport{Agent: agent, Objects: []statusRow{}, Converged: !agent.LastPass.IsZero()}
	// A unit name (web.service, job.timer) stands for the object that
	// owns it.
	names = slices.Clone(names)
	for i, n := range names {
		if desired.IsUnitName(n) {
			if id := unitOwner(n, nil, objs); id != "" {
				names[i] = id
			}
		}
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	found := map[string]bool{}
	for _, o := range objs {
		if len(want) > 0 && !want[o.Name] && !want[o.Object] {
			continue
		}
		found[o.Name], found[o.Object] = true, true
		row := statusRow{ObjectStatus: o, Restarts24h: counts[o.Object]}
		if e, ok := last[o.Object]; ok {
			row.LastEvent = &e
		}
		if reconcile.ObjectState(o.State).Problem() || o.State == StatePruneBlocked {
			rep.Converged = false
		}
		rep.Objects = append(rep.Objects, row)
	}
	for _, n := range names {
		if !found[n] {
			return rep, fmt.Errorf("%s: %w", n, errNoObject)
		}
	}
	if len(names) == 0 && (agent.LoadError != "" || agent.Busy != "") {
		rep.Converged = false
	}
	if agent.Command == "run" && agent.PID > 0 && agent.PID != os.Getpid() && !agentAlive(agent) {
		rep.AgentGone, rep.Converged = true, false
	}
	return rep, nil
}

func printStatus(w io.Writer, rep statusReport, wide bool, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	hdr := "NAME\tKIND\tDESIRED\tOBSERVED\tREADY\tRESTARTS 24h\tLAST EVENT\tAGE"
	if wide {
		hdr += "\tSTATE\tMESSAGE"
	}
	fmt.Fprintln(tw, hdr)
	for _, o := range rep.Objects {
		last := "<none>"
		if o.LastEvent != nil {
			last = fmt.Sprintf("%s (%s ago)", o.LastEvent.Reason, shortAge(now.Sub(o.LastEvent.LastSeen)))
		}
		observed := o.Observed
		if w := safetyWord(o, now) + rolloutRowWord(o, rep); w != "" {
			observed += w
		} else if o.State != string(reconcile.StateConverged) {
			observed += " [" + o.State + "]"
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s", o.Name, o.Kind, o.Desired, observed, reconcile.OrDash(o.Ready), o.Restarts24h, last, shortAge(now.Sub(o.FirstSeen)))
		if wide {
			line += "\t" + o.State + "\t" + o.Message
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	a := rep.Agent
	switch {
	case a.LastPass.IsZero():
		fmt.Fprintln(w, "\nthe agent has not finished a pass yet")
	case a.PID > 0 && a.PID != os.Getpid() && !agentAlive(a):
		// An apply's pass, or an agent that died (kill -9, a crash): what
		// is shown is what that pass left, not watched since.
		what := "pid"
		if rep.AgentGone {
			what = "agent pid" // exit 1: the rows may no longer be true
		}
		fmt.Fprintf(w, "\nlast pass %s ago (%s %d, no longer running: nothing has watched the host since; %s backend)\n", shortAge(now.Sub(a.LastPass)), what, a.PID, a.Backend)
	default:
		fmt.Fprintf(w, "\nlast pass %s ago (agent pid %d, %s backend)\n", shortAge(now.Sub(a.LastPass)), a.PID, a.Backend)
	}
	printRolloutLine(w, rep, now)
	if rep.Revision != nil {
		fmt.Fprintln(w, revisionLine(rep.Revision, now))
	}
	if f := rep.LastFetch; f != nil && f.Outcome != gitsource.OutcomeDeployed && f.Outcome != gitsource.OutcomeUnchanged {
		fmt.Fprintf(w, "last fetch %s ago: %s: %s\n", shortAge(now.Sub(f.Time)), f.Outcome, desired.EscapeControl(f.Error))
	}
	if a.PassError != "" {
		fmt.Fprintf(w, "last pass error: %s\n", desired.EscapeControl(a.PassError))
	}
	if a.LoadError != "" {
		fmt.Fprintf(w, "invalid manifests (last good versions stay in force):\n%s\n", a.LoadError)
	}
	if a.Busy != "" {
		// Not read: a new manifest open for writing has no row yet.
		fmt.Fprintln(w, "manifests open for writing (not read until closed; what they held keeps its last good version):")
		for _, f := range strings.Split(a.Busy, "\n") {
			fmt.Fprintln(w, desired.EscapeControl(f))
		}
	}
	return nil
}

// shortAge formats like kubectl: 45s, 12m, 5h, 3d.
func shortAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// agentAlive reports whether the process that wrote a's pass still runs:
// its PID is taken and, when its start time was recorded (agents before
// 2026-12-04 did not), by a live process that started then, not another
// one that reuses the PID.
func agentAlive(a store.Agent) bool {
	if syscall.Kill(a.PID, 0) == syscall.ESRCH {
		return false
	}
	if a.PIDStart == 0 {
		return true
	}
	start, ok := process.StartTime(a.PID)
	// Unreadable (/proc mounted hidepid=): the PID is taken, say running.
	return !ok || start == a.PIDStart
}
