package systemd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/go-multierror"

	"resil.dev/resil/internal/sdbus"
	"resil.dev/resil/observed"
)

// observeManager reads the manager's watchdog properties, the owned manager
// drop-in and the watchdog devices.
func (o *Observer) observeManager(ctx context.Context) (*observed.Manager, error) {
	m := &observed.Manager{
		Properties: make(map[string]string, len(ManagerProperties)),
		ConfPath:   o.cfg.managerConf,
	}
	var errs *multierror.Error
	for _, p := range ManagerProperties {
		o.count("Get " + p)
		v, err := o.c.GetManagerPropertyContext(ctx, p)
		if err != nil {
			errs = multierror.Append(errs, err)
			continue
		}
		m.Properties[p] = sdbus.PropertyText(v)
	}
	data, _, err := readFile(o.cfg.managerConf)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		errs = multierror.Append(errs, fmt.Errorf("read manager drop-in: %w", err))
	default:
		m.File = data
	}
	devs, err := ReadWatchdogDevices(o.cfg.sysfs)
	if err != nil {
		errs = multierror.Append(errs, err)
	}
	m.Devices = devs
	return m, errs.ErrorOrNil()
}

// ReadWatchdogDevices lists sysfsRoot/class/watchdog/* with each device's
// identity, timeout (seconds) and state, sorted by name. No watchdog class
// directory, or an empty one, is a fact ((nil, nil)), not an error; an
// attribute the driver does not provide stays empty.
func ReadWatchdogDevices(sysfsRoot string) ([]observed.WatchdogDevice, error) {
	dir := filepath.Join(sysfsRoot, "class", "watchdog")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read watchdog devices: %w", err)
	}
	var (
		devs []observed.WatchdogDevice
		errs *multierror.Error
	)
	for _, e := range entries {
		d := observed.WatchdogDevice{Name: e.Name()}
		attr := func(name string) string {
			b, err := os.ReadFile(filepath.Join(dir, e.Name(), name))
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					errs = multierror.Append(errs, fmt.Errorf("read watchdog %s %s: %w", e.Name(), name, err))
				}
				return ""
			}
			return strings.TrimSpace(string(b))
		}
		d.Identity = attr("identity")
		d.State = attr("state")
		if t := attr("timeout"); t != "" {
			n, err := strconv.Atoi(t)
			if err != nil {
				errs = multierror.Append(errs, fmt.Errorf("read watchdog %s timeout: %w", e.Name(), err))
			}
			d.Timeout = n
		}
		devs = append(devs, d)
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Name < devs[j].Name })
	return devs, errs.ErrorOrNil()
}
