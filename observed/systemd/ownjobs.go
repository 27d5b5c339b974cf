package systemd

import (
	"time"

	godbus "github.com/godbus/dbus/v5"
)

// How long Subscribe holds back the wakes of a unit the agent acts on.
// Variables for tests.
var (
	// ownJobMaxWait bounds the wait for the agent's job to finish (past
	// the applier's default job timeout of 90 s).
	ownJobMaxWait = 2 * time.Minute
	// ownJobSettle bounds the wait, once the job finished, for the signal
	// that shows the unit in the state the agent read back.
	ownJobSettle = 5 * time.Second
)

// ownJob is a job of the agent's own on a unit, from JobQueued until the
// signals show the unit settled.
type ownJob struct {
	// finished: the applier has its outcome; target is the unit's state
	// it read back (active "" when none: the job failed).
	finished bool
	target   hint
	// job is the unit's job id as the last Unit signal said (0: none);
	// seen: a signal showed a job on the unit since JobQueued. Until one
	// does, the unit's state is the one from before the job (the watch's
	// signals may lag behind the job's result, read on another
	// connection), and a restarted unit's old state equals its target.
	job      uint32
	seen     bool
	deadline time.Time
}

// JobQueued tells Subscribe that the agent is about to queue a job on unit
// (a start, stop or restart; actuators/systemd calls it through
// WithOwnJobs). Until the job has finished and a signal shows the unit in
// the state the agent read back afterwards (finished's active and sub; sub
// "" matches any), Subscribe records the unit's signals without waking: a
// pass's own restart does not wake another pass. A signal that shows the
// unit anywhere else afterwards (a crash after the restart) wakes as
// usual. The unit settles only once a signal showed its job (a unit's Job
// property changes with every job systemd queues), so signals that lag
// behind the job's result do not end the hold early. A unit that does
// not settle within 5 s after finished wakes too,
// or 2 min after JobQueued without finished.
//
// With the cache on, the unit is read again by the next Observe.
//
// finished must be called once the job's outcome is known, with active ""
// when the job failed or was not queued: nothing more is held back (a
// signal of the failure still on its way may then wake one more pass,
// which the failing object's backoff holds back).
func (o *Observer) JobQueued(unit string) (finished func(active, sub string)) {
	o.mu.Lock()
	if o.ownJobs == nil {
		o.ownJobs = map[string]*ownJob{}
	}
	j := &ownJob{deadline: o.cfg.now().Add(ownJobMaxWait)}
	o.ownJobs[unit] = j
	if o.cache.on {
		// Read again by the next Observe whatever signals say (or, with
		// no watch, KeepReads, none will).
		o.cache.dirty[unit] = true
	}
	o.mu.Unlock()
	o.ownJobsChanged()
	return func(active, sub string) {
		defer o.ownJobsChanged()
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.ownJobs[unit] != j {
			return // expired, or superseded by a newer job
		}
		if active == "" {
			delete(o.ownJobs, unit)
			return
		}
		j.finished, j.target = true, hint{active: active, sub: sub}
		j.deadline = o.cfg.now().Add(ownJobSettle)
		if o.settled(unit, j) {
			delete(o.ownJobs, unit)
		}
	}
}

// settled reports whether unit's last known state is the target of its
// finished own job, with no job pending. Called with o.mu held.
func (o *Observer) settled(unit string, j *ownJob) bool {
	h := o.hints[unit]
	return j.finished && j.seen && j.job == 0 && h.active == j.target.active && (j.target.sub == "" || h.sub == j.target.sub)
}

// ownJobsChanged tells a running Subscribe to re-arm its deadline timer.
func (o *Observer) ownJobsChanged() {
	select {
	case o.ownJobsKick <- struct{}{}:
	default:
	}
}

// ownJobSignal accounts for a signal about unit while the agent's own job
// j runs (the signal never wakes then): it records the unit's job id and
// ends the hold once the unit settled. Called with o.mu held, after the
// hint was updated.
func (o *Observer) ownJobSignal(unit string, j *ownJob, iface string, props map[string]godbus.Variant) {
	if iface == unitIface {
		if v, ok := props["Job"]; ok {
			j.job = jobIDOf(v.Value())
			j.seen = j.seen || j.job != 0
		}
	}
	if o.settled(unit, j) {
		delete(o.ownJobs, unit)
	}
}

// jobIDOf reads a Unit.Job value, a (uo) struct: the id of the unit's
// pending job, 0 when none.
func jobIDOf(v any) uint32 {
	s, ok := v.([]any)
	if !ok || len(s) == 0 {
		return 0
	}
	id, _ := s[0].(uint32)
	return id
}

// expireOwnJobs drops the own jobs past their deadline and reports
// whether any of them must wake (the unit never settled where the agent
// left it: something else changed it meanwhile). It returns the next
// deadline (zero when none).
func (o *Observer) expireOwnJobs(now time.Time) (wake bool, next time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for unit, j := range o.ownJobs {
		if !now.Before(j.deadline) {
			delete(o.ownJobs, unit)
			wake = true
			continue
		}
		if next.IsZero() || j.deadline.Before(next) {
			next = j.deadline
		}
	}
	return wake, next
}
