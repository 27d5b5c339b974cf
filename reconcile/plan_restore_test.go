package reconcile

import (
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

// Restoring a unit file edited out of band restarts the service only when
// its running process may run the edit: a process the backend recorded as
// started from exactly the file restored (observed.Unit.ProcessFileHash)
// is left running; one started from anything else, or with no record
// (systemd), is restarted when the change calls for it.
func TestPlanRestoreEditedKeepsProcessStartedFromRender(t *testing.T) {
	o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"},
		Source: desired.Source{File: "web.yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/web"}}}
	files, err := desired.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	render := files[0].Data
	h, _ := ownmark.HashOf(render)
	edited := []byte(strings.Replace(string(render), "ExecStart=/bin/web", "ExecStart=/bin/edited", 1))
	for _, tt := range []struct {
		name        string
		backend     string
		pid         uint32
		hash        string
		wantRestart bool
	}{
		{"process started from the render restored", "process", 42, h, false},
		{"process started from another file", "process", 42, "sha256:0123456789abcdef01234567", true},
		{"process started from a hand-edited file", "process", 42, "", true},
		{"no process", "process", 0, h, false},
		{"systemd: no record", "systemd", 42, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			active, sub := "active", "running"
			if tt.pid == 0 {
				active, sub = "inactive", "dead"
			}
			u := &observed.Unit{Name: "web.service", File: edited, Owner: o.ID(), LoadState: "loaded", ActiveState: active, SubState: sub,
				UnitFileState: "enabled", Result: "success", MainPID: tt.pid, ProcessFileHash: tt.hash}
			plan := Compute(Input{Objects: []*desired.Object{o}, Files: map[string][]desired.UnitFile{o.ID(): files}, UnitDir: unitDir,
				Observed: &observed.State{Backend: tt.backend, Units: map[string]*observed.Unit{"web.service": u}}})
			var restarted, written bool
			for _, s := range plan.Steps {
				restarted = restarted || s.Op == actuators.OpRestart
				written = written || s.Op == actuators.OpWriteFile
			}
			if !written || restarted != tt.wantRestart {
				t.Errorf("write %v, restart %v; want a write, restart %v: %v", written, restarted, tt.wantRestart, plan.Steps)
			}
		})
	}
}
