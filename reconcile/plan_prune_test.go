package reconcile

import (
	"strings"
	"testing"
	"time"

	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

// A unit file's X-Resil-Object marker alone does not make it prunable when
// the object it names is desired: a unit of a name that object never
// renders is a copy (the operator's cp of one of its units, perhaps edited
// into another service) and is left alone with an OwnerConflict; a unit of
// a name it may render and no longer does (a Timer's inline job once the
// Timer names a Service) is still pruned, at once and without "no longer
// desired". The planner decides the same for both backends.
func TestPruneCopiedUnit(t *testing.T) {
	svcObj := func(name string) *desired.Object {
		return &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: name},
			Source: desired.Source{File: name + ".yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/sleep", "infinity"}}}
	}
	timerObj := func(name, service string) *desired.Object {
		o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindTimer, Metadata: desired.ObjectMeta{Name: name},
			Source: desired.Source{File: name + ".yaml"}, Timer: &desired.TimerSpec{Schedule: []string{"hourly"}, Service: service}}
		if service == "" {
			o.Timer.Command = []string{"/bin/true"}
		}
		return o
	}
	render := func(o *desired.Object) []desired.UnitFile {
		fs, err := desired.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		return fs
	}
	fileOf := func(o *desired.Object, unit string) []byte {
		for _, f := range render(o) {
			if f.Name == unit {
				return f.Data
			}
		}
		t.Fatalf("%s renders no %s", o.ID(), unit)
		return nil
	}
	b1, b2 := svcObj("b0001"), svcObj("b0002")
	edited := strings.NewReplacer("ExecStart=/bin/sleep infinity", "ExecStart=/usr/local/bin/mytool", "Description=b0002", "Description=my tool").
		Replace(string(fileOf(b2, "b0002.service")))
	type extra struct {
		name string
		file []byte
	}
	for _, tt := range []struct {
		name    string
		objects []*desired.Object
		extra   []extra
		grace   time.Duration
		// want: the steps on the extra units, then their findings
		// (Reason Object Unit).
		want, findings []string
	}{
		{
			name:     "copy of a desired service's unit",
			objects:  []*desired.Object{b1},
			extra:    []extra{{"b0001-debug.service", fileOf(b1, "b0001.service")}},
			findings: []string{"OwnerConflict Service/b0001 b0001-debug.service"},
		},
		{
			name:     "copy edited into another service",
			objects:  []*desired.Object{b1, b2},
			extra:    []extra{{"mytool.service", []byte(edited)}},
			findings: []string{"OwnerConflict Service/b0002 mytool.service"},
		},
		{
			name:     "copy of a timer's unit under a timer name",
			objects:  []*desired.Object{timerObj("sync", "")},
			extra:    []extra{{"sync-debug.timer", fileOf(timerObj("sync", ""), "sync.timer")}},
			findings: []string{"OwnerConflict Timer/sync sync-debug.timer"},
		},
		{
			name:    "a timer's inline job it no longer renders",
			objects: []*desired.Object{timerObj("sync", "job"), svcObj("job")},
			extra:   []extra{{"sync.service", fileOf(timerObj("sync", ""), "sync.service")}},
			grace:   10 * time.Minute, // its manifest is not gone: no grace
			want: []string{
				"stop sync.service (pruned: Timer/sync no longer renders sync.service)",
				"disable sync.service (pruned: Timer/sync no longer renders sync.service)",
				"remove /etc/systemd/system/sync.service (pruned: Timer/sync no longer renders sync.service)",
			},
		},
		{
			name:    "copy of an object no longer desired",
			objects: []*desired.Object{b2},
			extra:   []extra{{"b0001-debug.service", fileOf(b1, "b0001.service")}},
			want: []string{
				"stop b0001-debug.service (pruned: Service/b0001 no longer desired)",
				"disable b0001-debug.service (pruned: Service/b0001 no longer desired)",
				"remove /etc/systemd/system/b0001-debug.service (pruned: Service/b0001 no longer desired)",
			},
		},
	} {
		for _, backend := range []string{"systemd", "process"} {
			t.Run(tt.name+"/"+backend, func(t *testing.T) {
				in := Input{Files: map[string][]desired.UnitFile{}, UnitDir: unitDir, Prune: true,
					Observed: &observed.State{Backend: backend, UnitDir: unitDir, Units: map[string]*observed.Unit{}}}
				in.Now, in.PruneGrace = time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC), tt.grace
				for _, o := range tt.objects {
					in.Objects = append(in.Objects, o)
					in.Files[o.ID()] = render(o)
					for _, f := range in.Files[o.ID()] {
						in.Observed.Units[f.Name] = runningUnit(f.Name, f.Data)
					}
				}
				extra := map[string]bool{}
				for _, x := range tt.extra {
					in.Observed.Units[x.name] = runningUnit(x.name, x.file)
					extra[x.name] = true
				}
				plan := Compute(in)
				var steps, findings []string
				for _, s := range plan.Steps {
					if extra[s.Unit] {
						steps = append(steps, s.String())
					} else if s.Unit != "" {
						t.Errorf("step on a desired unit: %s", s)
					}
					if strings.Contains(s.Reason, "no longer desired") && in.Files[s.Object] != nil {
						t.Errorf("%s is desired: %s", s.Object, s)
					}
				}
				for _, f := range plan.Findings {
					findings = append(findings, string(f.Reason)+" "+f.Object+" "+f.Unit)
					if f.Reason == ReasonOwnerConflict && (!f.Warning || f.Enforced || !strings.Contains(f.Message, "not one of its units")) {
						t.Errorf("OwnerConflict finding: %+v", f)
					}
				}
				if strings.Join(steps, "\n") != strings.Join(tt.want, "\n") {
					t.Errorf("steps on the extra units:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(tt.want, "\n"))
				}
				if strings.Join(findings, "\n") != strings.Join(tt.findings, "\n") {
					t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(findings, "\n"), strings.Join(tt.findings, "\n"))
				}
			})
		}
	}
}

// runningUnit is an observed unit of file data, enabled and running.
func runningUnit(name string, data []byte) *observed.Unit {
	owner, _ := ownmark.IsOwned(data)
	return &observed.Unit{Name: name, Path: unitDir + "/" + name, File: data, Owner: owner, LoadState: "loaded",
		ActiveState: "active", SubState: "running", UnitFileState: "enabled", MainPID: 100}
}
