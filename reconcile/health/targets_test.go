package health

import (
	"testing"

	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// An exec probe runs as the service runs: user/group, or the systemd
// escape hatch's User=/Group=, which win on both backends.
func TestTargetsIdentity(t *testing.T) {
	probe := &desired.HealthSpec{Liveness: &desired.Probe{Exec: []string{"/bin/true"}}}
	tests := []struct {
		name string
		spec desired.ServiceSpec
		want Identity
	}{
		{"none", desired.ServiceSpec{}, Identity{}},
		{"user and group", desired.ServiceSpec{User: "app", Group: "app"}, Identity{User: "app", Group: "app"}},
		{"escape hatch", desired.ServiceSpec{Systemd: map[string]map[string]string{"Service": {"User": "nobody", "Group": "nogroup"}}}, Identity{User: "nobody", Group: "nogroup"}},
		{"escape hatch wins", desired.ServiceSpec{User: "app", Systemd: map[string]map[string]string{"Service": {"User": "nobody"}}}, Identity{User: "nobody"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.spec
			s.Command, s.Health = []string{"/bin/sleep", "infinity"}, probe
			o := &desired.Object{Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"}, Service: &s}
			st := &observed.State{Units: map[string]*observed.Unit{"web.service": {Name: "web.service", ActiveState: "active", MainPID: 42}}}
			got := Targets([]*desired.Object{o}, st)
			if len(got) != 1 || got[0].Identity != tt.want {
				t.Fatalf("targets %+v, want identity %+v", got, tt.want)
			}
		})
	}
}
