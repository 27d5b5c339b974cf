package reconcile

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

// driftService is Service/web (GEN=1) with drift policy drift and state
// state ("" for running), and its rendered files.
func driftService(t *testing.T, drift desired.DriftPolicy, state desired.State) (*desired.Object, []desired.UnitFile) {
	t.Helper()
	o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"},
		Source: desired.Source{File: "web.yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/web"},
			Environment: map[string]string{"GEN": "1"}, Drift: drift, State: state}}
	files, err := desired.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	return o, files
}

// planOne plans o alone against u (systemd backend, MarkProcessSince),
// with in's other fields.
func planOne(o *desired.Object, files []desired.UnitFile, u *observed.Unit, in Input) Plan {
	in.Objects = []*desired.Object{o}
	in.Files = map[string][]desired.UnitFile{o.ID(): files}
	in.UnitDir = unitDir
	in.MarkProcessSince = true
	in.Observed = &observed.State{Backend: "systemd", UnitDir: unitDir, Units: map[string]*observed.Unit{u.Name: u}}
	return Compute(in)
}

func driftFindings(p Plan) string {
	var out []string
	for _, f := range p.Findings {
		s := string(f.Reason)
		if f.Enforced {
			s += " (enforced)"
		}
		out = append(out, s+": "+f.Message)
	}
	return strings.Join(out, "\n")
}

// An owned unit file deleted out of band while systemd still has the unit
// loaded from it (observed.Unit.FileDeleted), or a unit running with no
// file at all (a daemon-reload since the deletion), is drift (FileDeleted),
// not a new unit: restored under enforce, left as found under report. The
// running process is still restarted (the deleted file cannot be compared
// with the manifest), with a reason that says so.
func TestPlanFileDeleted(t *testing.T) {
	const start = 1_700_000_000_000_000
	for _, tt := range []struct {
		name     string
		drift    desired.DriftPolicy
		active   string
		load     string
		deleted  bool
		steps    string
		finding  string
		journals bool
	}{
		{name: "enforce, running", active: "active", load: "loaded", deleted: true,
			steps: "write /etc/systemd/system/web.service (deleted out of band, restoring)\n" +
				"enable web.service (deleted out of band, restoring)\n" +
				"daemon-reload (unit files written)\n" +
				"restart web.service (its unit file was deleted out of band: the version it runs cannot be told)",
			finding:  "FileDeleted (enforced): /etc/systemd/system/web.service was deleted out of band (web.service is still loaded from it); restoring",
			journals: true},
		{name: "report, running: left as found", drift: desired.DriftReport, active: "active", load: "loaded", deleted: true,
			finding: "FileDeleted: /etc/systemd/system/web.service was deleted out of band (web.service is still loaded from it); drift policy report: left as is"},
		{name: "enforce, stopped", active: "inactive", load: "loaded", deleted: true,
			steps: "write /etc/systemd/system/web.service (deleted out of band, restoring)\n" +
				"enable web.service (deleted out of band, restoring)\n" +
				"daemon-reload (unit files written)\n" +
				"start web.service (inactive, want active)",
			finding:  "FileDeleted (enforced): /etc/systemd/system/web.service was deleted out of band (web.service is still loaded from it); restoring",
			journals: true},
		// Reloaded since (by resil for another unit, or anyone): systemd
		// no longer says where it came from, but a unit that runs with
		// no file anywhere had one that was deleted.
		{name: "reloaded since, running", active: "active", load: "not-found",
			steps: "write /etc/systemd/system/web.service (deleted out of band, restoring)\n" +
				"enable web.service (deleted out of band, restoring)\n" +
				"daemon-reload (unit files written)\n" +
				"restart web.service (its unit file was deleted out of band: the version it runs cannot be told)",
			finding:  "FileDeleted (enforced): web.service runs with no unit file: /etc/systemd/system/web.service was deleted out of band (and the units reloaded since); restoring",
			journals: true},
		{name: "reloaded since, running, report: left as found", drift: desired.DriftReport, active: "active", load: "not-found",
			finding: "FileDeleted: web.service runs with no unit file: /etc/systemd/system/web.service was deleted out of band (and the units reloaded since); drift policy report: left as is"},
		{name: "reloaded since, stopped: a new unit", active: "inactive", load: "not-found",
			steps: "write /etc/systemd/system/web.service (new unit)\n" +
				"enable web.service (new unit)\n" +
				"daemon-reload (unit files written)\n" +
				"start web.service (new unit)",
			journals: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, files := driftService(t, tt.drift, "")
			u := &observed.Unit{Name: "web.service", Path: unitDir + "/web.service", LoadState: tt.load, ActiveState: tt.active,
				NeedDaemonReload: tt.deleted, FileDeleted: tt.deleted}
			if tt.active == "active" {
				u.SubState, u.MainPID, u.ExecMainStartTimestamp = "running", 42, start
			}
			plan := planOne(o, files, u, Input{})
			if got := stepStrings(plan.Steps); got != tt.steps {
				t.Errorf("steps:\n%s\nwant\n%s", got, tt.steps)
			}
			if got := driftFindings(plan); got != tt.finding {
				t.Errorf("findings:\n%s\nwant\n%s", got, tt.finding)
			}
			if got := len(plan.RestartIntents) > 0; got != tt.journals {
				t.Errorf("restart intents %v, want some: %v", plan.RestartIntents, tt.journals)
			}
		})
	}
}

// A hand edit of an owned unit file whose X-Resil-Hash marker is the
// current render's (the manifest did not change) is restored without a
// restart when the running process started before the edit (the file's
// modification time): it never ran the edit, it runs what resil wrote.
// The file is written with X-Resil-Process-Since (the process's start), so
// its new mtime does not read as a lost restart on the next pass. Started
// after the edit (it may run it), or anything that says the process is
// older than resil's version, and it is restarted as before.
func TestPlanEditRestoredKeepsProcess(t *testing.T) {
	const start = 1_700_000_000_000_000
	const before, after = start - 60_000_000, start + 60_000_000
	for _, tt := range []struct {
		name    string
		edit    func(rendered string) string
		mtime   uint64
		journal bool
		restart string // "" when no restart
		reason  string // the write's reason
	}{
		{name: "edited after the process started", mtime: after,
			reason: "edited out of band after the process started; restoring, no restart"},
		{name: "restarted by hand after the edit", mtime: before,
			reason: "edited out of band, restoring", restart: "unit file changed: Environment"},
		{name: "file time unknown", mtime: 0,
			reason: "edited out of band, restoring", restart: "unit file changed: Environment"},
		{name: "a restart the journal says is owed", mtime: after, journal: true,
			reason: "edited out of band, restoring", restart: "unit file changed: Environment"},
		{name: "process older than resil's process-since marker", mtime: after,
			edit: func(s string) string {
				return string(ownmark.WithProcessSince([]byte(s), start+1))
			},
			reason: "edited out of band, restoring", restart: "unit file changed: Environment"},
		{name: "process since the marker", mtime: after,
			edit: func(s string) string {
				return string(ownmark.WithProcessSince([]byte(s), start-1))
			},
			reason: "edited out of band after the process started; restoring, no restart"},
		{name: "the manifest changed since resil wrote it", mtime: after,
			edit: func(s string) string {
				return strings.Replace(s, ownmark.KeyHash+"=", ownmark.KeyHash+"=sha256:000000", 1)
			},
			reason: "edited out of band, restoring", restart: "unit file changed: Environment"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, files := driftService(t, "", "")
			rendered := string(files[0].Data)
			if tt.edit != nil {
				rendered = tt.edit(rendered)
			}
			edited := strings.Replace(rendered, "Environment=\"GEN=1\"", "Environment=\"GEN=HACKED\"", 1)
			if edited == rendered {
				t.Fatalf("no Environment line in\n%s", rendered)
			}
			u := &observed.Unit{Name: "web.service", Path: unitDir + "/web.service", File: []byte(edited), Owner: o.ID(),
				LoadState: "loaded", ActiveState: "active", SubState: "running", UnitFileState: "enabled",
				MainPID: 42, ExecMainStartTimestamp: start, FileModTime: tt.mtime}
			var in Input
			if tt.journal {
				in.RestartPending = map[string]time.Time{"web.service": time.UnixMicro(start - 1)}
			}
			plan := planOne(o, files, u, in)
			var write *actuators.Step
			restart := ""
			for i, s := range plan.Steps {
				switch s.Op {
				case actuators.OpWriteFile:
					write = &plan.Steps[i]
				case actuators.OpRestart:
					restart = s.Reason
				}
			}
			if write == nil {
				t.Fatalf("no write: %s", stepStrings(plan.Steps))
			}
			if write.Reason != tt.reason || restart != tt.restart {
				t.Errorf("write (%s), restart (%s); want write (%s), restart (%s)", write.Reason, restart, tt.reason, tt.restart)
			}
			since, marked := ownmark.ProcessSince(write.Data)
			if tt.restart == "" && (!marked || since > start) {
				t.Errorf("restored without a restart, its process-since marker is %d (%v), want at most the process's start %d", since, marked, start)
			}
			if tt.restart != "" && marked {
				t.Errorf("restored with a restart, the file carries a process-since marker %d", since)
			}
			if got := !slices.Contains(plan.RestartIntents, "web.service"); got != (tt.restart == "") {
				t.Errorf("restart intents %v with restart %q", plan.RestartIntents, tt.restart)
			}
			for _, f := range plan.Findings {
				if f.Reason != ReasonFileEdited || !f.Warning || !f.Enforced {
					t.Errorf("finding %+v, want an enforced FileEdited warning", f)
				}
			}
			if len(plan.Findings) != 1 {
				t.Errorf("findings %s, want one FileEdited", driftFindings(plan))
			}
		})
	}
}

// A service wanted stopped that is found active was started out of band:
// StartedOutOfBand drift, the mirror of StoppedOutOfBand. Stopped under
// enforce, left running under report; a manifest that just changed its
// state to stopped (StateChanged) or its file is applied without a drift
// finding.
func TestPlanStartedOutOfBand(t *testing.T) {
	for _, tt := range []struct {
		name         string
		drift        desired.DriftPolicy
		active       string
		stateChanged bool
		stale        bool
		steps        string
		finding      string
	}{
		{name: "enforce", active: "active", steps: "stop web.service (active, want stopped)",
			finding: "StartedOutOfBand (enforced): web.service is active, want stopped; stopping"},
		{name: "enforce, activating", active: "activating", steps: "stop web.service (active, want stopped)",
			finding: "StartedOutOfBand (enforced): web.service is activating, want stopped; stopping"},
		{name: "report", drift: desired.DriftReport, active: "active",
			finding: "StartedOutOfBand: web.service is active, want stopped; drift policy report: left as is"},
		{name: "report, state just changed to stopped", drift: desired.DriftReport, active: "active", stateChanged: true,
			steps: "stop web.service (active, want stopped)"},
		{name: "enforce, state just changed to stopped", active: "active", stateChanged: true,
			steps: "stop web.service (active, want stopped)"},
		{name: "manifest changed too", active: "active", stale: true,
			steps: "write /etc/systemd/system/web.service (manifest changed)\ndaemon-reload (unit files written)\nstop web.service (active, want stopped)"},
		{name: "inactive", active: "inactive"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, files := driftService(t, tt.drift, desired.StateStopped)
			file := files[0].Data
			if tt.stale {
				file = staleFileOf(t, o.ID(), "web.yaml", false)
			}
			u := &observed.Unit{Name: "web.service", Path: unitDir + "/web.service", File: file, Owner: o.ID(),
				LoadState: "loaded", ActiveState: tt.active, UnitFileState: "enabled"}
			if tt.active != "inactive" {
				u.SubState, u.MainPID, u.ExecMainStartTimestamp = "running", 42, 1_700_000_000_000_000
			}
			in := Input{}
			if tt.stateChanged {
				in.StateChanged = map[string]bool{o.ID(): true}
			}
			plan := planOne(o, files, u, in)
			if got := stepStrings(plan.Steps); got != tt.steps {
				t.Errorf("steps:\n%s\nwant\n%s", got, tt.steps)
			}
			if got := driftFindings(plan); got != tt.finding {
				t.Errorf("findings:\n%s\nwant\n%s", got, tt.finding)
			}
		})
	}
}

// The agent tells a manifest's own switch to state: stopped from a start
// out of band: the pass that applies the switch stops the service with no
// drift finding (its last good version said running: StateChanged, for
// drift: enforce too); a start by hand after it is StartedOutOfBand.
func TestStateSwitchToStoppedIsNotDrift(t *testing.T) {
	dir, f, r, _ := appliedWeb(t)
	writeManifest(t, dir, "web.yaml", webManifest+"  state: stopped\n")
	res, err := r.Reconcile(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := stepStrings(res.Plan.Steps); got != "stop web.service (active, want stopped)" || len(res.Plan.Findings) != 0 {
		t.Fatalf("the switch: steps\n%s\nfindings\n%s", got, driftFindings(res.Plan))
	}
	f.active["web.service"] = true // systemctl start, by hand
	res, err = r.Reconcile(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := "StartedOutOfBand (enforced): web.service is active, want stopped; stopping"
	if got := driftFindings(res.Plan); got != want || stepStrings(res.Plan.Steps) != "stop web.service (active, want stopped)" {
		t.Fatalf("started by hand: steps\n%s\nfindings\n%s\nwant %s", stepStrings(res.Plan.Steps), got, want)
	}
}

// A timer's file deleted out of band: the same drift, restored (and the
// timer restarted) under enforce, left as found under report.
func TestPlanTimerFileDeleted(t *testing.T) {
	for _, tt := range []struct {
		drift   desired.DriftPolicy
		steps   string
		finding string
	}{
		{steps: "write /etc/systemd/system/nightly.timer (deleted out of band, restoring)\n" +
			"enable nightly.timer (deleted out of band, restoring)\n" +
			"daemon-reload (unit files written)\n" +
			"restart nightly.timer (its unit file was deleted out of band: the version it runs cannot be told)",
			finding: "FileDeleted (enforced): /etc/systemd/system/nightly.timer was deleted out of band (nightly.timer is still loaded from it); restoring"},
		{drift: desired.DriftReport,
			finding: "FileDeleted: /etc/systemd/system/nightly.timer was deleted out of band (nightly.timer is still loaded from it); drift policy report: left as is"},
	} {
		name := string(tt.drift)
		if name == "" {
			name = "enforce"
		}
		t.Run(name, func(t *testing.T) {
			o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindTimer, Metadata: desired.ObjectMeta{Name: "nightly"},
				Source: desired.Source{File: "nightly.yaml"}, Timer: &desired.TimerSpec{Schedule: []string{"daily"}, Command: []string{"/bin/true"}, Drift: tt.drift}}
			files, err := desired.Render(o)
			if err != nil {
				t.Fatal(err)
			}
			units := map[string]*observed.Unit{}
			for _, f := range files {
				u := &observed.Unit{Name: f.Name, Path: unitDir + "/" + f.Name, File: f.Data, Owner: o.ID(), LoadState: "loaded", ActiveState: "inactive", UnitFileState: "static"}
				if strings.HasSuffix(f.Name, ".timer") {
					u.File, u.Owner, u.ActiveState, u.SubState, u.NeedDaemonReload, u.FileDeleted = nil, "", "active", "waiting", true, true
				}
				units[f.Name] = u
			}
			plan := Compute(Input{Objects: []*desired.Object{o}, Files: map[string][]desired.UnitFile{o.ID(): files}, UnitDir: unitDir,
				Observed: &observed.State{Backend: "systemd", UnitDir: unitDir, Units: units}})
			if got := stepStrings(plan.Steps); got != tt.steps {
				t.Errorf("steps:\n%s\nwant\n%s", got, tt.steps)
			}
			if got := driftFindings(plan); got != tt.finding {
				t.Errorf("findings:\n%s\nwant\n%s", got, tt.finding)
			}
		})
	}
}
