package systemd

import (
	"strings"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/internal/sdbus"
	"resil.dev/resil/observed"
)

// The last run of an unloaded service, as the watch heard it.
//
// systemd unloads an inactive unit that nothing references (a service
// neither enabled nor wanted by another unit), and its run history with
// it: loaded again by the next read, it is a unit that never ran. Which
// way its last run ended is what the planner needs: a process that
// exited by itself is done (restart policy on-failure, never), a stop by
// hand is drift. Before unloading a unit systemd sends the
// PropertiesChanged it still owes, then UnitRemoved; while Subscribe
// runs, the observer keeps, for each managed service, the run figures
// those signals carried (the Service interface's main process start,
// exit, status and result, the Unit interface's ActiveExitTimestamp), and
// on UnitRemoved outside a daemon-reload, when they name a run, keeps
// them as the unit's last run. A read that finds the unit inactive with
// no history and no job fills them in: they are systemd's own figures,
// relayed. They go once a read finds the unit with a history of its own,
// a signal tells of a later run, or a watch starts again.
// Without a watch (diff; apply on the private socket; an agent started
// after the unload) there is nothing to relay; reconcile's run memory
// remembers what a pass saw.

// lastRun is the run figures of one service.
type lastRun struct {
	start, exit, activeExit uint64
	status                  int32
	result                  string
}

// runSignal records what a signal says of a managed service's run. Called
// with o.mu held.
func (o *Observer) runSignal(s *godbus.Signal) {
	if s == nil {
		return
	}
	if name, ok := sdbus.UnitNameFromPath(s.Path); ok && s.Name == sdbus.PropertiesChanged {
		if _, managed := o.hints[name]; !managed || !strings.HasSuffix(name, ".service") || len(s.Body) < 2 {
			return
		}
		iface, _ := s.Body[0].(string)
		changed, _ := s.Body[1].(map[string]godbus.Variant)
		run := o.runs[name]
		switch iface {
		case serviceIface:
			if _, ok := changed["ExecMainStartTimestamp"]; !ok {
				return
			}
			u, _, err := signalledService(changed)
			if err != nil {
				return
			}
			run.start, run.exit, run.status, run.result = u.ExecMainStartTimestamp, u.ExecMainExitTimestamp, u.ExecMainStatus, u.Result
			if g, ok := o.gone[name]; ok && run.start != 0 && run.start != g.start {
				delete(o.gone, name) // a run since: what was relayed is past
			}
		case unitIface:
			v, ok := changed["ActiveExitTimestamp"]
			t, isU64 := v.Value().(uint64)
			if !ok || !isU64 {
				return
			}
			run.activeExit = t
		default:
			return
		}
		if o.runs == nil {
			o.runs = map[string]lastRun{}
		}
		o.runs[name] = run
		return
	}
	if s.Name != managerIface+".UnitRemoved" || len(s.Body) == 0 || o.cache.reloading {
		return
	}
	name, _ := s.Body[0].(string)
	run, ok := o.runs[name]
	if !ok {
		return
	}
	delete(o.runs, name)
	if run.start == 0 {
		return
	}
	if o.gone == nil {
		o.gone = map[string]lastRun{}
	}
	o.gone[name] = run
}

// relayLastRuns fills the last run of each unloaded service the watch saw
// go into a read's units, and forgets those a read found with a history of
// their own (or that are not managed any more). A read that loaded the
// unit again before the watch took its UnitRemoved finds it with no
// history too: the run figures last heard are relayed then, once they
// tell the run ended (the unit left the active state). Called with o.mu
// held.
func (o *Observer) relayLastRuns(units map[string]*observed.Unit) {
	relay := func(u *observed.Unit, run lastRun) {
		u.ExecMainStartTimestamp, u.ExecMainExitTimestamp, u.ActiveExitTimestamp = run.start, run.exit, run.activeExit
		u.ExecMainStatus = run.status
		if run.result != "" {
			u.Result = run.result
		}
	}
	for name, run := range o.gone {
		u := units[name]
		switch {
		case u == nil:
			if _, managed := o.hints[name]; !managed {
				delete(o.gone, name)
			}
		case u.ExecMainStartTimestamp != 0 || u.ActiveState != "inactive":
			delete(o.gone, name)
		case u.ReadsNeverRun():
			relay(u, run)
		}
	}
	for name, run := range o.runs {
		u := units[name]
		if _, managed := o.hints[name]; !managed {
			delete(o.runs, name)
			continue
		}
		if _, gone := o.gone[name]; !gone && u.ReadsNeverRun() && run.start != 0 && run.activeExit >= run.start {
			relay(u, run)
		}
	}
}

// forgetRuns drops what the watch heard: called when a watch starts (what
// a watch that ended heard may be past). Called with o.mu held.
func (o *Observer) forgetRuns() {
	o.runs, o.gone = nil, nil
}
