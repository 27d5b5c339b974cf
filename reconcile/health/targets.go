package health

import (
	"time"

	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// Targets are the liveness and readiness probes to run for the observed
// state st: one per probe of every desired service whose main process is
// up (active or reloading, with a MainPID; a unit still activating is in
// its start, which its startup probe covers). A target names the process
// (MainPID, start time), so a restarted process starts its probes afresh.
func Targets(objs []*desired.Object, st *observed.State) []Target {
	if st == nil {
		return nil
	}
	var out []Target
	for _, o := range objs {
		s := o.Service
		if s == nil || s.Health == nil || s.DesiredState() != desired.StateRunning {
			continue
		}
		unit := o.Metadata.Name + ".service"
		u := st.Units[unit]
		if u == nil || u.MainPID == 0 || (u.ActiveState != "active" && u.ActiveState != "reloading") {
			continue
		}
		started := time.UnixMicro(int64(u.ExecMainStartTimestamp))
		id := probeIdentity(s)
		for _, k := range []struct {
			kind  string
			probe *desired.Probe
		}{{desired.ProbeLiveness, s.Health.Liveness}, {desired.ProbeReadiness, s.Health.Readiness}} {
			if k.probe == nil {
				continue
			}
			out = append(out, Target{Object: o.ID(), Unit: unit, Kind: k.kind, Probe: k.probe.Effective(k.kind),
				Identity: id, MainPID: u.MainPID, Started: started})
		}
	}
	return out
}

// probeIdentity is who the service runs as, so its exec probes run as that
// too: user and group, overridden by the systemd escape hatch's
// [Service] User= and Group=, which win on both backends (systemd reads
// them last; the process backend applies them to the process). Without
// them a probe of a service the escape hatch runs as nobody ran as root.
func probeIdentity(s *desired.ServiceSpec) Identity {
	id := Identity{User: s.User, Group: s.Group}
	if svc := s.Systemd["Service"]; svc != nil {
		if v, ok := svc["User"]; ok {
			id.User = v
		}
		if v, ok := svc["Group"]; ok {
			id.Group = v
		}
	}
	return id
}
