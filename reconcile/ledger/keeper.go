package ledger

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/store"
)

// Store is what the Keeper needs of the agent's store (*store.Store).
type Store interface {
	AddRestarts(ctx context.Context, rs []store.Restart) error
	StormRestarts(ctx context.Context, object string, since time.Time) (int, error)
	AlertFired(ctx context.Context, object string) (time.Time, error)
	SetAlertFired(ctx context.Context, object string, t time.Time) error
	PutBaseline(ctx context.Context, boot string, data []byte) error
	Baseline(ctx context.Context) (string, []byte, error)
}

// Sink is told about every restart and storm (the agent's metrics).
type Sink interface {
	Restarted(object string, cause Cause, n int)
	Storm(object string)
}

// Config of a Keeper.
type Config struct {
	Store  Store
	Events reconcile.Recorder
	// Sink may be nil.
	Sink Sink
	Log  *zap.Logger
	// Default is the host-wide alert policy of services without spec.alert.
	Default Policy
	// HookTimeout bounds one spec.alert.command run (0: 30s).
	HookTimeout time.Duration
	// BootID tags the saved baseline (ReadBootID); empty: no baseline is
	// saved or loaded.
	BootID string
}

// Keeper keeps the restart ledger across passes: after each pass it
// detects the restarts since the previous observation (Detect), stores
// them, records Restarted events, fires storm alerts (Storm) and queues
// their hooks for RunHooks. Observe runs on the loop goroutine; RunHooks
// on a goroutine its caller owns.
type Keeper struct {
	store       Store
	events      reconcile.Recorder
	sink        Sink
	log         *zap.Logger
	def         Policy
	hookTimeout time.Duration
	hooks       chan hookJob

	prev    *observed.State
	between []reconcile.StepOutcome
	// bootID tags the saved baseline: counters from another boot are no baseline.
	bootID       string
	baselineRead bool
	// saved is the baseline as last read or written (its JSON): an
	// unchanged one is not written again (one commit less per pass).
	saved []byte
	// lastAlert is the spec.alert of each service object last seen with
	// one: restarts counted in the pass that prunes the object (its crash
	// loop until the stop) are judged by the threshold it asked for, not
	// the default.
	lastAlert map[string]Policy
}

// NewKeeper returns a Keeper; nothing runs until Observe or RunHooks.
func NewKeeper(c Config) *Keeper {
	log := c.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &Keeper{store: c.Store, events: c.Events, sink: c.Sink, log: log.Named("ledger"), def: c.Default,
		hookTimeout: c.HookTimeout, hooks: make(chan hookJob, 16), bootID: c.BootID}
}

// Observe takes one pass result. A pass without an observation only
// carries its steps over: they still happened before the next one.
func (k *Keeper) Observe(ctx context.Context, res reconcile.Result, now time.Time) {
	if res.Observed == nil {
		k.between = append(k.between, res.Outcomes...)
		return
	}
	k.ledger(ctx, res, now)
}

// ledger records the restarts since the previous observation and fires
// storm alerts.
func (k *Keeper) ledger(ctx context.Context, res reconcile.Result, now time.Time) {
	k.noteAlerts(res.Desired)
	if k.prev == nil && !k.baselineRead {
		k.baselineRead = true
		k.prev = k.loadBaseline(ctx)
	}
	found := Detect(Input{Prev: k.prev, Cur: res.Observed, Between: k.between, Journaled: res.RestartPending})
	k.prev, k.between = res.Observed, res.Outcomes
	// The baseline moves on only once the restarts it covers are recorded:
	// an agent killed in between counts them again on restart (at least
	// once) instead of losing them (found by the torture suite).
	defer k.saveBaseline(ctx, res.Observed)
	if len(found) == 0 {
		return
	}
	var rows []store.Restart
	objs := map[string]*desired.Object{}
	for _, o := range res.Desired {
		objs[o.ID()] = o
	}
	touched := map[string]string{}
	for _, r := range found {
		for range r.Count {
			rows = append(rows, store.Restart{Time: now, Object: r.Object, Unit: r.Unit, Cause: string(r.Cause)})
		}
		typ := reconcile.Warning
		if r.Cause == CauseAgent {
			typ = reconcile.Normal
		}
		k.events.Record(reconcile.Event{Time: now, Type: typ, Reason: reconcile.ReasonRestarted, Object: r.Object, Unit: r.Unit,
			Message: fmt.Sprintf("%s restarted (cause %s)", r.Unit, r.Cause), Count: r.Count})
		if k.sink != nil {
			k.sink.Restarted(r.Object, r.Cause, r.Count)
		}
		touched[r.Object] = r.Unit
	}
	if err := k.store.AddRestarts(ctx, rows); err != nil {
		k.log.Error("restart ledger not written", zap.Error(err))
		return
	}
	for obj, unit := range touched {
		k.alert(ctx, objs[obj], obj, unit, now)
	}
}

// noteAlerts keeps the spec.alert of the desired service objects
// (lastAlert); an object no longer desired keeps its last.
func (k *Keeper) noteAlerts(objs []*desired.Object) {
	for _, o := range objs {
		if o.Service == nil {
			continue
		}
		if a := o.Service.Alert; a != nil {
			if k.lastAlert == nil {
				k.lastAlert = map[string]Policy{}
			}
			k.lastAlert[o.ID()] = Policy{Restarts: a.Restarts, Within: a.Within.D(), Command: a.Command}
		} else if k.lastAlert != nil {
			delete(k.lastAlert, o.ID())
		}
	}
}
