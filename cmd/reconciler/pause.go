package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/store"
)

func newPauseCmd(g *globals) *cobra.Command {
	var dur, maxLease time.Duration
	var reason string
	cmd := &cobra.Command{
		Use:   "pause NAME... --for DURATION --reason TEXT",
		Short: "Stop the agent from correcting or changing objects for a while (a lease in the state dir)",
		Long: "Takes a pause lease on each NAME (an object name such as web, an ID such as Service/web, or the unit\n" +
			"of a declared object such as web.service or job.timer, which stands for that object) in\n" +
			"<state-dir>/leases/. Until it expires or `reconciler resume NAME`, the agent corrects no drift of the\n" +
			"object and applies no manifest change to it (nor prunes it); it records the drift (DriftReported) and\n" +
			"`diff` says what it would do. Everything else keeps converging. --for and --reason are required; the\n" +
			"lease records who took it and when. Works whether or not the agent runs; a running agent sees the\n" +
			"lease within a second, and converges the object when the lease expires (LeaseExpired).",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case dur <= 0:
				return exitCode(2, fmt.Errorf("--for is required: how long the pause lasts (e.g. 30m)"))
			case maxLease > 0 && dur > maxLease:
				return exitCode(2, fmt.Errorf("--for %s is longer than --max-lease %s", dur, maxLease))
			case strings.TrimSpace(reason) == "":
				return exitCode(2, fmt.Errorf("--reason is required: why the object is paused (e.g. \"hotfix INC-123\")"))
			case strings.IndexFunc(reason, unicode.IsControl) >= 0:
				return exitCode(2, fmt.Errorf("--reason must be one line of text"))
			}
			for _, a := range args {
				if msg := reconcile.CheckLeaseObject(a); msg != "" {
					return exitCode(2, fmt.Errorf("%s", msg))
				}
			}
			set := loadForLeases(cmd, g)
			args, err := resolveLeaseArgs(cmd.Context(), g, set, args)
			if err != nil {
				return exitCode(2, err)
			}
			warnUnknownObjects(cmd.ErrOrStderr(), g.manifests, set, args)
			ids := leaseIDs(cmd.Context(), g, set)
			now := time.Now()
			uid, name := whoAmI()
			ld := reconcile.NewLeaseDir(g.stateDir)
			var events []reconcile.Event
			for _, a := range args {
				l := reconcile.Lease{Object: a, Reason: reason, Since: now, Until: now.Add(dur), UID: uid, User: name}
				if err := ld.Put(l); err != nil {
					return exitCode(1, err)
				}
				desc := l.Describe(now)
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%s)\n", a, desired.EscapeControl(desc), dur)
				events = append(events, reconcile.Event{Time: now, Type: reconcile.Normal, Reason: reconcile.ReasonPaused, Object: eventObject(ids, a),
					Message: fmt.Sprintf("%s (for %s, uid %d)", desc, dur, uid)})
			}
			recordEvents(cmd.ErrOrStderr(), g, events)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&dur, "for", 0, "how long the pause lasts (required)")
	f.StringVar(&reason, "reason", "", "why, for the record (required)")
	f.DurationVar(&maxLease, "max-lease", 24*time.Hour, "refuse a pause longer than this (the agent also ends leases at its own --max-lease)")
	return cmd
}

func newResumeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resume NAME...",
		Short: "End pause leases: the agent converges the objects at once",
		Long: "Removes the pause lease of each NAME (as given to pause; a unit stands for its object). A running\n" +
			"agent notices within a second and converges the objects; otherwise the next apply does. Exit\n" +
			"status 1 when a NAME was not paused, 2 for a unit no object declares.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ld := reconcile.NewLeaseDir(g.stateDir)
			now := time.Now()
			uid, name := whoAmI()
			for _, a := range args {
				if msg := reconcile.CheckLeaseObject(a); msg != "" {
					return exitCode(2, fmt.Errorf("%s", msg))
				}
			}
			set := loadForLeases(cmd, g)
			args, err := resolveLeaseArgs(cmd.Context(), g, set, args)
			if err != nil {
				return exitCode(2, err)
			}
			ids := leaseIDs(cmd.Context(), g, set)
			var events []reconcile.Event
			missing := 0
			for _, a := range args {
				leases, err := leasesFor(ld, a)
				if err != nil {
					return exitCode(1, err)
				}
				if len(leases) == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%s was not paused\n", a)
					missing++
					continue
				}
				for _, l := range leases {
					if _, err := ld.Remove(l.Object); err != nil {
						return exitCode(1, err)
					}
					if l.Object == a {
						fmt.Fprintf(cmd.OutOrStdout(), "resumed %s\n", a)
					} else {
						fmt.Fprintf(cmd.OutOrStdout(), "resumed %s (its lease was taken as %s)\n", a, l.Object)
					}
					events = append(events, reconcile.Event{Time: now, Type: reconcile.Normal, Reason: reconcile.ReasonResumed,
						Object: eventObject(ids, l.Object), Message: fmt.Sprintf("resumed by %s (uid %d); was %s", name, uid, l.Describe(now))})
				}
			}
			recordEvents(cmd.ErrOrStderr(), g, events)
			if missing > 0 {
				return exitCode(1, nil)
			}
			return nil
		},
	}
}

// resolveLeaseArgs replaces each unit name among pause's and resume's
// arguments by the object that owns it (resolveUnitArgs); the agent's
// last pass is read only when the manifests cannot tell.
func resolveLeaseArgs(ctx context.Context, g *globals, set *desired.Set, args []string) ([]string, error) {
	var rows []store.ObjectStatus
	for _, a := range args {
		if desired.IsUnitName(a) && set.UnitOwner(a) == "" {
			rows = lastPassRows(ctx, g)
			break
		}
	}
	return resolveUnitArgs(args, set, rows)
}

// leasesFor returns the leases `resume a` ends: a's own, and those that
// pause what a names (a name's lease covers Kind/name, so `pause web` is
// ended by `resume Service/web`; `resume web` ends `pause Service/web`).
func leasesFor(ld reconcile.LeaseDir, a string) ([]reconcile.Lease, error) {
	all, err := ld.List()
	if err != nil && len(all) == 0 {
		return nil, err
	}
	var out []reconcile.Lease
	for _, l := range all {
		if l.Covers(a) || (!strings.Contains(a, "/") && strings.HasSuffix(l.Object, "/"+a)) {
			out = append(out, l)
		}
	}
	return out, nil
}

// loadForLeases loads the manifests for pause and resume, which only
// name what they hold (nil when they cannot be read): those diff reads
// (the git source's deployed revision when the state dir has one and
// --manifests is not given).
func loadForLeases(cmd *cobra.Command, g *globals) *desired.Set {
	if _, _, err := diffSource(cmd.Context(), cmd, g, ""); err != nil {
		return nil
	}
	opts, err := g.loadOptions()
	if err != nil {
		return nil
	}
	set, _ := desired.Load(g.manifests, opts)
	return set
}

// objectIDs maps each object name the manifests declare to its IDs.
func objectIDs(set *desired.Set) map[string][]string {
	if set == nil {
		return nil
	}
	ids := map[string][]string{}
	for id, o := range set.Objects {
		ids[o.Metadata.Name] = append(ids[o.Metadata.Name], id)
	}
	for id, o := range set.NotSelected {
		ids[o.Metadata.Name] = append(ids[o.Metadata.Name], id)
	}
	return ids
}

// leaseIDs maps object names to IDs for pause and resume's events: from
// the manifests, or, when they cannot be read (pause works without them),
// from the objects of the agent's last pass in its store; nil when
// neither is there.
func leaseIDs(ctx context.Context, g *globals, set *desired.Set) map[string][]string {
	if set != nil {
		return objectIDs(set)
	}
	objs := lastPassRows(ctx, g)
	if objs == nil {
		return nil
	}
	ids := map[string][]string{}
	for _, o := range objs {
		ids[o.Name] = append(ids[o.Name], o.Object)
	}
	return ids
}

// eventObject is the object a pause or resume event is recorded under: the
// ID of the one object a bare name declares (so `events --object
// Service/web` and status's LAST EVENT find it), else the name as given.
func eventObject(ids map[string][]string, a string) string {
	if strings.Contains(a, "/") {
		return a
	}
	if l := ids[a]; len(l) == 1 {
		return l[0]
	}
	return a
}

// warnUnknownObjects warns of each name no manifest declares (a typo
// pauses nothing): the lease is still taken, and holds an object of that
// name should one appear. Manifests that cannot be read warn nothing.
func warnUnknownObjects(w io.Writer, manifests string, set *desired.Set, names []string) {
	if set == nil {
		return
	}
	known := map[string]bool{}
	for id, o := range set.Objects {
		known[id], known[o.Metadata.Name] = true, true
	}
	for id, o := range set.NotSelected {
		known[id], known[o.Metadata.Name] = true, true
	}
	for n := range set.BrokenNames {
		known[n] = true
	}
	for _, n := range names {
		if !known[n] && len(set.Broken) == 0 && len(set.Busy) == 0 {
			fmt.Fprintf(w, "warning: no manifest in %s declares %s; the lease holds it should it appear\n", manifests, n)
		}
	}
}

// recordEvents stores events in the agent's event store (shared with a
// running agent: SQLite WAL), so `events` shows who paused and resumed.
// A store that cannot be opened is a warning: the lease is what counts.
func recordEvents(warn io.Writer, g *globals, events []reconcile.Event) {
	if len(events) == 0 {
		return
	}
	s, err := store.Open(storePath(g), store.Options{Log: zap.NewNop()})
	if err != nil {
		fmt.Fprintf(warn, "warning: event not recorded: %v\n", err)
		return
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, e := range events {
		if err := s.Add(ctx, e); err != nil {
			fmt.Fprintf(warn, "warning: event not recorded: %v\n", err)
		}
	}
}

// whoAmI is the person behind this command: sudo's caller (SUDO_UID), else
// the audit login uid, else the real uid; and that uid's login name.
func whoAmI() (int, string) {
	uid := os.Getuid()
	if v, err := strconv.Atoi(os.Getenv("SUDO_UID")); err == nil && v >= 0 {
		uid = v
	} else if b, err := os.ReadFile("/proc/self/loginuid"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil && v != 1<<32-1 {
			uid = int(v)
		}
	}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return uid, u.Username
	}
	if n := os.Getenv("SUDO_USER"); n != "" && uid != os.Getuid() {
		return uid, n
	}
	return uid, "uid " + strconv.Itoa(uid)
}

func newPruneCmd(g *globals) *cobra.Command {
	var confirm bool
	var expect string
	cmd := &cobra.Command{
		Use:   "prune [--confirm]",
		Short: "Show what the mass-prune guard holds back; with --confirm, prune it once",
		Long: "Computes the plan as diff does and lists the objects a pass would prune (blocked by --max-prune or\n" +
			"not). With --confirm it records a confirmation of exactly those objects in the state dir (valid 5\n" +
			"minutes, used once) and prunes them: through its own pass when no agent runs, else through the running\n" +
			"agent's next pass. Exit status: 0 nothing to prune or pruned, 1 something to prune (without --confirm)\n" +
			"or a step failed, 2 error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			objs, steps, err := pruneList(cmd, g)
			if err != nil {
				return err
			}
			if len(objs) == 0 {
				fmt.Fprintln(out, "nothing to prune")
				return nil
			}
			fmt.Fprintf(out, "%d objects to prune:\n", len(objs))
			for _, o := range objs {
				fmt.Fprintf(out, "  %s\n", desired.EscapeControl(o))
				for _, s := range steps[o] {
					fmt.Fprintf(out, "      %s\n", desired.EscapeControl(s))
				}
			}
			if !confirm {
				fmt.Fprintln(out, "run `reconciler prune --confirm` to prune them")
				return exitCode(1, nil)
			}
			if err := reconcile.WritePruneConfirm(g.stateDir, reconcile.PruneConfirm{Objects: objs, Until: time.Now().Add(5 * time.Minute)}); err != nil {
				return exitCode(2, err)
			}
			unlock, err := lockState(g.stateDir)
			if err != nil {
				fmt.Fprintf(out, "confirmed; the running agent prunes them on its next pass (%v)\n", err)
				return nil
			}
			unlock()
			fmt.Fprintln(out, "confirmed; pruning:")
			return runApply(cmd, g, reconcile.Options{ExpectPlan: expect}, reconcile.StayUpWindow)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&confirm, "confirm", false, "prune the listed objects once, past the guard")
	f.StringVar(&expect, "expect-plan", "", "with --confirm and no agent running: refuse to act unless the plan hash equals HASH")
	addSafetyFlags(g, cmd)
	return cmd
}

// pruneList computes (like diff, touching nothing) the objects a pass
// would prune, blocked or not, with their steps. It reads the manifests
// diff and apply read (diffSource: the git source's deployed revision
// when the state dir has one and --manifests is not given). A manifests
// directory that cannot be read is an error: its objects keep their last
// good version, so the plan would show nothing to prune whatever was
// removed.
func pruneList(cmd *cobra.Command, g *globals) ([]string, map[string][]string, error) {
	c, done, err := g.openCommand("error", false, true, 2)
	if err != nil {
		return nil, nil, err
	}
	defer done()
	if _, _, err := diffSource(c.ctx, cmd, g, ""); err != nil { // source.go
		return nil, nil, exitCode(2, err)
	}
	r, err := newReconciler(g, c.be, c.log, nil, true)
	if err != nil {
		return nil, nil, exitCode(2, err)
	}
	res, err := r.Reconcile(c.ctx, reconcile.Options{DryRun: true})
	if err != nil {
		return nil, nil, exitCode(2, err)
	}
	if errors.Is(res.LoadErr, desired.ErrUnreadable) {
		return nil, nil, exitCode(2, fmt.Errorf("cannot tell what to prune: %w", res.LoadErr))
	}
	objs := res.Plan.Pruned
	if b := res.Plan.PruneBlocked; b != nil {
		objs = b.Objects
	}
	steps := map[string][]string{}
	for _, s := range res.Plan.Steps {
		steps[s.Object] = append(steps[s.Object], s.String())
	}
	if b := res.Plan.PruneBlocked; b != nil {
		for _, s := range b.Steps {
			steps[s.Object] = append(steps[s.Object], s.String())
		}
	}
	return objs, steps, nil
}
