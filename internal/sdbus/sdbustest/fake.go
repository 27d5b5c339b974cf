package sdbustest

import (
	"context"
	"fmt"
	"math"
	"path"
	"strings"
	"sync"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/internal/sdbus"
)

// Unit is a unit as Fake knows it. The zero values of the state fields are
// filled in by AddUnit (loaded, inactive, dead, disabled).
type Unit struct {
	Name                    string
	LoadState               string
	ActiveState             string
	SubState                string
	Result                  string
	UnitFileState           string
	FragmentPath            string
	DropInPaths             []string
	NeedDaemonReload        bool
	NRestarts               uint32
	MainPID                 uint32
	ExecMainStatus          int32
	ExecMainStartTimestamp  uint64
	LastTriggerUSec         uint64
	NextElapseUSecRealtime  uint64
	NextElapseUSecMonotonic uint64

	// NoInstall: the unit file has no [Install] section; enabling it
	// changes nothing.
	NoInstall bool
	// JobResult maps "start", "stop" or "restart" to the result the next
	// such job reports instead of "done"; a failed start leaves the unit
	// failed. An entry is used once.
	JobResult map[string]string
	// HangJobs: jobs are queued but never finish (for timeouts).
	HangJobs bool
	// ServiceType is a service's Type property (default "simple").
	ServiceType string
	// Inert: jobs finish "done" and enable/disable report changes, but
	// nothing changes (for the applier's effect checks).
	Inert bool
}

// Fake is an in-memory systemd. Its zero value is not usable; call New.
// It is safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	units    map[string]*Unit
	manager  map[string]godbus.Variant
	conf     map[string]godbus.Variant
	readOnly map[string]bool
	errs     map[string]error
	calls    []string
	propGets map[string]int // GetUnitPropertiesContext's properties, by name
	watchers map[chan<- *godbus.Signal]bool
	nextPID  uint32
	nextJob  int
	now      uint64
	dropped  int
}

// New returns a Fake with no units and the manager properties of an idle
// systemd 252 without a hardware watchdog.
func New() *Fake {
	return &Fake{
		units: map[string]*Unit{},
		manager: map[string]godbus.Variant{
			"RuntimeWatchdogUSec":        godbus.MakeVariant(uint64(0)),
			"RebootWatchdogUSec":         godbus.MakeVariant(uint64(600000000)),
			"KExecWatchdogUSec":          godbus.MakeVariant(uint64(0)),
			"RuntimeWatchdogPreUSec":     godbus.MakeVariant(uint64(0)),
			"RuntimeWatchdogPreGovernor": godbus.MakeVariant(""),
			"ServiceWatchdogs":           godbus.MakeVariant(true),
			"WatchdogDevice":             godbus.MakeVariant(""),
			// No search path: Observe looks for vendor units in no
			// directory, so tests never read the host's /lib/systemd.
			"UnitPath":                godbus.MakeVariant([]string{}),
			"UnitsLoadTimestamp":      godbus.MakeVariant(uint64(0)),
			"UnitsLoadStartTimestamp": godbus.MakeVariant(uint64(0)),
		},
		conf:     map[string]godbus.Variant{},
		readOnly: map[string]bool{"WatchdogDevice": true},
		errs:     map[string]error{},
		watchers: map[chan<- *godbus.Signal]bool{},
		nextPID:  1000,
		now:      1_700_000_000_000_000,
	}
}

// AddUnit adds or replaces a unit.
func (f *Fake) AddUnit(u Unit) {
	f.mu.Lock()
	defer f.mu.Unlock()
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&u.LoadState, "loaded")
	def(&u.ActiveState, "inactive")
	def(&u.SubState, "dead")
	def(&u.UnitFileState, "disabled")
	if u.Result == "" && (strings.HasSuffix(u.Name, ".service") || strings.HasSuffix(u.Name, ".timer")) {
		u.Result = "success"
	}
	cp := u
	f.units[u.Name] = &cp
}

// RemoveUnit forgets a unit (as if its file were deleted and reloaded).
func (f *Fake) RemoveUnit(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.units, name)
}

// Unit returns a copy of a unit and whether it exists.
func (f *Fake) Unit(name string) (Unit, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.units[name]
	if !ok {
		return Unit{}, false
	}
	return *u, true
}

// SetManager sets a manager property as systemd would report it.
func (f *Fake) SetManager(name string, v any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.manager[name] = godbus.MakeVariant(v)
}

// SetConf records a manager value from system.conf(.d): like systemd 252,
// setting the property to 0 or infinity over D-Bus falls back to it.
func (f *Fake) SetConf(name string, v any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conf[name] = godbus.MakeVariant(v)
}

// FailNext makes the next call of method (e.g. "ListUnitsByNames",
// "GetAll", "Reload", "StartUnit") return err. Used once.
func (f *Fake) FailNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[method] = err
}

// Calls returns the calls made so far, e.g. "StartUnit worker.service".
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// CallCount returns how many calls of method were made.
func (f *Fake) CallCount(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == method || strings.HasPrefix(c, method+" ") {
			n++
		}
	}
	return n
}

// ResetCalls forgets the recorded calls.
func (f *Fake) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
	f.propGets = nil
}

// PropertyCount is how many times GetUnitPropertiesContext was asked for
// the property name since the last ResetCalls.
func (f *Fake) PropertyCount(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.propGets[name]
}

// call records a call and returns the error injected for it, if any.
// Callers hold f.mu.
func (f *Fake) call(method string, args ...string) error {
	f.calls = append(f.calls, strings.TrimSpace(method+" "+strings.Join(args, " ")))
	if err, ok := f.errs[method]; ok {
		delete(f.errs, method)
		return err
	}
	return nil
}

func noSuchUnit(format string, args ...any) error {
	return godbus.Error{Name: "org.freedesktop.systemd1.NoSuchUnit", Body: []any{fmt.Sprintf(format, args...)}}
}

func (f *Fake) status(name string) sddbus.UnitStatus {
	s := sddbus.UnitStatus{Name: name, Description: name, LoadState: "not-found", ActiveState: "inactive", SubState: "dead", JobPath: "/"}
	if u, ok := f.units[name]; ok {
		s.LoadState, s.ActiveState, s.SubState = u.LoadState, u.ActiveState, u.SubState
	}
	return s
}

// ListUnitsByNamesContext implements the observer's Client.
func (f *Fake) ListUnitsByNamesContext(_ context.Context, names []string) ([]sddbus.UnitStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ListUnitsByNames", names...); err != nil {
		return nil, err
	}
	out := make([]sddbus.UnitStatus, 0, len(names))
	for _, n := range names {
		out = append(out, f.status(n))
	}
	return out, nil
}

func (f *Fake) props(name string) map[string]any {
	u, ok := f.units[name]
	if !ok {
		u = &Unit{Name: name, LoadState: "not-found", ActiveState: "inactive", SubState: "dead"}
	}
	m := map[string]any{
		"Id": name, "LoadState": u.LoadState, "ActiveState": u.ActiveState, "SubState": u.SubState,
		"UnitFileState": u.UnitFileState, "FragmentPath": u.FragmentPath,
		"DropInPaths": append([]string{}, u.DropInPaths...), "NeedDaemonReload": u.NeedDaemonReload,
	}
	switch path.Ext(name) {
	case ".service":
		m["Result"] = u.Result
		m["NRestarts"] = u.NRestarts
		m["MainPID"] = u.MainPID
		m["ExecMainStatus"] = u.ExecMainStatus
		m["ExecMainStartTimestamp"] = u.ExecMainStartTimestamp
		m["Type"] = u.ServiceType
		if u.ServiceType == "" {
			m["Type"] = "simple"
		}
	case ".timer":
		m["Result"] = u.Result
		m["LastTriggerUSec"] = u.LastTriggerUSec
		m["NextElapseUSecRealtime"] = u.NextElapseUSecRealtime
		m["NextElapseUSecMonotonic"] = u.NextElapseUSecMonotonic
	}
	return m
}

// GetAllPropertiesContext implements the observer's Client.
func (f *Fake) GetAllPropertiesContext(_ context.Context, unit string) (map[string]any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("GetAll", unit); err != nil {
		return nil, err
	}
	return f.props(unit), nil
}

// GetUnitPropertiesContext implements the observer's Client: per query,
// the requested properties the fake has (a property it lacks is left out,
// where systemd would know it). It records one "GetProperties UNIT" per
// query; FailNext("GetProperties") fails the whole batch, as a broken
// pipe would.
func (f *Fake) GetUnitPropertiesContext(_ context.Context, queries []sdbus.PropertyQuery) ([]map[string]any, []error, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	props := make([]map[string]any, len(queries))
	for i, q := range queries {
		if err := f.call("GetProperties", q.Unit); err != nil {
			return nil, nil, err
		}
		all := f.props(q.Unit)
		props[i] = map[string]any{}
		for _, p := range q.Props {
			if f.propGets == nil {
				f.propGets = map[string]int{}
			}
			f.propGets[p.Name]++
			if v, ok := all[p.Name]; ok {
				props[i][p.Name] = v
			}
		}
	}
	return props, make([]error, len(queries)), nil
}

// GetUnitPropertyContext implements the applier's Client.
func (f *Fake) GetUnitPropertyContext(_ context.Context, unit, name string) (*sddbus.Property, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("GetUnitProperty", unit, name); err != nil {
		return nil, err
	}
	v, ok := f.props(unit)[name]
	if !ok {
		return nil, godbus.Error{Name: "org.freedesktop.DBus.Error.UnknownProperty", Body: []any{"Unknown property " + name}}
	}
	return &sddbus.Property{Name: name, Value: godbus.MakeVariant(v)}, nil
}

// GetUnitTypePropertyContext implements the applier's Client (the type
// interface is not checked: every property lives in one map).
func (f *Fake) GetUnitTypePropertyContext(_ context.Context, unit, unitType, name string) (*sddbus.Property, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("GetUnitTypeProperty", unit, name); err != nil {
		return nil, err
	}
	v, ok := f.props(unit)[name]
	if !ok {
		return nil, godbus.Error{Name: "org.freedesktop.DBus.Error.UnknownProperty", Body: []any{"Unknown property " + name}}
	}
	return &sddbus.Property{Name: name, Value: godbus.MakeVariant(v)}, nil
}

// GetManagerPropertyContext implements both Clients.
func (f *Fake) GetManagerPropertyContext(_ context.Context, name string) (godbus.Variant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("GetManagerProperty", name); err != nil {
		return godbus.Variant{}, err
	}
	v, ok := f.manager[name]
	if !ok {
		return godbus.Variant{}, godbus.Error{Name: "org.freedesktop.DBus.Error.UnknownProperty", Body: []any{"Unknown property " + name}}
	}
	return v, nil
}

// SetManagerProperty implements the applier's Client.
func (f *Fake) SetManagerProperty(_ context.Context, name string, v godbus.Variant) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("SetManagerProperty", name, v.String()); err != nil {
		return err
	}
	if _, ok := f.manager[name]; !ok {
		return godbus.Error{Name: "org.freedesktop.DBus.Error.UnknownProperty", Body: []any{"Unknown property " + name}}
	}
	if f.readOnly[name] {
		return godbus.Error{Name: "org.freedesktop.DBus.Error.PropertyReadOnly", Body: []any{"Property '" + name + "' is not writable."}}
	}
	if u, ok := v.Value().(uint64); ok && (u == 0 || u == math.MaxUint64) {
		if c, ok := f.conf[name]; ok {
			v = c
		}
	}
	f.manager[name] = v
	return nil
}

// ReloadContext implements the applier's Client: it clears NeedDaemonReload.
func (f *Fake) ReloadContext(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Reload"); err != nil {
		return err
	}
	for _, u := range f.units {
		u.NeedDaemonReload = false
	}
	f.emitManager("Reloading", true)
	f.emitManager("Reloading", false)
	return nil
}

// emitManager sends a manager signal to the watchers, as systemd does
// before it replies to the call that caused it.
func (f *Fake) emitManager(member string, body ...any) {
	s := &godbus.Signal{Sender: ":1.0", Path: "/org/freedesktop/systemd1", Name: "org.freedesktop.systemd1.Manager." + member, Body: body}
	for ch := range f.watchers {
		select {
		case ch <- s:
		default:
			f.dropped++
		}
	}
}

// ListUnitFilesByPatternsContext implements both Clients: every known unit
// (LoadState other than not-found) whose name is in patterns (matched
// literally), with its UnitFileState as the on-disk state and its
// FragmentPath (default /etc/systemd/system/NAME) as the path. An empty
// patterns list lists every unit.
func (f *Fake) ListUnitFilesByPatternsContext(_ context.Context, states, patterns []string) ([]sddbus.UnitFile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ListUnitFilesByPatterns", patterns...); err != nil {
		return nil, err
	}
	match := func(n string) bool {
		if len(patterns) == 0 {
			return true
		}
		for _, p := range patterns {
			if p == n {
				return true
			}
		}
		return false
	}
	var out []sddbus.UnitFile
	for n, u := range f.units {
		if u.LoadState == "not-found" || !match(n) {
			continue
		}
		if len(states) > 0 && !contains(states, u.UnitFileState) {
			continue
		}
		p := u.FragmentPath
		if p == "" {
			p = "/etc/systemd/system/" + n
		}
		out = append(out, sddbus.UnitFile{Path: p, Type: u.UnitFileState})
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// SetUnitFileState changes a unit's enablement behind the agent's back
// (a `systemctl disable` out of band). Unknown units are ignored.
func (f *Fake) SetUnitFileState(name, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u, ok := f.units[name]; ok {
		u.UnitFileState = state
	}
}

// EnableUnitFilesContext implements the applier's Client.
func (f *Fake) EnableUnitFilesContext(_ context.Context, files []string, runtime, force bool) (bool, []sddbus.EnableUnitFileChange, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("EnableUnitFiles", files...); err != nil {
		return false, nil, err
	}
	// Like systemd, every file is looked up before anything changes: one
	// missing file fails the call and changes nothing.
	for _, n := range files {
		if u, ok := f.units[n]; !ok || u.LoadState == "not-found" {
			return false, nil, noSuchUnit("Unit file %s does not exist.", n)
		}
	}
	install := false
	var changes []sddbus.EnableUnitFileChange
	for _, n := range files {
		u := f.units[n]
		if u.NoInstall {
			continue
		}
		install = true
		if u.UnitFileState != "enabled" {
			if !u.Inert {
				u.UnitFileState = "enabled"
			}
			changes = append(changes, sddbus.EnableUnitFileChange{Type: "symlink",
				Filename: "/etc/systemd/system/multi-user.target.wants/" + n, Destination: "/etc/systemd/system/" + n})
		}
	}
	if len(changes) > 0 {
		f.emitManager("UnitFilesChanged")
	}
	return install, changes, nil
}

// DisableUnitFilesContext implements the applier's Client.
func (f *Fake) DisableUnitFilesContext(_ context.Context, files []string, runtime bool) ([]sddbus.DisableUnitFileChange, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DisableUnitFiles", files...); err != nil {
		return nil, err
	}
	for _, n := range files {
		if u, ok := f.units[n]; !ok || u.LoadState == "not-found" {
			return nil, noSuchUnit("Unit file %s does not exist.", n)
		}
	}
	var changes []sddbus.DisableUnitFileChange
	for _, n := range files {
		u := f.units[n]
		if u.UnitFileState == "enabled" {
			if !u.Inert {
				u.UnitFileState = "disabled"
			}
			changes = append(changes, sddbus.DisableUnitFileChange{Type: "unlink", Filename: "/etc/systemd/system/multi-user.target.wants/" + n})
		}
	}
	if len(changes) > 0 {
		f.emitManager("UnitFilesChanged")
	}
	return changes, nil
}

// StartUnitContext implements the applier's Client.
func (f *Fake) StartUnitContext(_ context.Context, name, mode string, ch chan<- string) (int, error) {
	return f.job("StartUnit", "start", name, ch)
}

// StopUnitContext implements the applier's Client.
func (f *Fake) StopUnitContext(_ context.Context, name, mode string, ch chan<- string) (int, error) {
	return f.job("StopUnit", "stop", name, ch)
}

// RestartUnitContext implements the applier's Client.
func (f *Fake) RestartUnitContext(_ context.Context, name, mode string, ch chan<- string) (int, error) {
	return f.job("RestartUnit", "restart", name, ch)
}

// RunJobsContext implements the applier's Client: each job through the
// method of its name above (a HangJobs unit's never finishes).
func (f *Fake) RunJobsContext(ctx context.Context, jobs []sdbus.Job, timeout time.Duration) ([]sdbus.JobResult, error) {
	return sdbus.RunJobsWith(ctx, jobs, timeout, f, func(ctx context.Context, j sdbus.Job, ch chan<- string) (int, error) {
		switch j.Method {
		case sdbus.MethodStartUnit:
			return f.StartUnitContext(ctx, j.Unit, j.Mode, ch)
		case sdbus.MethodStopUnit:
			return f.StopUnitContext(ctx, j.Unit, j.Mode, ch)
		}
		return f.RestartUnitContext(ctx, j.Unit, j.Mode, ch)
	})
}

func (f *Fake) job(method, kind, name string, ch chan<- string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(method, name); err != nil {
		return 0, err
	}
	u, ok := f.units[name]
	if !ok || u.LoadState == "not-found" {
		if kind == "stop" {
			return 0, godbus.Error{Name: "org.freedesktop.systemd1.NoSuchUnit", Body: []any{"Unit " + name + " not loaded."}}
		}
		return 0, noSuchUnit("Unit %s not found.", name)
	}
	f.nextJob++
	if u.HangJobs {
		return f.nextJob, nil
	}
	result := "done"
	if r, ok := u.JobResult[kind]; ok {
		result = r
		delete(u.JobResult, kind)
	}
	before := *u
	switch {
	case u.Inert:
	case kind == "stop":
		u.ActiveState, u.SubState, u.MainPID = "inactive", "dead", 0
	case result == "done":
		f.nextPID++
		f.now += 1_000_000
		u.ActiveState, u.SubState, u.MainPID, u.Result = "active", "running", f.nextPID, "success"
		u.ExecMainStartTimestamp = f.now
	case result == "failed":
		u.ActiveState, u.SubState, u.MainPID, u.Result, u.ExecMainStatus = "failed", "failed", 0, "exit-code", 1
	}
	f.emitChanges(&before, u)
	// go-systemd sends the result while holding its job lock: a channel
	// that cannot take it at once would stall its signal dispatcher.
	select {
	case ch <- result:
	default:
		panic("sdbustest: job result channel is not buffered or not drained")
	}
	return f.nextJob, nil
}

// ResetFailedUnitContext implements the applier's Client.
func (f *Fake) ResetFailedUnitContext(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ResetFailedUnit", name); err != nil {
		return err
	}
	u, ok := f.units[name]
	if !ok {
		return godbus.Error{Name: "org.freedesktop.systemd1.NoSuchUnit", Body: []any{"Unit " + name + " not loaded."}}
	}
	before := *u
	if u.ActiveState == "failed" {
		u.ActiveState, u.SubState = "inactive", "dead"
	}
	u.Result, u.NRestarts = "success", 0
	f.emitChanges(&before, u)
	return nil
}

// WatchUnitSignals implements the observer's Watcher: every state change
// the Fake makes (the manager's Reloading and UnitFilesChanged for a
// reload, enable or disable included), and every Emit, is sent to ch
// (dropped if ch is full).
func (f *Fake) WatchUnitSignals(_ context.Context, ch chan<- *godbus.Signal) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Subscribe"); err != nil {
		return nil, err
	}
	f.watchers[ch] = true
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls = append(f.calls, "Unsubscribe")
		delete(f.watchers, ch)
	}, nil
}

// Dropped returns how many signals did not fit a watcher's channel.
func (f *Fake) Dropped() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dropped
}

// Emit sends a PropertiesChanged signal for unit on iface
// ("org.freedesktop.systemd1.Unit", "...Service") to the watchers, as
// systemd does (it sends each change twice, and unchanged values too).
func (f *Fake) Emit(unit, iface string, changed map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.emit(unit, iface, changed)
}

// CloseWatchers closes every watcher's channel, as godbus does when the
// connection closes.
func (f *Fake) CloseWatchers() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.watchers {
		close(ch)
		delete(f.watchers, ch)
	}
}

func (f *Fake) emit(unit, iface string, changed map[string]any) {
	body := make(map[string]godbus.Variant, len(changed))
	for k, v := range changed {
		body[k] = godbus.MakeVariant(v)
	}
	sig := &godbus.Signal{
		Sender: ":1.0",
		Path:   godbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sddbus.PathBusEscape(unit)),
		Name:   "org.freedesktop.DBus.Properties.PropertiesChanged",
		Body:   []any{iface, body, []string{}},
	}
	for ch := range f.watchers {
		select {
		case ch <- sig:
		default:
			f.dropped++
		}
	}
}

// emitChanges sends what systemd would: the Unit interface's state and,
// for services, the Service interface's MainPID.
func (f *Fake) emitChanges(before, after *Unit) {
	if before.ActiveState != after.ActiveState || before.SubState != after.SubState {
		f.emit(after.Name, "org.freedesktop.systemd1.Unit", map[string]any{"ActiveState": after.ActiveState, "SubState": after.SubState})
	}
	if strings.HasSuffix(after.Name, ".service") && before.MainPID != after.MainPID {
		f.emit(after.Name, "org.freedesktop.systemd1.Service", map[string]any{"MainPID": after.MainPID})
	}
}

// EmitSignal sends any signal (e.g. the manager's JobRemoved or
// Reloading) to the watchers.
func (f *Fake) EmitSignal(s *godbus.Signal) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.watchers {
		select {
		case ch <- s:
		default:
			f.dropped++
		}
	}
}
