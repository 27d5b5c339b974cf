package journald

import (
	"strconv"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"

	"resil.dev/resil/reconcile"
)

// Enabled reports whether the journal's socket answers (journal.Enabled).
func Enabled() bool { return journal.Enabled() }

// SendFunc is journal.Send's signature (tests replace it).
type SendFunc func(message string, priority journal.Priority, vars map[string]string) error

// Recorder implements reconcile.Recorder by sending to the journal.
type Recorder struct {
	// Every bounds how often a repeat is sent again (default 10 minutes).
	Every time.Duration
	send  SendFunc
	log   *zap.Logger
	mu    sync.Mutex
	last  map[string]time.Time
}

var _ reconcile.Recorder = (*Recorder)(nil)

// New returns a recorder sending with send (nil: journal.Send).
func New(send SendFunc, log *zap.Logger) *Recorder {
	if send == nil {
		send = journal.Send
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Recorder{Every: 10 * time.Minute, send: send, log: log.Named("journald"), last: map[string]time.Time{}}
}

// Fields returns the journal fields of e.
func Fields(e reconcile.Event) (string, journal.Priority, map[string]string) {
	pri := journal.PriInfo
	if e.Type == reconcile.Warning {
		pri = journal.PriWarning
	}
	msg := string(e.Reason)
	if e.Object != "" {
		msg += " " + e.Object
	}
	msg += ": " + e.Message
	vars := map[string]string{
		"SYSLOG_IDENTIFIER": "reconciler",
		"RESIL_OBJECT":      e.Object,
		"RESIL_REASON":      string(e.Reason),
		"RESIL_UNIT":        e.Unit,
		"RESIL_TYPE":        string(e.Type),
		"RESIL_COUNT":       strconv.Itoa(max(e.Count, 1)),
	}
	if e.Step != "" {
		vars["RESIL_STEP"] = e.Step
	}
	return msg, pri, vars
}

// Record implements reconcile.Recorder.
func (r *Recorder) Record(e reconcile.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Reason.Category() == reconcile.CategoryOccurrence {
		msg, pri, vars := Fields(e)
		if err := r.send(msg, pri, vars); err != nil {
			r.log.Debug("journal send failed", zap.Error(err))
		}
		return
	}
	k := e.Object + "\x00" + string(e.Reason) + "\x00" + e.Message
	r.mu.Lock()
	if t, ok := r.last[k]; ok && e.Time.Sub(t) < r.Every {
		r.mu.Unlock()
		return
	}
	r.last[k] = e.Time
	if len(r.last) > 4096 {
		for k, t := range r.last {
			if e.Time.Sub(t) >= r.Every {
				delete(r.last, k)
			}
		}
	}
	r.mu.Unlock()
	msg, pri, vars := Fields(e)
	if err := r.send(msg, pri, vars); err != nil {
		r.log.Debug("journal send failed", zap.Error(err))
	}
}
