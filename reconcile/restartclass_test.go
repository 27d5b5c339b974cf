package reconcile

import (
	"reflect"
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

func TestClassifyUnitChange(t *testing.T) {
	const base = `# Managed by resil
[Unit]
Description=web
After=network.target
StartLimitIntervalSec=10s
StartLimitBurst=5

[Service]
ExecStart=/bin/sleep 1000
Environment=A=1
Restart=always
RestartSec=100ms

[Install]
WantedBy=multi-user.target
`
	tests := []struct {
		name, old, new string
		want           UnitChange
	}{
		{"same", base, base, UnitChange{}},
		{"comment only", base, "# Managed by resil (v2)\n" + base[len("# Managed by resil\n"):], UnitChange{}},
		{"RestartSec", base, replace(base, "RestartSec=100ms", "RestartSec=2s"), UnitChange{Keys: []string{"RestartSec"}}},
		{"description and ordering", base, replace(replace(base, "Description=web", "Description=the web"), "After=network.target", "After=network-online.target"),
			UnitChange{Keys: []string{"After", "Description"}}},
		{"start limit", base, replace(base, "StartLimitBurst=5", "StartLimitBurst=50"), UnitChange{Keys: []string{"StartLimitBurst"}}},
		{"install", base, replace(base, "WantedBy=multi-user.target", "WantedBy=default.target"), UnitChange{Keys: []string{"WantedBy"}}},
		{"command", base, replace(base, "ExecStart=/bin/sleep 1000", "ExecStart=/bin/sleep 2000"), UnitChange{Restart: true, Keys: []string{"ExecStart"}}},
		{"environment and restart policy", base, replace(replace(base, "Environment=A=1", "Environment=A=2"), "Restart=always", "Restart=on-failure"),
			UnitChange{Restart: true, Keys: []string{"Environment"}}},
		{"added user", base, replace(base, "[Service]\n", "[Service]\nUser=nobody\n"), UnitChange{Restart: true, Keys: []string{"User"}}},
		{"removed setting", base, replace(base, "Environment=A=1\n", ""), UnitChange{Restart: true, Keys: []string{"Environment"}}},
		{"moved to another section", base, replace(replace(base, "Restart=always\n", ""), "[Unit]\n", "[Unit]\nRestart=always\n"),
			UnitChange{Restart: true, Keys: []string{"Restart"}}},
		{"continuation line", base, replace(base, "ExecStart=/bin/sleep 1000", "ExecStart=/bin/sleep\\\n1000"), UnitChange{}},
		{"continuation changes spacing", base, replace(base, "ExecStart=/bin/sleep 1000", "ExecStart=/bin/sleep \\\n1000"), UnitChange{Restart: true, Keys: []string{"ExecStart"}}},
		{"garbage line", base, replace(base, "Restart=always", "Restart=always\nnot a setting"), UnitChange{Restart: true, Keys: []string{"[Service] line"}}},
		{"unknown key", base, replace(base, "[Service]\n", "[Service]\nFooBar=1\n"), UnitChange{Restart: true, Keys: []string{"FooBar"}}},
		{"resil's marker keys", base, replace(base, "[Unit]\n", "[Unit]\nX-Resil-Hash=abc\n"), UnitChange{}},
		{"other X- keys", base, replace(base, "[Unit]\n", "[Unit]\nX-Team=web\n"), UnitChange{Keys: []string{"X-Team"}}},
		{"new file", "", base, UnitChange{Restart: true, Keys: []string{"Environment", "ExecStart"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ClassifyUnitChange([]byte(tt.old), []byte(tt.new))
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestUnitChangeReason(t *testing.T) {
	tests := []struct {
		c    UnitChange
		want string
	}{
		{UnitChange{Keys: []string{"RestartSec"}}, "reload only: RestartSec changed"},
		{UnitChange{Restart: true, Keys: []string{"Environment", "ExecStart"}}, "unit file changed: Environment, ExecStart"},
		{UnitChange{}, "unit file changed: comments only"},
	}
	for _, tt := range tests {
		if got := tt.c.Reason(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.c, got, tt.want)
		}
	}
}

// replace replaces the first old in s, which must be there.
func replace(s, old, new string) string {
	if !strings.Contains(s, old) {
		panic("replace: " + old + " not found")
	}
	return strings.Replace(s, old, new, 1)
}

// The planner restarts a running service only when its rewritten unit
// file changes what the process runs.
func TestPlanRestartsOnlyWhenProcessAffected(t *testing.T) {
	svc := func(delay string, cmd ...string) *desired.Object {
		return &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"},
			Source:  desired.Source{File: "web.yaml"},
			Service: &desired.ServiceSpec{Command: cmd, Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: desired.Duration(delay)}}}
	}
	render := func(o *desired.Object) []desired.UnitFile {
		fs, err := desired.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		return fs
	}
	old := render(svc("5s", "/bin/sleep", "1000"))[0].Data
	tests := []struct {
		name  string
		want  *desired.Object
		stale bool
		steps []string
	}{
		{"restart delay", svc("1s", "/bin/sleep", "1000"), false, []string{
			"write /etc/systemd/system/web.service (manifest changed; reload only: RestartSec changed)", "daemon-reload (unit files written)"}},
		{"restart delay, stale process", svc("1s", "/bin/sleep", "1000"), true, []string{
			"write /etc/systemd/system/web.service (manifest changed; reload only: RestartSec changed)", "daemon-reload (unit files written)",
			"restart web.service (running process started from an older unit file)"}},
		{"command", svc("5s", "/bin/sleep", "2000"), false, []string{
			"write /etc/systemd/system/web.service (manifest changed)", "daemon-reload (unit files written)", "restart web.service (unit file changed: ExecStart)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := &observed.State{Units: map[string]*observed.Unit{"web.service": {
				Name: "web.service", Owner: "Service/web", Path: "/etc/systemd/system/web.service", File: old, LoadState: "loaded",
				ActiveState: "active", SubState: "running", UnitFileState: "enabled", MainPID: 10, StaleProcess: tt.stale}}}
			plan := Compute(Input{Objects: []*desired.Object{tt.want}, Files: map[string][]desired.UnitFile{"Service/web": render(tt.want)},
				UnitDir: "/etc/systemd/system", Observed: obs, Prune: true})
			var got []string
			for _, s := range plan.Steps {
				got = append(got, s.String())
			}
			if strings.Join(got, "\n") != strings.Join(tt.steps, "\n") {
				t.Fatalf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.steps, "\n"))
			}
		})
	}
}

// On systemd a reload-only rewrite for a running, not stale process
// carries X-Resil-Process-Since (the process's start), and a file that
// differs from the render only by that marker is not rewritten.
func TestPlanMarksProcessSince(t *testing.T) {
	svc := func(delay string) *desired.Object {
		return &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"},
			Source:  desired.Source{File: "web.yaml"},
			Service: &desired.ServiceSpec{Command: []string{"/bin/sleep", "1000"}, Restart: &desired.RestartSpec{Delay: desired.Duration(delay)}}}
	}
	render := func(o *desired.Object) []desired.UnitFile {
		fs, err := desired.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		return fs
	}
	const start = 1764547200000000
	plan := func(file []byte, want *desired.Object, stale bool) Plan {
		obs := &observed.State{Units: map[string]*observed.Unit{"web.service": {
			Name: "web.service", Owner: "Service/web", Path: "/etc/systemd/system/web.service", File: file, LoadState: "loaded",
			ActiveState: "active", SubState: "running", UnitFileState: "enabled", MainPID: 10, ExecMainStartTimestamp: start, StaleProcess: stale}}}
		return Compute(Input{Objects: []*desired.Object{want}, Files: map[string][]desired.UnitFile{"Service/web": render(want)},
			UnitDir: "/etc/systemd/system", Observed: obs, Prune: true, MarkProcessSince: true})
	}
	old := render(svc("5s"))[0].Data
	p := plan(old, svc("1s"), false)
	if len(p.Steps) != 2 || p.Steps[0].Op != actuators.OpWriteFile {
		t.Fatalf("steps %v", p.Steps)
	}
	written := p.Steps[0].Data
	if since, ok := ownmark.ProcessSince(written); !ok || since != start {
		t.Fatalf("marker %d %v in:\n%s", since, ok, written)
	}
	if string(ownmark.WithoutProcessSince(written)) != string(render(svc("1s"))[0].Data) {
		t.Fatal("the marker is not the only difference from the render")
	}
	if p := plan(written, svc("1s"), false); len(p.Steps) != 0 {
		t.Fatalf("a marked file is rewritten: %v", p.Steps)
	}
	// A stale process gets no marker (it is restarted), nor does a
	// change the process depends on.
	if p := plan(old, svc("1s"), true); len(p.Steps) == 0 || ownmark.WithoutProcessSince(p.Steps[0].Data) == nil || strings.Contains(string(p.Steps[0].Data), ownmark.KeyProcessSince) {
		t.Fatalf("stale: %v", p.Steps)
	}
	cmd := svc("5s")
	cmd.Service.Command = []string{"/bin/sleep", "2000"}
	if p := plan(old, cmd, false); strings.Contains(string(p.Steps[0].Data), ownmark.KeyProcessSince) {
		t.Fatal("a command change got a marker")
	}
}
