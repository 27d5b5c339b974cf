package reconcile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/desired"
)

// The Reconciler's side of rollouts (the planner's is plan_rollout.go):
// the jitter gate between waves, the acknowledgements of `reconciler
// rollout resume`, and the rollout record in the state dir that `rollout
// status` and `status` read.
//
// The record is written by applying passes only, when it changes, with
// renameio (temp file, fsync, rename): a killed agent's successor reads it
// back and goes on counting the same rollout. The jitter gate lives in
// memory: an agent restarted during it admits the next wave at once.

// Rollout state dir files: the agent's record, and the operator's
// acknowledgements (written by `reconciler rollout resume`).
const (
	RolloutFileName       = "rollout.json"
	RolloutResumeFileName = "rollout-resume.json"
)

// RolloutConfig are the rollout settings beyond Input's.
type RolloutConfig struct {
	// MinReady: see RolloutInput.
	MinReady time.Duration
	// Jitter: before each wave after the first, the agent waits a random
	// time in [0, Jitter) once the previous wave is ready.
	Jitter time.Duration
}

// RolloutRecord is the agent's account of the current or last rollout.
type RolloutRecord struct {
	// Active: services wait for their wave, or a restarted one is not
	// ready yet.
	Active  bool       `json:"active"`
	Started time.Time  `json:"started"`
	Ended   *time.Time `json:"ended,omitempty"`
	Updated time.Time  `json:"updated"`
	// Restarted are the services restarted by this rollout so far, in
	// wave order.
	Restarted []string `json:"restarted,omitempty"`
	// WaveCount is how many waves were admitted so far.
	WaveCount int `json:"waveCount"`
	// Last is the latest pass's report (nil once ended).
	Last *RolloutReport `json:"last,omitempty"`
}

// Done are the services restarted and not pending again (a newer
// version of one restarted earlier makes it pending).
func (rec RolloutRecord) Done() []string {
	var pending []string
	if rec.Last != nil {
		pending = rec.Last.Pending()
	}
	var out []string
	for _, u := range rec.Restarted {
		if !slices.Contains(pending, u) {
			out = append(out, u)
		}
	}
	return out
}

// Total is the rollout's size as known now: done plus pending.
func (rec RolloutRecord) Total() int {
	n := len(rec.Done())
	if rec.Last != nil {
		n += len(rec.Last.Pending())
	}
	return n
}

// RolloutResume is what `reconciler rollout resume` writes.
type RolloutResume struct {
	Time time.Time `json:"time"`
	UID  int       `json:"uid"`
	User string    `json:"user"`
	// Acks: unit → hash of the failed version let pass (RolloutInput.Acks).
	Acks map[string]string `json:"acks"`
}

// ReadRolloutRecord reads the record in stateDir (ok false: none yet).
func ReadRolloutRecord(stateDir string) (RolloutRecord, bool, error) {
	var rec RolloutRecord
	// Trusted: a forged record would mark restarts as done and the
	// rollout as settled.
	b, err := desired.ReadTrusted(filepath.Join(stateDir, RolloutFileName))
	if errors.Is(err, os.ErrNotExist) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, false, fmt.Errorf("%s: %w", RolloutFileName, err)
	}
	return rec, true, nil
}

// ReadRolloutResume reads the acknowledgements in stateDir (empty: none).
func ReadRolloutResume(stateDir string) (RolloutResume, error) {
	var rr RolloutResume
	// Trusted: a forged acknowledgement would resume a halted rollout.
	b, err := desired.ReadTrusted(filepath.Join(stateDir, RolloutResumeFileName))
	if errors.Is(err, os.ErrNotExist) {
		return rr, nil
	}
	if err != nil {
		return rr, err
	}
	if err := json.Unmarshal(b, &rr); err != nil {
		return rr, fmt.Errorf("%s: %w", RolloutResumeFileName, err)
	}
	return rr, nil
}

// WriteRolloutResume replaces the acknowledgements atomically.
func WriteRolloutResume(stateDir string, rr RolloutResume) error {
	b, err := json.MarshalIndent(rr, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	return writeStateFile(filepath.Join(stateDir, RolloutResumeFileName), append(b, '\n'))
}

// rolloutInput is the planner's rollout input for a pass at now.
func (r *Reconciler) rolloutInput(log *zap.Logger) RolloutInput {
	r.retrustRollout(log)
	in := RolloutInput{MinReady: r.cfg.Rollout.MinReady, HoldUntil: r.rolloutGate, Distrusted: r.rolloutRefused}
	if r.rolloutRec.Active || len(r.rolloutRecent) > 0 {
		in.Members = map[string]bool{}
		for _, u := range r.rolloutRec.Restarted {
			in.Members[u] = r.rolloutRec.Active
		}
		for _, u := range r.rolloutRecent {
			in.Members[u] = true
		}
	}
	if r.cfg.MaxParallelRestarts <= 0 || r.cfg.Safety.StateDir == "" {
		return in
	}
	rr, err := ReadRolloutResume(r.cfg.Safety.StateDir)
	if err != nil {
		log.Warn("rollout acknowledgements ignored", zap.Error(err))
	}
	in.Acks = rr.Acks
	return in
}

// armJitter reports whether this applying pass must hold the wave it would
// admit: a later wave, with --rollout-jitter, and no gate drawn yet. It
// draws the gate (the caller plans again with it).
func (r *Reconciler) armJitter(plan Plan, now time.Time) bool {
	if r.cfg.Rollout.Jitter <= 0 || plan.Rollout == nil || len(plan.Rollout.Admitted) == 0 || !r.rolloutGate.IsZero() || r.rolloutRec.WaveCount == 0 || !r.rolloutRec.Active {
		return false
	}
	r.rolloutGate = now.Add(rand.N(r.cfg.Rollout.Jitter))
	return true
}

// rolloutPoll is how often the agent looks at a rollout in flight.
const rolloutPoll = time.Second

// rolloutWake merges the rollout's next moment (the jitter gate, a
// service reaching --min-ready) into a requeue delay.
func (r *Reconciler) rolloutWake(requeue time.Duration, plan Plan, now time.Time) time.Duration {
	var at []time.Time
	if !r.rolloutGate.IsZero() {
		at = append(at, r.rolloutGate)
	}
	if plan.Rollout != nil && !plan.Rollout.ReadyAt.IsZero() {
		at = append(at, plan.Rollout.ReadyAt)
	}
	if r.rolloutRec.Active && (plan.Rollout == nil || !plan.Rollout.Halted && len(plan.Rollout.Failed) == 0) {
		// A wave in flight: look again soon, whatever wakes the loop (the
		// agent's own restarts wake no pass; readiness of a service
		// without a probe is its active state).
		at = append(at, now.Add(rolloutPoll))
	}
	for _, t := range at {
		d := max(t.Sub(now), time.Millisecond)
		if requeue == 0 || d < requeue {
			requeue = d
		}
	}
	return requeue
}

// afterRollout updates the rollout record after an applying pass planned
// plan at now, records the rollout's start and end as events, and saves
// the record when it changed.
func (r *Reconciler) afterRollout(log *zap.Logger, plan Plan, now time.Time) {
	if r.cfg.MaxParallelRestarts <= 0 {
		return
	}
	rep := plan.Rollout
	if rep != nil && len(rep.Admitted) > 0 && !r.rolloutGate.IsZero() && !now.Before(r.rolloutGate) {
		r.rolloutGate = time.Time{} // the gated wave is admitted
	}
	rec := r.rolloutRec
	hasCands := rep != nil && (len(rep.Admitted) > 0 || len(rep.Waves) > 0)
	switch {
	case hasCands && !rec.Active && len(rep.Waves) == 0:
		// Every candidate fits in this wave: no rollout to record (one
		// pass per edit, no events). Its services still hold their slots
		// until ready, should more changes come meanwhile.
		r.rolloutRecent = append(r.rolloutRecent, rep.Admitted...)
		return
	case hasCands && !rec.Active:
		rec = RolloutRecord{Active: true, Started: now, Restarted: slices.Clone(r.rolloutRecent)}
		r.event(Normal, ReasonRolloutStarted, "", "", "", fmt.Sprintf("rollout started: %d services to restart, at most %d at a time", len(rep.Admitted)+len(rep.Pending()), rep.MaxParallel))
	case !rec.Active:
		if !restartedUnsettled(r.rolloutRecent, rep) {
			r.rolloutRecent = nil
		}
		return
	}
	r.rolloutRecent = nil
	prev, _ := json.Marshal(r.rolloutRec) // the record before this pass
	// A newer version of a service the rollout restarted extends it: the
	// service is pending again (Done leaves it out) and restarted again.
	if rep != nil && len(rep.Admitted) > 0 {
		rec.WaveCount++
		for _, u := range rep.Admitted {
			if !slices.Contains(rec.Restarted, u) {
				rec.Restarted = append(rec.Restarted, u)
			}
		}
	}
	rec.Last = rep
	if !hasCands && !restartedUnsettled(rec.Restarted, rep) {
		end := now
		rec.Active, rec.Ended, rec.Last = false, &end, nil
		r.rolloutGate = time.Time{}
		r.event(Normal, ReasonRolloutComplete, "", "", "", fmt.Sprintf("rollout complete: %d services restarted in %d waves in %s",
			len(rec.Restarted), rec.WaveCount, now.Sub(rec.Started).Round(10*time.Millisecond)))
	}
	cur, _ := json.Marshal(rec)
	r.rolloutRec = rec
	if bytes.Equal(prev, cur) || r.cfg.Safety.StateDir == "" || r.cfg.Safety.ReadOnly {
		return
	}
	if r.rolloutRefused != "" {
		// Replacing the refused file would make this agent's partial
		// record trusted, and forget the halt it may hold.
		log.Warn("rollout record not saved: the file there is refused", zap.String("why", r.rolloutRefused))
		return
	}
	rec.Updated = now
	r.rolloutRec.Updated = now
	b, err := json.MarshalIndent(rec, "", "  ")
	if err == nil {
		err = writeStateFile(filepath.Join(r.cfg.Safety.StateDir, RolloutFileName), append(b, '\n'))
	}
	if err != nil {
		log.Warn("rollout record not saved", zap.Error(err))
	}
}

// restartedUnsettled reports whether a service the rollout restarted is
// not ready yet or failed (the rollout is not over until it settles).
func restartedUnsettled(restarted []string, rep *RolloutReport) bool {
	if rep == nil {
		return false
	}
	for _, u := range restarted {
		if slices.Contains(rep.NotReady, u) {
			return true
		}
		for _, f := range rep.Failed {
			if f.Unit == u {
				return true
			}
		}
	}
	return false
}

// finishRolloutUnpaced ends the rollout a paced agent left in flight
// (killed or stopped mid-rollout) once a pass without pacing (apply, or
// run with --max-parallel-restarts 0) has run all its steps without a
// failure: such a pass restarts every service that needs it at once, so
// nothing of that rollout is pending any more. Without it status and
// `rollout status` kept showing the rollout in progress, its converged
// services "pending", until a paced agent ran again.
func (r *Reconciler) finishRolloutUnpaced(log *zap.Logger, outcomes []StepOutcome, now time.Time) {
	if r.cfg.MaxParallelRestarts > 0 || r.cfg.Safety.StateDir == "" || r.cfg.Safety.ReadOnly {
		return
	}
	for _, o := range outcomes {
		if o.Err != nil {
			return
		}
	}
	rec, ok, err := ReadRolloutRecord(r.cfg.Safety.StateDir)
	if err != nil || !ok || !rec.Active {
		return // a refused record is left as it is (it may hold a halt)
	}
	end := now
	rec.Active, rec.Ended, rec.Last, rec.Updated = false, &end, nil, now
	b, err := json.MarshalIndent(rec, "", "  ")
	if err == nil {
		err = writeStateFile(filepath.Join(r.cfg.Safety.StateDir, RolloutFileName), append(b, '\n'))
	}
	if err != nil {
		log.Warn("rollout record not saved", zap.Error(err))
		return
	}
	r.event(Normal, ReasonRolloutComplete, "", "", "", fmt.Sprintf("rollout complete: %d services restarted in %d waves, the rest by a pass without pacing",
		len(rec.Restarted), rec.WaveCount))
}

// loadRollout reads the record a previous agent left (New).
func (r *Reconciler) loadRollout() {
	if r.cfg.MaxParallelRestarts <= 0 || r.cfg.Safety.StateDir == "" {
		return
	}
	rec, ok, err := ReadRolloutRecord(r.cfg.Safety.StateDir)
	if err != nil {
		// Not an empty record: that would forget a halt (RolloutInput.Distrusted).
		r.log.Warn("rollout record refused", zap.Error(err))
		r.rolloutRefused = err.Error()
		return
	}
	if ok {
		r.rolloutRec = rec
	}
}

// retrustRollout reads a refused rollout record again (each pass while it
// is refused) and takes it once it is trusted, or gone.
func (r *Reconciler) retrustRollout(log *zap.Logger) {
	if r.rolloutRefused == "" {
		return
	}
	rec, ok, err := ReadRolloutRecord(r.cfg.Safety.StateDir)
	if err != nil {
		r.rolloutRefused = err.Error()
		return
	}
	log.Info("rollout record trusted again", zap.Bool("present", ok))
	r.rolloutRefused = ""
	if ok {
		r.rolloutRec = mergeRollout(rec, r.rolloutRec)
	}
}

// mergeRollout is the record read back (rec) with what this agent did
// while it was refused (mem): services restarted by either stay members,
// and a rollout this agent has in flight stays in flight.
func mergeRollout(rec, mem RolloutRecord) RolloutRecord {
	for _, u := range mem.Restarted {
		if !slices.Contains(rec.Restarted, u) {
			rec.Restarted = append(rec.Restarted, u)
		}
	}
	if mem.Active {
		if !rec.Active || mem.Started.Before(rec.Started) {
			rec.Started = mem.Started
		}
		rec.Active, rec.Ended = true, nil
		rec.WaveCount = max(rec.WaveCount, mem.WaveCount)
		if mem.Last != nil {
			rec.Last = mem.Last
		}
	}
	return rec
}
