package reconcile

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// EventType is Normal or Warning, as in Kubernetes.
type EventType string

// Event types.
const (
	Normal  EventType = "Normal"
	Warning EventType = "Warning"
)

// Event is one recorded drift, failure or change.
type Event struct {
	Time    time.Time `json:"time"`
	Type    EventType `json:"type"`
	Reason  Reason    `json:"reason"`
	Object  string    `json:"object,omitempty"`
	Unit    string    `json:"unit,omitempty"`
	Step    string    `json:"step,omitempty"`
	Message string    `json:"message"`
	Count   int       `json:"count"`
	// LastSeen is the time of the latest repeat.
	LastSeen time.Time `json:"lastSeen"`
}

// Recorder receives events. The ring below is the in-memory one; a durable
// store implements the same interface.
type Recorder interface {
	Record(e Event)
}

// Ring is a bounded in-memory event log that also logs each event with zap.
// A repeat of the latest event for the same (object, reason, message)
// bumps Count and LastSeen instead of adding a row.
type Ring struct {
	mu     sync.Mutex
	log    *zap.Logger
	buf    []Event // grows to size, then wraps
	size   int
	next   int
	full   bool
	latest map[string]int // key → index in buf
}

// NewRing returns a ring holding up to size events.
func NewRing(size int, log *zap.Logger) *Ring {
	if size <= 0 {
		size = 1024
	}
	// Not allocated up front: an agent with few events keeps few (4096
	// empty events were 0.6 MB of every agent's heap).
	return &Ring{log: log.Named("events"), size: size, latest: map[string]int{}}
}

func key(e Event) string { return e.Object + "\x00" + string(e.Reason) + "\x00" + e.Message }

// Record implements Recorder.
func (r *Ring) Record(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Count == 0 {
		e.Count = 1
	}
	e.LastSeen = e.Time
	fields := []zap.Field{zap.String("type", string(e.Type)), zap.String("reason", string(e.Reason)),
		zap.String("object", e.Object), zap.String("unit", e.Unit), zap.String("step", e.Step), zap.String("message", e.Message)}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key(e)
	if i, ok := r.latest[k]; ok && key(r.buf[i]) == k {
		// A repeat is logged like the first: the log is the operator's
		// record of what happened (a second restart of the same service
		// for the same reason is a second restart). Conditions seen again
		// by every pass do not come here (Reconciler.recordFindings).
		r.buf[i].Count++
		r.buf[i].LastSeen = e.Time
		r.logEvent(e.Type, append(fields, zap.Int("count", r.buf[i].Count)))
		return
	}
	r.logEvent(e.Type, fields)
	if len(r.buf) < r.size {
		r.buf = append(r.buf, e)
	} else {
		r.buf[r.next] = e
	}
	r.latest[k] = r.next
	r.next = (r.next + 1) % r.size
	if r.next == 0 {
		r.full = true
	}
}

func (r *Ring) logEvent(t EventType, fields []zap.Field) {
	if t == Warning {
		r.log.Warn("event", fields...)
	} else {
		r.log.Info("event", fields...)
	}
}

// Events returns the events oldest first.
func (r *Ring) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	if r.full {
		out = append(out, r.buf[r.next:]...)
	}
	return append(out, r.buf[:r.next]...)
}

// BatchRecorder is a Recorder that records several events at once (the
// store: one transaction). Declared here, by its consumer.
type BatchRecorder interface {
	Recorder
	RecordBatch(evs []Event)
}

// RecordAll records evs in order: in one RecordBatch when rec is a
// BatchRecorder, else one Record each.
func RecordAll(rec Recorder, evs []Event) {
	if len(evs) == 0 {
		return
	}
	if b, ok := rec.(BatchRecorder); ok {
		b.RecordBatch(evs)
		return
	}
	for _, e := range evs {
		rec.Record(e)
	}
}

// filled is e with its Time (now) and Count (1) set when they are not.
func (e Event) filled() Event {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Count == 0 {
		e.Count = 1
	}
	return e
}

// Fanout records each event in every recorder, in order (the ring, the
// durable store, the journal). It fills Time and Count first so they all
// keep the same values.
type Fanout []Recorder

// RecordBatch implements BatchRecorder: each recorder gets the whole batch
// (RecordAll).
func (f Fanout) RecordBatch(evs []Event) {
	evs = append([]Event(nil), evs...)
	for i := range evs {
		evs[i] = evs[i].filled()
	}
	for _, r := range f {
		if r != nil {
			RecordAll(r, evs)
		}
	}
}

// Record implements Recorder.
func (f Fanout) Record(e Event) {
	e = e.filled()
	for _, r := range f {
		if r != nil {
			r.Record(e)
		}
	}
}

// Queue hands events to a writer goroutine (Run) that records them in
// batches on dst, so a pass's steps do not wait between them for the
// event store's commits: the agent's store (SQLite) takes 0.5-1 ms a
// transaction, and an edit's write, daemon-reload and restart were each
// followed by one before the next step began. Flush writes what is queued
// and returns once it is recorded; `run` calls it after every pass,
// before the hooks that read the store (status, ledger, alerts), so they
// see every event of the pass as before. Events are recorded in the order
// they came; once Run has returned, Record writes at once. A kill -9
// loses the events not yet committed: those of the steps since the
// writer's last commit (one step's, unless a commit is slow), where a
// store written between steps lost those of the step in progress.
type Queue struct {
	dst  BatchRecorder
	wake chan struct{}

	mu      sync.Mutex
	cond    *sync.Cond
	pending []Event
	writing bool
	stopped bool
}

// NewQueue returns a Queue in front of dst; the caller runs Run.
func NewQueue(dst BatchRecorder) *Queue {
	q := &Queue{dst: dst, wake: make(chan struct{}, 1)}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Record implements Recorder.
func (q *Queue) Record(e Event) { q.RecordBatch([]Event{e}) }

// RecordBatch implements BatchRecorder.
func (q *Queue) RecordBatch(evs []Event) {
	if len(evs) == 0 {
		return
	}
	q.mu.Lock()
	q.pending = append(q.pending, evs...)
	stopped := q.stopped
	q.mu.Unlock()
	if stopped {
		q.Flush()
		return
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Run writes queued events until ctx is done, then what is left.
func (q *Queue) Run(ctx context.Context) error {
	for {
		select {
		case <-q.wake:
			q.Flush()
		case <-ctx.Done():
			q.mu.Lock()
			q.stopped = true
			q.mu.Unlock()
			q.Flush()
			return nil
		}
	}
}

// Flush records every event queued before it was called and returns once
// they are (after a write in progress, which holds earlier ones).
func (q *Queue) Flush() {
	q.mu.Lock()
	for q.writing {
		q.cond.Wait()
	}
	batch := q.pending
	q.pending = nil
	if len(batch) == 0 {
		q.mu.Unlock()
		return
	}
	q.writing = true
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		q.writing = false
		q.cond.Broadcast()
		q.mu.Unlock()
	}()
	q.dst.RecordBatch(batch)
}
