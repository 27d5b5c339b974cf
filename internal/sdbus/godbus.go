package sdbus

import (
	"context"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// The go-systemd methods the consumers use, each on the go-systemd
// connection, which the first of them dials (Conn.godbus).

// EnableUnitFilesContext is go-systemd's method of the same name.
func (c *Conn) EnableUnitFilesContext(ctx context.Context, files []string, runtime, force bool) (bool, []sddbus.EnableUnitFileChange, error) {
	sd, err := c.godbus(ctx)
	if err != nil {
		return false, nil, err
	}
	return sd.EnableUnitFilesContext(ctx, files, runtime, force)
}

// DisableUnitFilesContext is go-systemd's method of the same name.
func (c *Conn) DisableUnitFilesContext(ctx context.Context, files []string, runtime bool) ([]sddbus.DisableUnitFileChange, error) {
	sd, err := c.godbus(ctx)
	if err != nil {
		return nil, err
	}
	return sd.DisableUnitFilesContext(ctx, files, runtime)
}

// StartUnitContext is go-systemd's method of the same name.
func (c *Conn) StartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error) {
	sd, err := c.godbus(ctx)
	if err != nil {
		return 0, err
	}
	return sd.StartUnitContext(ctx, name, mode, ch)
}

// StopUnitContext is go-systemd's method of the same name.
func (c *Conn) StopUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error) {
	sd, err := c.godbus(ctx)
	if err != nil {
		return 0, err
	}
	return sd.StopUnitContext(ctx, name, mode, ch)
}

// RestartUnitContext is go-systemd's method of the same name.
func (c *Conn) RestartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error) {
	sd, err := c.godbus(ctx)
	if err != nil {
		return 0, err
	}
	return sd.RestartUnitContext(ctx, name, mode, ch)
}

// ResetFailedUnitContext is go-systemd's method of the same name.
func (c *Conn) ResetFailedUnitContext(ctx context.Context, name string) error {
	sd, err := c.godbus(ctx)
	if err != nil {
		return err
	}
	return sd.ResetFailedUnitContext(ctx, name)
}

// StartTransientUnitContext is go-systemd's method of the same name.
func (c *Conn) StartTransientUnitContext(ctx context.Context, name, mode string, properties []sddbus.Property, ch chan<- string) (int, error) {
	sd, err := c.godbus(ctx)
	if err != nil {
		return 0, err
	}
	return sd.StartTransientUnitContext(ctx, name, mode, properties, ch)
}

// GetUnitPropertyContext is go-systemd's method of the same name.
func (c *Conn) GetUnitPropertyContext(ctx context.Context, unit, propertyName string) (*sddbus.Property, error) {
	sd, err := c.godbus(ctx)
	if err != nil {
		return nil, err
	}
	return sd.GetUnitPropertyContext(ctx, unit, propertyName)
}

// GetUnitTypePropertyContext is go-systemd's method of the same name.
func (c *Conn) GetUnitTypePropertyContext(ctx context.Context, unit, unitType, propertyName string) (*sddbus.Property, error) {
	sd, err := c.godbus(ctx)
	if err != nil {
		return nil, err
	}
	return sd.GetUnitTypePropertyContext(ctx, unit, unitType, propertyName)
}

// ListUnitFilesByPatternsContext is go-systemd's method of the same name.
func (c *Conn) ListUnitFilesByPatternsContext(ctx context.Context, states, patterns []string) ([]sddbus.UnitFile, error) {
	sd, err := c.godbus(ctx)
	if err != nil {
		return nil, err
	}
	return sd.ListUnitFilesByPatternsContext(ctx, states, patterns)
}
