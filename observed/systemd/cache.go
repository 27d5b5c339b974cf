package systemd

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/internal/sdbus"
	"resil.dev/resil/observed"
)

// The watch-fed cache (the informer pattern), for `run` only.
//
// While Subscribe runs, every signal about a unit (PropertiesChanged on any
// of its interfaces, the manager's UnitNew, UnitRemoved and JobRemoved)
// marks it dirty, and a daemon-reload (the manager's Reloading signal, or
// the agent's own through Reloaded) empties the cache. Observe then reads
// the properties (GetAll) only of units that are not in the cache, are
// dirty, or whose ListUnitsByNames status, unit file or drop-ins changed
// since they were cached; the others keep their cached properties. Timers,
// units with a pending job and units in a transitional state
// (activating, deactivating, reloading) are always read.
//
// ObserveFull (the loop's periodic resync) reads everything and reports,
// in State.CacheDrift, every unit whose cached properties it would have
// used and that differ from what it read: a signal the cache missed. With
// no Subscribe running (apply, diff) there is no cache: every Observe is a
// full read.

// cacheEntry is what the cache keeps of one unit.
type cacheEntry struct {
	props observed.Unit // the fields fillUnit sets
	// What the entry is valid for: the ListUnitsByNames status, the unit
	// file's mtime and size, the loaded drop-ins' mtimes and the drop-ins
	// on disk.
	status  [3]string
	mtime   time.Time
	size    int
	dropIns map[string]time.Time
	onDisk  []string
}

// cacheState is the cache, guarded by Observer.mu.
type cacheState struct {
	// on: Subscribe is watching; valid: the cache was filled by a full
	// read since Subscribe started and no reload emptied it.
	on, valid bool
	units     map[string]*cacheEntry
	dirty     map[string]bool
	// gen counts the events that make a read in progress unfit to fill
	// the cache (Subscribe started, a reload).
	gen uint64
}

// cacheStart is called when Subscribe's watch is registered: the next
// Observe reads everything and fills the cache.
func (o *Observer) cacheStart() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cache = cacheState{on: true, dirty: map[string]bool{}, gen: o.cache.gen + 1}
}

// cacheStop is called when Subscribe returns: no more signals, no cache.
func (o *Observer) cacheStop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cache = cacheState{gen: o.cache.gen + 1}
}

// Reloaded tells the cache that the agent reloaded systemd (every unit's
// DropInPaths, FragmentPath and NeedDaemonReload may have changed): the
// next Observe reads everything. actuators/systemd calls it through
// WithOwnJobs after each daemon-reload.
func (o *Observer) Reloaded() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cache.valid = false
	o.cache.gen++
}

// cacheSignal marks what a signal says changed. Called with o.mu held.
func (o *Observer) cacheSignal(s *godbus.Signal) {
	if !o.cache.on || s == nil {
		return
	}
	if name, ok := sdbus.UnitNameFromPath(s.Path); ok && s.Name == sdbus.PropertiesChanged {
		o.cache.dirty[name] = true
		return
	}
	member, ok := strings.CutPrefix(s.Name, managerIface+".")
	if !ok {
		return
	}
	switch member {
	case "Reloading":
		o.cache.valid = false
		o.cache.gen++
	case "UnitNew", "UnitRemoved":
		if len(s.Body) > 0 {
			if name, ok := s.Body[0].(string); ok {
				o.cache.dirty[name] = true
			}
		}
	case "JobRemoved": // id, job path, unit, result
		if len(s.Body) > 2 {
			if name, ok := s.Body[2].(string); ok {
				o.cache.dirty[name] = true
			}
		}
	}
}

// cachePlan splits the units systemd knows into those whose properties
// must be read and those whose cached properties stand (filled in here).
// full reads every unit; reusable then lists the units the cache would
// have answered for, with their entries, for the drift check. It clears
// the dirty marks of the units it reads: a signal arriving during the read
// marks them again.
func (o *Observer) cachePlan(full bool, loaded []*observed.Unit, files map[string]unitFile, status map[string][3]string, vendor map[string]vendor) (read []*observed.Unit, reusable map[string]*cacheEntry, gen uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	gen = o.cache.gen
	if !o.cache.on || !o.cache.valid {
		for _, u := range loaded {
			delete(o.cache.dirty, u.Name)
		}
		return loaded, nil, gen
	}
	reusable = map[string]*cacheEntry{}
	for _, u := range loaded {
		e := o.cache.units[u.Name]
		ok := e != nil && !o.cache.dirty[u.Name] && !strings.HasSuffix(u.Name, ".timer") &&
			e.status == status[u.Name] && e.mtime.Equal(files[u.Name].mtime) && e.size == len(files[u.Name].data) &&
			slices.Equal(e.onDisk, vendor[u.Name].dropIns) && !e.props.PendingJob && !u.PendingJob && settledState(e.props.ActiveState)
		delete(o.cache.dirty, u.Name)
		if !ok {
			read = append(read, u)
			continue
		}
		reusable[u.Name] = e
		if full {
			read = append(read, u)
		} else {
			copyProps(u, &e.props)
		}
	}
	return read, reusable, gen
}

func settledState(active string) bool {
	return active == "active" || active == "inactive" || active == "failed"
}

// cacheStore records what a successful Observe read (or reused) for the
// units systemd knows, and drops every other unit; gen is cachePlan's. A
// read that began before Subscribe started or before a reload fills
// nothing.
func (o *Observer) cacheStore(gen uint64, loaded []*observed.Unit, files map[string]unitFile, status map[string][3]string, vendor map[string]vendor, dropInTimes map[string]map[string]time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.cache.on || gen != o.cache.gen {
		return
	}
	units := make(map[string]*cacheEntry, len(loaded))
	for _, u := range loaded {
		e := &cacheEntry{status: status[u.Name], mtime: files[u.Name].mtime, size: len(files[u.Name].data),
			dropIns: dropInTimes[u.Name], onDisk: vendor[u.Name].dropIns}
		copyProps(&e.props, u)
		units[u.Name] = e
	}
	o.cache.units = units
	o.cache.valid = true
}

// dropInsChanged reports whether the loaded drop-ins of a unit answered
// from the cache changed on disk since it was cached.
func dropInsChanged(e *cacheEntry, times map[string]time.Time) bool {
	if len(e.dropIns) != len(times) {
		return true
	}
	for p, t := range times {
		if c, ok := e.dropIns[p]; !ok || !c.Equal(t) {
			return true
		}
	}
	return false
}

// cacheDrift compares the units a full read re-read although the cache
// would have answered for them, and describes each difference. A unit
// marked dirty meanwhile (a signal about a change during the read) is no
// drift: the cache would have caught up.
func (o *Observer) cacheDrift(reusable map[string]*cacheEntry, units map[string]*observed.Unit) map[string]string {
	var drift map[string]string
	for name, e := range reusable {
		u := units[name]
		if u == nil {
			continue
		}
		var fresh observed.Unit
		copyProps(&fresh, u)
		if d := diffProps(&e.props, &fresh); d != "" {
			if drift == nil {
				drift = map[string]string{}
			}
			drift[name] = d
		}
	}
	if len(drift) == 0 {
		return nil
	}
	// The signal of a change made just before the read may still be on
	// its way: give it a moment, then drop the units it marked.
	time.Sleep(driftGrace)
	o.mu.Lock()
	defer o.mu.Unlock()
	for name := range drift {
		if o.cache.dirty[name] || !o.cache.valid {
			delete(drift, name)
		}
	}
	if len(drift) == 0 {
		return nil
	}
	return drift
}

// driftGrace is how long a suspected drift waits for a late signal.
var driftGrace = 100 * time.Millisecond

// copyProps copies the fields fillUnit sets.
func copyProps(dst, src *observed.Unit) {
	dst.LoadState, dst.ActiveState, dst.SubState, dst.Result = src.LoadState, src.ActiveState, src.SubState, src.Result
	dst.FragmentPath = src.FragmentPath
	dst.DropInPaths = slices.Clone(src.DropInPaths)
	dst.NeedDaemonReload = src.NeedDaemonReload
	dst.NRestarts, dst.MainPID, dst.ExecMainStatus = src.NRestarts, src.MainPID, src.ExecMainStatus
	dst.ExecMainStartTimestamp, dst.ExecMainExitTimestamp = src.ExecMainStartTimestamp, src.ExecMainExitTimestamp
	dst.Triggers = slices.Clone(src.Triggers)
	dst.PendingJob = src.PendingJob
	dst.LastTriggerUSec, dst.NextElapseUSecRealtime, dst.NextElapseUSecMonotonic = src.LastTriggerUSec, src.NextElapseUSecRealtime, src.NextElapseUSecMonotonic
}

// diffProps names every property that differs ("" when none).
func diffProps(cached, read *observed.Unit) string {
	a, b := reflect.ValueOf(*cached), reflect.ValueOf(*read)
	var out []string
	for i := range a.NumField() {
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			out = append(out, fmt.Sprintf("%s cached %v, read %v", a.Type().Field(i).Name, a.Field(i).Interface(), b.Field(i).Interface()))
		}
	}
	return strings.Join(out, "; ")
}
