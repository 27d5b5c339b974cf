package ledger

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile"
)

// ParsePolicy reads --alert-default: "N/DURATION" (10/1h) or "off".
func ParsePolicy(s string) (Policy, error) {
	if s == "" || s == "off" || s == "0" {
		return Policy{}, nil
	}
	n, d, ok := strings.Cut(s, "/")
	if !ok {
		return Policy{}, fmt.Errorf("--alert-default must be RESTARTS/WITHIN like 10/1h, or off; got %q", s)
	}
	restarts, err := strconv.Atoi(n)
	if err != nil || restarts < 1 {
		return Policy{}, fmt.Errorf("--alert-default: restarts must be a positive number, got %q", n)
	}
	within, err := time.ParseDuration(d)
	if err != nil || within <= 0 {
		return Policy{}, fmt.Errorf("--alert-default: bad window %q", d)
	}
	return Policy{Restarts: restarts, Within: within}, nil
}

// policy returns the alert policy of a service object; for one no
// longer desired (nil), the spec.alert it last had, if any.
func (k *Keeper) policy(o *desired.Object, obj string) Policy {
	if o == nil {
		if p, ok := k.lastAlert[obj]; ok {
			return p
		}
		return k.def
	}
	if o.Service == nil {
		return k.def
	}
	if a := o.Service.Alert; a != nil {
		return Policy{Restarts: a.Restarts, Within: a.Within.D(), Command: a.Command}
	}
	return k.def
}

// alert fires the storm alert of obj when its policy says so.
func (k *Keeper) alert(ctx context.Context, o *desired.Object, obj, unit string, now time.Time) {
	p := k.policy(o, obj)
	if !p.Enabled() {
		return
	}
	count, err := k.store.StormRestarts(ctx, obj, now.Add(-p.Within))
	if err != nil {
		k.log.Error("restart count", zap.Error(err))
		return
	}
	last, err := k.store.AlertFired(ctx, obj)
	if err != nil {
		k.log.Error("alert state", zap.Error(err))
		return
	}
	if !Storm(p, count, last, now) {
		return
	}
	if err := k.store.SetAlertFired(ctx, obj, now); err != nil {
		// Without the mark the alert could fire again next pass: skip it.
		k.log.Error("alert state not written; alert skipped", zap.String("object", obj), zap.Error(err))
		return
	}
	ev := reconcile.Event{Time: now, LastSeen: now, Type: reconcile.Warning, Reason: reconcile.ReasonRestartStorm, Object: obj, Unit: unit,
		Message: fmt.Sprintf("%d or more restarts within %s", p.Restarts, p.Within), Count: 1}
	k.events.Record(ev)
	k.log.Warn("restart storm", zap.String("object", obj), zap.Int("restarts", count), zap.Duration("within", p.Within))
	if k.sink != nil {
		k.sink.Storm(obj)
	}
	if len(p.Command) == 0 {
		return
	}
	// The hook gets the stored event with the exact count (the stored
	// message stays the same for every storm, so repeats fold into one).
	ev.Message = fmt.Sprintf("%d restarts within %s (threshold %d)", count, p.Within, p.Restarts)
	select {
	case k.hooks <- hookJob{command: p.Command, event: ev}:
	default:
		k.events.Record(reconcile.Event{Time: now, Type: reconcile.Warning, Reason: reconcile.ReasonAlertHookFailed, Object: obj, Unit: unit,
			Message: "alert hook not run: too many hooks pending"})
	}
}
