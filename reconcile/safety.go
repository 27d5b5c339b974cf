package reconcile

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/desired"
)

// Safety configures the operator's safety rails of a Reconciler (issue
// 14). The zero value turns them off (no leases, no guard, no grace).
type Safety struct {
	// StateDir holds the leases (leases/), the prune deadlines
	// (prune-pending.json), the objects a blocked prune holds
	// (prune-held.json) and a prune confirmation (prune-confirm.json); ""
	// keeps deadlines and held objects in memory and reads no leases.
	StateDir string
	// ReadOnly (diff): read the state dir, never write it.
	ReadOnly bool
	// MaxLease caps a lease: it ends at most this long after it was
	// taken, whatever it asked for (0: no cap).
	MaxLease time.Duration
	// MaxPrune and PruneGrace: see SafetyInput.
	MaxPrune   float64
	PruneGrace time.Duration
}

// PrunePendingFileName, PruneHeldFileName and PruneConfirmFileName are
// the state dir files of delayed prune, of the mass-prune guard's blocks
// (the objects a blocked prune holds until it is confirmed, by ID, with
// when they were first held) and of `reconciler prune --confirm`.
const (
	PrunePendingFileName = "prune-pending.json"
	PruneHeldFileName    = "prune-held.json"
	PruneConfirmFileName = "prune-confirm.json"
)

// PruneConfirm is an operator's confirmation of a blocked prune: the
// object IDs `reconciler prune --confirm` showed, valid until Until and
// used once.
type PruneConfirm struct {
	Objects []string  `json:"objects"`
	Until   time.Time `json:"until"`
}

// WritePruneConfirm stores a confirmation in stateDir (crash-safe) for the
// next applying pass, of `prune --confirm` itself or of the running agent.
func WritePruneConfirm(stateDir string, c PruneConfirm) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode prune confirmation: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := writeStateFile(filepath.Join(stateDir, PruneConfirmFileName), append(b, '\n')); err != nil {
		return fmt.Errorf("write prune confirmation: %w", err)
	}
	return nil
}

// SafetySignature changes whenever a lease or a prune confirmation is
// written or removed in stateDir; the agent polls it to wake a pass.
func SafetySignature(stateDir string) string {
	s := NewLeaseDir(stateDir).Signature()
	for _, name := range []string{PruneConfirmFileName, RolloutResumeFileName} {
		if fi, err := os.Stat(filepath.Join(stateDir, name)); err == nil {
			s += fmt.Sprintf("%s %d %d\n", name, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return s
}

// loadPending reads the persisted prune deadlines and the objects a
// blocked prune holds (none when missing; a file that does not parse is
// ignored with a warning).
func (r *Reconciler) loadPending() {
	if r.cfg.Safety.StateDir != "" {
		r.pending = r.readTimes(PrunePendingFileName)
		// Trusted like the deadlines: a forged file could hold objects
		// (never prune one); one refused is a block forgotten, and the
		// share judges the pass again.
		r.pruneHeld = r.readTimes(PruneHeldFileName)
	}
}

// readTimes reads a state dir file holding a JSON object of times by
// name: nil when it is missing, or unreadable or malformed (then with a
// warning naming the file).
func (r *Reconciler) readTimes(name string) map[string]time.Time {
	path := filepath.Join(r.cfg.Safety.StateDir, name)
	b, err := desired.ReadTrusted(path) // a forged prune deadline would prune early
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.log.Warn("state file not read", zap.String("path", path), zap.Error(err))
		}
		return nil
	}
	var m map[string]time.Time
	if err := json.Unmarshal(b, &m); err != nil {
		r.log.Warn("state file ignored", zap.String("path", path), zap.Error(err))
		return nil
	}
	return m
}

// safetyInput reads what the planner needs for the safety rails: the
// leases in force (expired ones are returned apart), the prune deadlines
// and a confirmation.
func (r *Reconciler) safetyInput(log *zap.Logger, opts Options, now time.Time) (SafetyInput, []Lease) {
	sc := r.cfg.Safety
	in := SafetyInput{Now: now, MaxPrune: sc.MaxPrune, AllowPrune: opts.AllowPrune, PruneGrace: sc.PruneGrace,
		PrunePending: maps.Clone(r.pending), PruneHeld: maps.Clone(r.pruneHeld)}
	if sc.StateDir == "" {
		return in, nil
	}
	leases, err := NewLeaseDir(sc.StateDir).List()
	if err != nil {
		log.Warn("some pause leases are unreadable and ignored", zap.Error(err))
	}
	var expired []Lease
	for _, l := range leases {
		if sc.MaxLease > 0 && l.Until.After(l.Since.Add(sc.MaxLease)) {
			l.Until = l.Since.Add(sc.MaxLease)
		}
		if l.Active(now) {
			in.Leases = append(in.Leases, l)
		} else {
			expired = append(expired, l)
		}
	}
	// Trusted: a confirmation written by anyone but root would let them
	// prune past the mass-prune guard.
	if b, err := desired.ReadTrusted(filepath.Join(sc.StateDir, PruneConfirmFileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("prune confirmation ignored", zap.Error(err))
	} else if err == nil {
		var c PruneConfirm
		if err := json.Unmarshal(b, &c); err != nil {
			log.Warn("prune confirmation ignored", zap.Error(err))
		} else if now.Before(c.Until) {
			in.ConfirmedPrune = map[string]bool{}
			for _, id := range c.Objects {
				in.ConfirmedPrune[id] = true
			}
		}
	}
	return in, expired
}

// afterPlan does the state-dir bookkeeping of an applying pass's safety
// rails: expired leases are removed (LeaseExpired; this pass converges
// their objects), the prune deadlines and the objects a blocked prune
// holds are saved, a used or stale confirmation is removed.
func (r *Reconciler) afterPlan(log *zap.Logger, in SafetyInput, expired []Lease, plan Plan) {
	sc := r.cfg.Safety
	persist := sc.StateDir != "" && !sc.ReadOnly
	if !maps.Equal(r.pending, plan.PrunePending) {
		r.pending = maps.Clone(plan.PrunePending)
		if persist {
			if err := r.saveTimes(PrunePendingFileName, r.pending); err != nil {
				log.Warn("prune deadlines not persisted", zap.Error(err))
			}
		}
	}
	if !maps.EqualFunc(r.pruneHeld, plan.PruneHeld, time.Time.Equal) {
		r.pruneHeld = maps.Clone(plan.PruneHeld)
		if persist {
			if err := r.saveTimes(PruneHeldFileName, r.pruneHeld); err != nil {
				log.Warn("objects held by a blocked prune not persisted", zap.Error(err))
			}
		}
	}
	if sc.StateDir == "" || sc.ReadOnly {
		return
	}
	ld := NewLeaseDir(sc.StateDir)
	for _, l := range expired {
		if err := ld.RemoveIf(l); err != nil {
			log.Warn("expired lease not removed", zap.String("object", l.Object), zap.Error(err))
		}
		r.event(Normal, ReasonLeaseExpired, l.Object, "", "", fmt.Sprintf("lease expired at %s (%s); converging",
			l.Until.UTC().Format(LayoutMilli), strings.TrimPrefix(l.Describe(l.Since), "paused until ")))
	}
	// The confirmation as it is now (prune --confirm may have written a
	// new one since the pass read it): removed when this pass used it, or
	// when it is stale.
	confirm := filepath.Join(sc.StateDir, PruneConfirmFileName)
	b, err := desired.ReadTrusted(confirm)
	if err != nil {
		return
	}
	var c PruneConfirm
	stale := json.Unmarshal(b, &c) != nil || !in.Now.Before(c.Until)
	used := len(plan.Pruned) > 0 && len(c.Objects) > 0
	for _, id := range c.Objects {
		used = used && in.ConfirmedPrune[id]
	}
	if stale || used {
		if err := os.Remove(confirm); err != nil {
			log.Warn("prune confirmation not removed", zap.Error(err))
		}
	}
}

// saveTimes writes a state dir file of times by name (readTimes reads
// it) atomically: temporary file, fsync, rename.
func (r *Reconciler) saveTimes(name string, m map[string]time.Time) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	if m == nil {
		b = []byte("{}")
	}
	if err := os.MkdirAll(r.cfg.Safety.StateDir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := writeStateFile(filepath.Join(r.cfg.Safety.StateDir, name), append(b, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// wakeAfter merges the safety rails' next wake-up (a lease expiry, a
// prune deadline) into a requeue delay.
func wakeAfter(requeue time.Duration, in SafetyInput, rep SafetyReport) time.Duration {
	w := in.NextWake(rep)
	if w.IsZero() {
		return requeue
	}
	d := w.Sub(in.Now)
	if d <= 0 {
		d = time.Millisecond
	}
	if requeue == 0 || d < requeue {
		return d
	}
	return requeue
}
