package reconcile

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

func (p *planner) watchdog(o *desired.Object) {
	m := p.in.Observed.Manager
	if m == nil {
		p.find(o.ID(), "", ReasonUnsupported, "host watchdog needs systemd; the "+p.in.Observed.Backend+" backend cannot apply it", true, false)
		return
	}
	if len(m.Devices) == 0 {
		p.find(o.ID(), "", ReasonNoWatchdogDev, "no watchdog device under /sys/class/watchdog; settings written but nothing will be armed", true, false)
	}
	if w := o.Watchdog; w.Device != "" && m.Properties["WatchdogDevice"] != w.Device {
		// WatchdogDevice= is read-only over D-Bus and not re-read by
		// daemon-reload: the drop-in carries it, PID 1 picks it up at the
		// next daemon-reexec or boot. Re-executing PID 1 is the operator's call.
		p.find(o.ID(), "", ReasonReexecNeeded, fmt.Sprintf("WatchdogDevice is %q, want %q: written to the drop-in; takes effect after `systemctl daemon-reexec` or a reboot (the agent does not re-execute PID 1)",
			m.Properties["WatchdogDevice"], w.Device), true, false)
	}
	for _, f := range p.in.Files[o.ID()] {
		path := m.ConfPath
		if path == "" {
			path = filepath.Join(p.in.ManagerDir, f.Name)
		}
		if !bytes.Equal(m.File, f.Data) {
			reason := "new manager drop-in"
			if m.File != nil {
				reason = "manifest changed"
			}
			p.files = append(p.files, actuators.Step{Op: actuators.OpWriteFile, Object: o.ID(), Path: path, Data: f.Data, Old: m.File, Reason: reason})
			// daemon-reload re-reads RuntimeWatchdogSec/RebootWatchdogSec from
			// the drop-in; set-manager after it only fixes what is left.
			p.reload = true
			p.reloadWhy = append(p.reloadWhy, "manager drop-in written")
		}
	}
	want := map[string]string{}
	w := o.Watchdog
	if w.RuntimeTimeout.IsSet() {
		want["RuntimeWatchdogUSec"] = fmt.Sprint(uint64(w.RuntimeTimeout.D().Microseconds()))
	}
	if w.RebootTimeout.IsSet() {
		want["RebootWatchdogUSec"] = fmt.Sprint(uint64(w.RebootTimeout.D().Microseconds()))
	}
	diff := map[string]string{}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var why []string
	for _, k := range keys {
		if m.Properties[k] != want[k] {
			diff[k] = want[k]
			why = append(why, fmt.Sprintf("%s %s, want %s", k, OrDash(m.Properties[k]), want[k]))
		}
	}
	if len(diff) > 0 {
		p.manager = append(p.manager, actuators.Step{Op: actuators.OpSetManager, Object: o.ID(), Props: diff, Reason: strings.Join(why, "; ")})
	}
}
