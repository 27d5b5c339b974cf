package sdbus

import (
	"context"
	"errors"
	"fmt"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// Property names one property of a unit object: its interface
// (org.freedesktop.systemd1.Unit, ...Service, ...Timer) and name.
type Property struct {
	Interface, Name string
}

// PropertyQuery is the properties to read of one unit.
type PropertyQuery struct {
	Unit  string
	Props []Property
}

// GetUnitPropertiesContext reads the named properties of many units with
// one Properties.Get per property, pipelined on a connection of its own
// (the property pipe, pipe.go): a hundred Gets in flight, replies read as
// they come. For the few properties a planner needs this costs systemd a
// third of what one GetAll of every interface does, and costs the caller
// almost no CPU.
//
// The pipe is kept open for pipeIdle after a call, for the next call of
// the same observation, and then closed (pipepool.go): systemd sends every
// signal to every connection on its private socket, unasked, so a pipe
// kept open between passes would have PID 1 queue signals for a reader
// that is not reading. Calls may run concurrently, each on its own pipe.
//
// Outcomes:
//   - (props, errs, nil): props[i] holds the values of queries[i] that
//     could be read (unwrapped from their variants, as GetAllPropertiesContext
//     gives them), errs[i] joins the errors of the others (nil if none).
//   - (nil, nil, err): the pipe failed (dial, I/O, ctx); nothing is
//     returned. The next call dials again.
func (c *Conn) GetUnitPropertiesContext(ctx context.Context, queries []PropertyQuery) ([]map[string]any, []error, error) {
	var calls []getCall
	owner := make([]int, 0, len(queries)*8)
	for i, q := range queries {
		path := godbus.ObjectPath(unitPathPrefix + sddbus.PathBusEscape(q.Unit))
		for _, p := range q.Props {
			calls = append(calls, getCall{path: path, iface: p.Interface, name: p.Name})
			owner = append(owner, i)
		}
	}
	var vals []any
	var errs []error
	p, err := c.takePipe(ctx)
	switch {
	case errors.Is(err, errPipeAddress):
		vals, errs = c.getGodbus(ctx, calls)
	case err != nil:
		return nil, nil, err
	default:
		vals, errs, err = p.getBatch(ctx, calls)
		c.putPipe(p, err == nil)
		if err != nil {
			return nil, nil, fmt.Errorf("read unit properties: %w", err)
		}
		c.pipeBatches.Add(1)
	}
	props := make([]map[string]any, len(queries))
	qerrs := make([]error, len(queries))
	for i, q := range queries {
		props[i] = make(map[string]any, len(q.Props))
	}
	for k, call := range calls {
		i := owner[k]
		if errs[k] != nil {
			qerrs[i] = joinErr(qerrs[i], fmt.Errorf("%s: %w", call.name, errs[k]))
			continue
		}
		props[i][call.name] = vals[k]
	}
	return props, qerrs, nil
}

// getGodbus is getBatch over the godbus connection, pipelineWindow calls
// in flight: for an address the pipe does not dial.
func (c *Conn) getGodbus(ctx context.Context, calls []getCall) ([]any, []error) {
	vals, errs := make([]any, len(calls)), make([]error, len(calls))
	bc, release, err := c.bus(ctx)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return vals, errs
	}
	defer release()
	done := make(chan *godbus.Call, pipeWindow)
	index := make(map[*godbus.Call]int, len(calls))
	next, inflight := 0, 0
	for next < len(calls) || inflight > 0 {
		for next < len(calls) && inflight < pipeWindow {
			k := calls[next]
			call := bc.Object(systemdDest, k.path).GoWithContext(ctx, propsIface+".Get", 0, done, k.iface, k.name)
			index[call] = next
			next++
			inflight++
		}
		call := <-done
		inflight--
		i := index[call]
		if call.Err != nil {
			errs[i] = call.Err
			continue
		}
		var v godbus.Variant
		if err := call.Store(&v); err != nil {
			errs[i] = err
			continue
		}
		vals[i] = v.Value()
	}
	return vals, errs
}

func joinErr(a, b error) error {
	if a == nil {
		return b
	}
	return fmt.Errorf("%w; %w", a, b)
}
