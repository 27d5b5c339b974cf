package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"resil.dev/resil/reconcile"
)

// safetyFlags are the operator safety rails' flags of the commands that
// plan (run, apply, diff, prune): see reconcile.Safety.
type safetyFlags struct {
	maxPrune   string
	pruneGrace time.Duration
	maxLease   time.Duration
}

// addSafetyFlags adds the flags to cmd; they are in force (g.safety) when
// cmd runs.
func addSafetyFlags(g *globals, cmd *cobra.Command) {
	s := &safetyFlags{}
	cmd.PreRun = func(*cobra.Command, []string) { g.safety = s }
	f := cmd.Flags()
	f.StringVar(&s.maxPrune, "max-prune", "50%", "prune nothing when a pass would prune more than this share of the owned objects (and more than one); 0 turns the guard off")
	f.DurationVar(&s.pruneGrace, "prune-grace", 0, "keep an object whose manifest disappeared running this long before pruning it (PrunePending)")
	f.DurationVar(&s.maxLease, "max-lease", 24*time.Hour, "a pause lease ends at most this long after it was taken")
}

// parseShare reads --max-prune: "50%", or a share in [0, 1] ("0.5", "0").
func parseShare(s string) (float64, error) {
	t := strings.TrimSpace(s)
	pct := strings.HasSuffix(t, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(t, "%"), 64)
	if err == nil && pct {
		v /= 100
	}
	if err != nil || v < 0 || v > 1 {
		return 0, fmt.Errorf("--max-prune must be a percentage (50%%) or a share in [0, 1], got %q", s)
	}
	return v, nil
}

// config is the reconcile.Safety of these flags (the zero value, rails
// off but leases read, for a command without them).
func (s *safetyFlags) config(stateDir string, readOnly bool) (reconcile.Safety, error) {
	c := reconcile.Safety{StateDir: stateDir, ReadOnly: readOnly, MaxLease: 24 * time.Hour}
	if s == nil {
		return c, nil
	}
	share, err := parseShare(s.maxPrune)
	if err != nil {
		return c, err
	}
	if s.pruneGrace < 0 {
		return c, fmt.Errorf("--prune-grace must not be negative")
	}
	c.MaxPrune, c.PruneGrace, c.MaxLease = share, s.pruneGrace, s.maxLease
	return c, nil
}

// watchSafety wakes a pass when a lease or a prune confirmation is
// written or removed in the state dir (pause, resume, prune --confirm),
// polling every interval: that is the latency of a resume on a running
// agent. Lease expiries need no poll (the pass asks to be run then).
func watchSafety(stateDir string, interval time.Duration) func(ctx context.Context, wake func()) error {
	return func(ctx context.Context, wake func()) error {
		t := time.NewTicker(interval)
		defer t.Stop()
		last := reconcile.SafetySignature(stateDir)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if cur := reconcile.SafetySignature(stateDir); cur != last {
				last = cur
				wake()
			}
		}
	}
}
