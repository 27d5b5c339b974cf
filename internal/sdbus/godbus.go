package sdbus

import (
	"context"
	"errors"
	"fmt"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// The go-systemd methods the consumers use, each on the go-systemd
// connection, which the first of them dials (Conn.godbus).

// EnableUnitFilesContext is go-systemd's method of the same name.
func (c *Conn) EnableUnitFilesContext(ctx context.Context, files []string, runtime, force bool) (bool, []sddbus.EnableUnitFileChange, error) {
	sd, done, err := c.godbus(ctx)
	if err != nil {
		return false, nil, err
	}
	defer done()
	return sd.EnableUnitFilesContext(ctx, files, runtime, force)
}

// DisableUnitFilesContext is go-systemd's method of the same name.
func (c *Conn) DisableUnitFilesContext(ctx context.Context, files []string, runtime bool) ([]sddbus.DisableUnitFileChange, error) {
	sd, done, err := c.godbus(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return sd.DisableUnitFilesContext(ctx, files, runtime)
}

// StartUnitContext is go-systemd's method of the same name.
func (c *Conn) StartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error) {
	sd, done, err := c.godbus(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	if ch != nil {
		c.pin() // its result comes later, on this connection
	}
	return sd.StartUnitContext(ctx, name, mode, ch)
}

// StopUnitContext is go-systemd's method of the same name.
func (c *Conn) StopUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error) {
	sd, done, err := c.godbus(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	if ch != nil {
		c.pin() // its result comes later, on this connection
	}
	return sd.StopUnitContext(ctx, name, mode, ch)
}

// RestartUnitContext is go-systemd's method of the same name.
func (c *Conn) RestartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error) {
	sd, done, err := c.godbus(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	if ch != nil {
		c.pin() // its result comes later, on this connection
	}
	return sd.RestartUnitContext(ctx, name, mode, ch)
}

// ResetFailedUnitContext is go-systemd's method of the same name.
func (c *Conn) ResetFailedUnitContext(ctx context.Context, name string) error {
	sd, done, err := c.godbus(ctx)
	if err != nil {
		return err
	}
	defer done()
	return sd.ResetFailedUnitContext(ctx, name)
}

// RunTransientUnitContext starts a transient unit (go-systemd's
// StartTransientUnitContext) and waits for its start job's result, which
// it returns ("done", "failed", ...), or until ctx is done (ctx.Err()).
// The go-systemd connection the result comes on stays open meanwhile.
func (c *Conn) RunTransientUnitContext(ctx context.Context, name, mode string, properties []sddbus.Property) (string, error) {
	sd, done, err := c.godbus(ctx)
	if err != nil {
		return "", err
	}
	defer done()
	ch := make(chan string, 1) // buffered: go-systemd must not block on a result nobody waits for
	if _, err := sd.StartTransientUnitContext(ctx, name, mode, properties, ch); err != nil {
		return "", err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// GetUnitPropertyContext is go-systemd's method of the same name, read on
// the watch's connection or a property pipe (see unitProperty).
func (c *Conn) GetUnitPropertyContext(ctx context.Context, unit, propertyName string) (*sddbus.Property, error) {
	return c.unitProperty(ctx, unit, "org.freedesktop.systemd1.Unit", propertyName, func(sd *sddbus.Conn) (*sddbus.Property, error) {
		return sd.GetUnitPropertyContext(ctx, unit, propertyName)
	})
}

// GetUnitTypePropertyContext is go-systemd's method of the same name, read
// on the watch's connection or a property pipe (see unitProperty).
func (c *Conn) GetUnitTypePropertyContext(ctx context.Context, unit, unitType, propertyName string) (*sddbus.Property, error) {
	return c.unitProperty(ctx, unit, "org.freedesktop.systemd1."+unitType, propertyName, func(sd *sddbus.Conn) (*sddbus.Property, error) {
		return sd.GetUnitTypePropertyContext(ctx, unit, unitType, propertyName)
	})
}

// unitProperty reads one property of a unit with one Get (getOne: on the
// watch's connection or a property pipe), not through go-systemd: after a
// daemon-reload the go-systemd connection has every unit's signals to
// decode before the reply (see RunJobsContext). A value the
// pipe does not decode, or an address it does not dial, is read by
// viaGodbus.
func (c *Conn) unitProperty(ctx context.Context, unit, iface, name string, viaGodbus func(*sddbus.Conn) (*sddbus.Property, error)) (*sddbus.Property, error) {
	godbusRead := func() (*sddbus.Property, error) {
		sd, done, err := c.godbus(ctx)
		if err != nil {
			return nil, err
		}
		defer done()
		return viaGodbus(sd)
	}
	path := godbus.ObjectPath(unitPathPrefix + sddbus.PathBusEscape(unit))
	val, callErr, err := c.getOne(ctx, path, iface, name)
	switch {
	case errors.Is(err, errPipeAddress):
		return godbusRead()
	case err != nil:
		return nil, fmt.Errorf("read %s of %s: %w", name, unit, err)
	case callErr != nil:
		var derr godbus.Error
		if errors.As(callErr, &derr) {
			return nil, derr
		}
		return godbusRead() // a type the pipe does not decode
	}
	return &sddbus.Property{Name: name, Value: godbus.MakeVariant(val)}, nil
}

// getOne reads one property with one Get: on the watch connection while
// a watch runs (no connection to dial, none for PID 1 to set up: after a
// daemon-reload the idle pipe is closed), else on a property pipe. callErr
// is the call's (systemd's error, or a value the pipe does not decode);
// err the connection's (errPipeAddress: no pipe for this address).
func (c *Conn) getOne(ctx context.Context, path godbus.ObjectPath, iface, name string) (val any, callErr, err error) {
	if w := c.watching(); w != nil {
		m, err := w.call(ctx, func(b []byte) []byte {
			return w.p.appendCall(b, path, propsIface, "Get", systemdDest, iface, name)
		})
		if !readOnWatchFailed(ctx, err) {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			if err != nil {
				return nil, err, nil
			}
			val, callErr = getReplyValue(m, iface, name)
			return val, callErr, nil
		}
	}
	p, err := c.takePipe(ctx)
	if err != nil {
		return nil, nil, err
	}
	vals, errs, err := p.getBatch(ctx, []getCall{{path: path, iface: iface, name: name}})
	c.putPipe(p, err == nil)
	if err != nil {
		return nil, nil, err
	}
	return vals[0], errs[0], nil
}

// ListUnitFilesByPatternsContext is go-systemd's method of the same name.
func (c *Conn) ListUnitFilesByPatternsContext(ctx context.Context, states, patterns []string) ([]sddbus.UnitFile, error) {
	sd, done, err := c.godbus(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return sd.ListUnitFilesByPatternsContext(ctx, states, patterns)
}
