package systemd

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/internal/sdbus"
	"resil.dev/resil/observed"
)

// The watch-fed cache (the informer pattern), for `run`; `apply` keeps
// its reads in it for one narrower read after acting (KeepReads).
//
// While Subscribe runs, signals mark the units whose cached properties
// they may have changed (cacheSignal): a service's PropertiesChanged on
// the Service interface when one of the values it carries differs from the
// cached one (systemd sends every property it signals, values included),
// any other unit's PropertiesChanged, the manager's UnitRemoved and
// JobRemoved. Observe then reads the properties only of units that are
// not in the cache, are marked, or whose ListUnitsByNames status, unit
// file or drop-ins changed since they were cached; the others keep their
// cached properties. Timers, units with a pending job and units in a
// transitional state (activating, deactivating, reloading) are always
// read.
//
// A daemon-reload (the manager's Reloading signal, or the agent's own
// through Reloaded) keeps the cache: systemd carries every unit's runtime
// state (MainPID, NRestarts, Result, the main process's exec status)
// across it, and the PropertiesChanged it sends for every unit afterwards
// carry the same values, so they mark nothing. What a reload does change
// is what the unit was loaded from: an entry cached before it is used
// only when the drop-ins it had loaded are exactly those on disk and no
// drop-in directory for a whole type exists (so DropInPaths stands), and
// its NeedDaemonReload is decided again (loadedAsOnDisk, or asked).
//
// ObserveFull (the loop's periodic resync) reads everything and reports,
// in State.CacheDrift, every unit whose cached properties it would have
// used and that differ from what it read: a signal the cache missed. With
// no Subscribe running (apply, diff) there is no cache and every Observe
// is a full read, but for apply's read after its steps (KeepReads).

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
	// reloads is cacheState.reloads when the entry was read: an entry
	// from before systemd's last reload is checked again (cachePlan).
	reloads uint64
}

// cacheState is the cache, guarded by Observer.mu.
type cacheState struct {
	// on: Subscribe is watching, or KeepReads; valid: the cache was
	// filled by a full read since then and no reload emptied it.
	on, valid bool
	units     map[string]*cacheEntry
	dirty     map[string]bool
	// gen counts the events that make a read in progress unfit to fill
	// the cache (Subscribe started, a reload).
	gen uint64
	// reloads counts the daemon-reloads seen; reloading: between the
	// manager's Reloading(true) and Reloading(false).
	reloads   uint64
	reloading bool
	// noWatch: turned on by KeepReads, with no watch; hold: until
	// Recheck, every Observe reads as with the cache off and fills it.
	noWatch, hold bool
}

// cacheStart is called when Subscribe's watch is registered: the next
// Observe reads everything and fills the cache.
func (o *Observer) cacheStart() {
	o.changes.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cache = cacheState{on: true, dirty: map[string]bool{}, gen: o.cache.gen + 1}
	o.forgetRuns()
}

// KeepReads turns the cache on for a one-shot command that observes again
// after acting (apply, for its status snapshot), with no watch: every
// Observe still reads everything, as with the cache off (early property
// reads included), and keeps what it read. After Recheck, Observe answers
// from those entries for the units whose ListUnitsByNames status, unit
// file and drop-ins are unchanged, that no job of the command touched
// (JobQueued) and whose main process started when the entry says: with no
// signals to tell, one Get of ExecMainStartTimestamp per cached service
// stands in for them (recheckStarts), so a service restarted by another
// unit's job (Requires=), run by a timer or restarted by systemd after a
// crash since the first read is read again. A no-op while the cache is
// on (Subscribe runs: its signals keep the cache).
func (o *Observer) KeepReads() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cache.on {
		return
	}
	o.changes.Add(1)
	o.cache = cacheState{on: true, dirty: map[string]bool{}, gen: o.cache.gen + 1, hold: true, noWatch: true}
}

// Recheck lets the Observes after it answer from the cache KeepReads
// keeps (see KeepReads).
func (o *Observer) Recheck() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cache.hold = false
}

// recheckStarts marks every cached service whose ExecMainStartTimestamp
// is no longer the cached one (or cannot be read), when the cache has no
// watch (KeepReads, after Recheck): one pipelined Get per service instead
// of the signal a watch would have had. A service cached but no longer
// loaded (its Get fails) is marked too, which changes nothing: the cache
// answers only for units the pass reads. With WithProcessCheck a
// service whose cached main PID is set is checked in the process table
// instead (no D-Bus call). err: the read itself failed.
func (o *Observer) recheckStarts(ctx context.Context) error {
	o.mu.Lock()
	if !o.cache.on || !o.cache.noWatch || o.cache.hold || !o.cache.valid {
		o.mu.Unlock()
		return nil
	}
	var (
		names []string
		qs    []sdbus.PropertyQuery
		was   []uint64
	)
	for n, e := range o.cache.units {
		if o.cache.dirty[n] || !strings.HasSuffix(n, ".service") {
			continue
		}
		if pid := e.props.MainPID; pid != 0 && o.cfg.alive != nil {
			if !o.cfg.alive(pid) {
				o.cache.dirty[n] = true
			}
			continue
		}
		names = append(names, n)
		qs = append(qs, sdbus.PropertyQuery{Unit: n, Props: startProp})
		was = append(was, e.props.ExecMainStartTimestamp)
	}
	o.mu.Unlock()
	if len(qs) == 0 {
		return nil
	}
	for range qs {
		o.count("GetProperties")
	}
	props, perr, err := o.c.GetUnitPropertiesContext(ctx, qs)
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, n := range names {
		v, ok := props[i]["ExecMainStartTimestamp"].(uint64)
		if perr[i] != nil || !ok || v != was[i] {
			o.cache.dirty[n] = true
		}
	}
	return nil
}

// startProp is what recheckStarts asks of each cached service.
var startProp = []sdbus.Property{{Interface: ifaceService, Name: "ExecMainStartTimestamp"}}

// cacheStop is called when Subscribe returns: no more signals, no cache.
func (o *Observer) cacheStop() {
	o.changes.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cache = cacheState{gen: o.cache.gen + 1}
	o.forgetRuns() // no signal tells any more when a unit runs again
}

// Reloaded tells the cache that the agent reloaded systemd (every unit's
// DropInPaths and NeedDaemonReload may have changed): the next Observe
// checks them again. actuators/systemd calls it through WithOwnJobs after
// each daemon-reload.
func (o *Observer) Reloaded() {
	o.changes.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cacheReloaded()
}

// ChangeSeq returns a number that moves whenever what Observe reads from
// systemd may have changed: every signal the watch delivers (a unit's
// state, a job, a reload), every daemon-reload the agent reports, the
// watch starting or ending. ok is false while no watch runs or its cache
// has not been filled by a read yet, and while signals the watch read
// wait to be handled: then nothing tells. An observation
// read while ChangeSeq stayed the same is as current as a new one would
// be, for what systemd tells by signals and for the unit directory's
// files (every inotify event of Subscribe's moves it too; reconcile.Ahead).
func (o *Observer) ChangeSeq() (seq uint64, ok bool) {
	o.mu.Lock()
	ok = o.cache.on && o.cache.valid && !o.cache.hold
	o.mu.Unlock()
	seq = o.changes.Load()
	if q := o.queued.Load(); q == nil || (*q)() > 0 {
		ok = false
	}
	return seq, ok
}

// cacheReloaded records a daemon-reload. Called with o.mu held.
func (o *Observer) cacheReloaded() {
	o.cache.reloads++
	o.cache.gen++
}

// cacheSignal marks what a signal says changed. Called with o.mu held.
func (o *Observer) cacheSignal(s *godbus.Signal) {
	if !o.cache.on || s == nil {
		return
	}
	if name, ok := sdbus.UnitNameFromPath(s.Path); ok && s.Name == sdbus.PropertiesChanged {
		if o.signalChangesEntry(name, s.Body) {
			o.cache.dirty[name] = true
		}
		return
	}
	member, ok := strings.CutPrefix(s.Name, managerIface+".")
	if !ok {
		return
	}
	switch member {
	case "Reloading":
		o.cacheReloaded()
		o.cache.reloading = false
		if len(s.Body) > 0 {
			o.cache.reloading, _ = s.Body[0].(bool)
		}
	case "UnitNew", "UnitRemoved":
		// A reload removes every unit and adds it again, with its runtime
		// state: that alone changes no entry. Otherwise a cached unit's
		// UnitNew comes with its PropertiesChanged, which tell.
		if len(s.Body) > 0 && !o.cache.reloading {
			if name, ok := s.Body[0].(string); ok && (member == "UnitRemoved" || o.cache.units[name] == nil) {
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

// signalProps are the Service properties the cache keeps from a read.
// systemd signals each of them (EMITS_CHANGE): every PropertiesChanged of
// a service's Service interface carries all of them.
var signalProps = []string{"Result", "NRestarts", "MainPID", "ExecMainStatus", "ExecMainStartTimestamp", "ExecMainExitTimestamp"}

// signalledService reads the figures of signalProps a Service
// PropertiesChanged carries (readService); complete says it carries them
// all.
func signalledService(changed map[string]godbus.Variant) (u observed.Unit, complete bool, err error) {
	m := make(map[string]any, len(signalProps))
	for _, k := range signalProps {
		if v, ok := changed[k]; ok {
			m[k] = v
		}
	}
	r := propReader{m: m}
	readService(&r, &u)
	return u, len(m) == len(signalProps), r.err
}

// signalChangesEntry reports whether a PropertiesChanged (body: interface,
// changed, invalidated) about unit name may make its cache entry wrong.
// For a cached service: the Service interface's only when a value of
// signalProps differs from the cached one or is missing; never the Unit
// interface's, whose states and job cachePlan compares with
// ListUnitsByNames on every pass. Any other unit's always. Called with
// o.mu held.
func (o *Observer) signalChangesEntry(name string, body []any) bool {
	e := o.cache.units[name]
	if e == nil || !strings.HasSuffix(name, ".service") || len(body) < 3 {
		return true
	}
	iface, _ := body[0].(string)
	changed, ok1 := body[1].(map[string]godbus.Variant)
	invalidated, ok2 := body[2].([]string)
	switch {
	case iface == unitIface:
		return false
	case iface != serviceIface || !ok1 || !ok2:
		return true
	}
	for _, k := range invalidated {
		if slices.Contains(signalProps, k) {
			return true
		}
	}
	sent, complete, err := signalledService(changed)
	if !complete {
		return true
	}
	c := &e.props
	return err != nil || sent.Result != c.Result || sent.NRestarts != c.NRestarts || sent.MainPID != c.MainPID ||
		sent.ExecMainStatus != c.ExecMainStatus || sent.ExecMainStartTimestamp != c.ExecMainStartTimestamp ||
		sent.ExecMainExitTimestamp != c.ExecMainExitTimestamp
}

// cacheAnswer is cachePlan's split of the units systemd knows.
type cacheAnswer struct {
	read []*observed.Unit // properties to read
	// reusable lists the units the cache answers for (full: would have
	// answered for), with their entries, for the drift check.
	reusable map[string]*cacheEntry
	// reloaded are the units answered from entries cached before
	// systemd's last reload: their NeedDaemonReload is to be decided again.
	reloaded []*observed.Unit
	gen      uint64 // for cacheStore
	reloads  uint64 // the reloads seen when the plan was made
}

// cachePlan splits the units systemd knows into those whose properties
// must be read and those whose cached properties stand (filled in here).
// full reads every unit. It clears the dirty marks of the units it reads:
// a signal arriving during the read marks them again. typeDropIns: a
// drop-in directory for a whole type or prefix exists (an entry from
// before a reload is then read again).
func (o *Observer) cachePlan(full bool, loaded []*observed.Unit, files map[string]unitFile, status map[string][3]string, vendor map[string]vendor, typeDropIns bool) cacheAnswer {
	o.mu.Lock()
	defer o.mu.Unlock()
	ans := cacheAnswer{gen: o.cache.gen, reloads: o.cache.reloads}
	if !o.cache.on || !o.cache.valid || o.cache.hold {
		for _, u := range loaded {
			delete(o.cache.dirty, u.Name)
		}
		ans.read = loaded
		return ans
	}
	ans.reusable = map[string]*cacheEntry{}
	for _, u := range loaded {
		e := o.cache.units[u.Name]
		onDisk := vendor[u.Name].dropIns
		ok := e != nil && !o.cache.dirty[u.Name] && !strings.HasSuffix(u.Name, ".timer") &&
			e.status == status[u.Name] && e.mtime.Equal(files[u.Name].mtime) && e.size == len(files[u.Name].data) &&
			slices.Equal(e.onDisk, onDisk) && !e.props.PendingJob && !u.PendingJob && settledState(e.props.ActiveState)
		reloaded := ok && e.reloads != o.cache.reloads
		if reloaded {
			// A reload loads the drop-ins on disk: the ones the entry had
			// loaded when those are exactly the ones on disk.
			ok = !typeDropIns && !loadedElsewhere(o.cfg.root, &e.props, onDisk) && !needsReload(o.cfg.root, &e.props, onDisk)
		}
		delete(o.cache.dirty, u.Name)
		if !ok {
			ans.read = append(ans.read, u)
			continue
		}
		ans.reusable[u.Name] = e
		if full {
			ans.read = append(ans.read, u)
			continue
		}
		copyProps(u, &e.props)
		if reloaded {
			ans.reloaded = append(ans.reloaded, u)
		}
	}
	return ans
}

func settledState(active string) bool {
	return active == "active" || active == "inactive" || active == "failed"
}

// cacheStore records what a successful Observe read (or reused) for the
// units systemd knows, and drops every other unit; gen is cachePlan's. A
// read that began before Subscribe started or before a reload fills
// nothing.
func (o *Observer) cacheStore(gen, reloads uint64, loaded []*observed.Unit, files map[string]unitFile, status map[string][3]string, vendor map[string]vendor, dropInTimes map[string]map[string]time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.cache.on || gen != o.cache.gen {
		return
	}
	units := make(map[string]*cacheEntry, len(loaded))
	for _, u := range loaded {
		e := &cacheEntry{status: status[u.Name], mtime: files[u.Name].mtime, size: len(files[u.Name].data),
			dropIns: dropInTimes[u.Name], onDisk: vendor[u.Name].dropIns, reloads: reloads}
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
func (o *Observer) cacheDrift(ans cacheAnswer, units map[string]*observed.Unit) map[string]string {
	var drift map[string]string
	for name, e := range ans.reusable {
		u := units[name]
		if u == nil {
			continue
		}
		var fresh, cached observed.Unit
		copyProps(&fresh, u)
		copyProps(&cached, &e.props)
		if e.reloads != ans.reloads {
			// Decided again after a reload, not taken from the entry.
			cached.NeedDaemonReload = fresh.NeedDaemonReload
		}
		if d := diffProps(&cached, &fresh); d != "" {
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
	// its way: give it a moment, then drop the units it marked. On a
	// loaded host the watch can lag further behind (a torture run beside
	// two other suites on 2 cores: restarts 0.3-0.6 s old not yet read),
	// so a drift that stays is looked at again, longer, before it counts:
	// at most 20 × driftGrace (2 s), on this path only (a resync that
	// found a difference).
	for _, wait := range []time.Duration{driftGrace, 4 * driftGrace, 15 * driftGrace} {
		time.Sleep(wait)
		o.mu.Lock()
		for name := range drift {
			if o.cache.dirty[name] || !o.cache.valid {
				delete(drift, name)
			}
		}
		o.mu.Unlock()
		if len(drift) == 0 {
			return nil
		}
	}
	return drift
}

// driftGrace is the first wait of a suspected drift for a late signal.
var driftGrace = 100 * time.Millisecond

// copyProps copies the fields fillUnit sets.
func copyProps(dst, src *observed.Unit) {
	dst.LoadState, dst.ActiveState, dst.SubState, dst.Result = src.LoadState, src.ActiveState, src.SubState, src.Result
	dst.FragmentPath = src.FragmentPath
	dst.DropInPaths = slices.Clone(src.DropInPaths)
	dst.NeedDaemonReload = src.NeedDaemonReload
	dst.NRestarts, dst.MainPID, dst.ExecMainStatus = src.NRestarts, src.MainPID, src.ExecMainStatus
	dst.ExecMainStartTimestamp, dst.ExecMainExitTimestamp = src.ExecMainStartTimestamp, src.ExecMainExitTimestamp
	dst.ActiveExitTimestamp = src.ActiveExitTimestamp
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
