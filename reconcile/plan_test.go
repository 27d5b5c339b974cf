package reconcile

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

var update = flag.Bool("update", false, "rewrite golden plan.txt files")

// obsUnit is the test-side form of an observed unit. File is one of:
// "rendered" (exactly what the manifest renders), "edited" (rendered, then a
// line changed by hand), "rescheduled" (rendered with OnCalendar=
// OldSchedule), "moved" (rendered from the same object in another
// manifest file: only the X-Resil-Source comment differs), "foreign" (a unit
// resil does not own), "stale" (an
// intact resil file of an older manifest version, owned by Owner or the
// object), "stale-takeover" (the same, written with takeOver),
// "stale-edited" (the same, then edited by hand), or "" (absent).
type obsUnit struct {
	File          string `json:"file"`
	Owner         string `json:"owner"`
	Source        string `json:"source"`
	LoadState     string `json:"loadState"`
	ActiveState   string `json:"activeState"`
	SubState      string `json:"subState"`
	Result        string `json:"result"`
	UnitFileState string `json:"unitFileState"`
	// InstallLinks, when set, are the dependency directories holding the
	// unit's enablement links (InstallLinksKnown).
	InstallLinks     []string          `json:"installLinks"`
	NRestarts        uint32            `json:"nRestarts"`
	ExecMainStatus   int32             `json:"execMainStatus"`
	NeedDaemonReload bool              `json:"needDaemonReload"`
	StaleProcess     bool              `json:"staleProcess"`
	DropIns          map[string]string `json:"dropIns"`
	VendorPaths      []string          `json:"vendorPaths"`
	VendorOverrides  bool              `json:"vendorOverrides"`
	// Timers and jobs: times as RFC 3339; stamp is the Persistent= stamp
	// file's mtime (the observer sets StampPath for every timer).
	ExecMainExitTimestamp string `json:"execMainExitTimestamp"`
	Stamp                 string `json:"stamp"`
	LastTrigger           string `json:"lastTrigger"`
	PendingJob            bool   `json:"pendingJob"`
	// OldSchedule, with file "rescheduled": the rendered timer with its
	// OnCalendar= lines replaced by this one (only the schedule changed).
	OldSchedule string `json:"oldSchedule"`
}

type obsFile struct {
	Backend     string             `json:"backend"`
	Units       map[string]obsUnit `json:"units"`
	Manager     *observed.Manager  `json:"manager"`
	ManagerFile string             `json:"managerFile"`
	NoPrune     bool               `json:"noPrune"`
	BrokenFiles []string           `json:"brokenFiles"`
	// ReadAt is the observation time (the planner's "now"), RFC 3339.
	ReadAt string `json:"readAt"`
	// RestartPending are the units the restart journal names.
	RestartPending []string `json:"restartPending"`
}

// rescheduled renders the Timer object of unit name with schedule old:
// an intact owned file of the manifest's previous version.
func rescheduled(t *testing.T, set *desired.Set, name, old string) []byte {
	t.Helper()
	for _, o := range set.Sorted() {
		if o.Timer == nil {
			continue
		}
		prev := *o
		tm := *o.Timer
		tm.Schedule = []string{old}
		prev.Timer = &tm
		fs, err := desired.Render(&prev)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if f.Name == name {
				return f.Data
			}
		}
	}
	t.Fatalf("unit %s: no Timer renders it", name)
	return nil
}

func usecOf(t *testing.T, s string) uint64 {
	t.Helper()
	if s == "" {
		return 0
	}
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(v.UnixMicro())
}

const unitDir = "/etc/systemd/system"

// staleFileOf is an intact resil file of an older version of owner's
// manifest (from source), rendered with takeOver when takeOver is set.
func staleFileOf(t *testing.T, owner, source string, takeOver bool) []byte {
	t.Helper()
	kind, name, _ := strings.Cut(owner, "/")
	if source == "" {
		source = name + ".yaml"
	}
	o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.Kind(kind), Metadata: desired.ObjectMeta{Name: name},
		Source: desired.Source{File: source}}
	switch o.Kind {
	case desired.KindTimer:
		o.Timer = &desired.TimerSpec{Schedule: []string{"daily"}, Command: []string{"/bin/stale"}}
	default:
		o.Service = &desired.ServiceSpec{Command: []string{"/bin/stale"}, TakeOver: takeOver}
	}
	fs, err := desired.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	return fs[0].Data
}

func TestPlanGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*/desired.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 10 {
		t.Fatalf("only %d plan cases", len(cases))
	}
	for _, c := range cases {
		dir := filepath.Dir(c)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			mdir := t.TempDir()
			data, err := os.ReadFile(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(mdir, "m.yaml"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			set, lerr := desired.Load(mdir, desired.Options{Insecure: true})
			if lerr != nil {
				t.Fatalf("desired.yaml invalid: %v", lerr)
			}
			var of obsFile
			raw, err := os.ReadFile(filepath.Join(dir, "observed.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.UnmarshalStrict(raw, &of); err != nil {
				t.Fatalf("observed.yaml: %v", err)
			}
			in := Input{Files: map[string][]desired.UnitFile{}, UnitDir: unitDir, ManagerDir: "/etc/systemd/system.conf.d",
				Prune: !of.NoPrune, Protected: map[string]bool{}, BrokenFiles: map[string]bool{}}
			rendered, moved := map[string][]byte{}, map[string][]byte{}
			for _, o := range set.Sorted() {
				in.Objects = append(in.Objects, o)
				fs, err := desired.Render(o)
				if err != nil {
					t.Fatal(err)
				}
				in.Files[o.ID()] = fs
				for _, f := range fs {
					rendered[f.Name] = f.Data
				}
				old := *o
				old.Source.File = "old-" + o.Source.File
				fs, err = desired.Render(&old)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range fs {
					moved[f.Name] = f.Data
				}
			}
			for _, f := range of.BrokenFiles {
				in.BrokenFiles[f] = true
			}
			backend := of.Backend
			if backend == "" {
				backend = "systemd"
			}
			st := &observed.State{Backend: backend, UnitDir: unitDir, Units: map[string]*observed.Unit{}, Manager: of.Manager}
			if of.ReadAt != "" {
				st.ReadAt = time.UnixMicro(int64(usecOf(t, of.ReadAt))).UTC()
			}
			if st.Manager != nil && of.ManagerFile == "owned" {
				// An owned drop-in of a Watchdog object no longer desired.
				o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindWatchdog, Metadata: desired.ObjectMeta{Name: "host"},
					Source: desired.Source{File: "host.yaml"}, Watchdog: &desired.WatchdogSpec{RuntimeTimeout: "30s"}}
				fs, err := desired.Render(o)
				if err != nil {
					t.Fatal(err)
				}
				st.Manager.File = fs[0].Data
			}
			if st.Manager != nil && of.ManagerFile != "" {
				for _, fs := range in.Files {
					for _, f := range fs {
						if f.Dir == desired.DirManager && of.ManagerFile == "rendered" {
							st.Manager.File = f.Data
						}
					}
				}
			}
			for name, u := range of.Units {
				ou := &observed.Unit{Name: name, Path: filepath.Join(unitDir, name), LoadState: u.LoadState, ActiveState: u.ActiveState,
					SubState: u.SubState, Result: u.Result, UnitFileState: u.UnitFileState, NRestarts: u.NRestarts,
					ExecMainStatus: u.ExecMainStatus, NeedDaemonReload: u.NeedDaemonReload, StaleProcess: u.StaleProcess,
					ExecMainExitTimestamp: usecOf(t, u.ExecMainExitTimestamp), PendingJob: u.PendingJob,
					LastTriggerUSec: usecOf(t, u.LastTrigger),
					VendorPaths:     u.VendorPaths, VendorOverrides: u.VendorOverrides,
					InstallLinks: u.InstallLinks, InstallLinksKnown: u.InstallLinks != nil}
				if strings.HasSuffix(name, ".timer") && backend == "systemd" {
					ou.StampPath = "/var/lib/systemd/timers/stamp-" + name
					ou.StampUSec = usecOf(t, u.Stamp)
				}
				switch u.File {
				case "rendered":
					ou.File = rendered[name]
				case "moved":
					ou.File = moved[name]
				case "rescheduled":
					ou.File = rescheduled(t, set, name, u.OldSchedule)
				case "edited":
					ou.File = []byte(strings.Replace(string(rendered[name]), "Restart=", "Restart=no\n#", 1))
				case "foreign":
					ou.File = []byte("[Service]\nExecStart=/bin/true\n")
				case "stale", "stale-takeover", "stale-edited":
					owner := u.Owner
					if owner == "" {
						owner = ownerFor(name)
					}
					ou.File = staleFileOf(t, owner, u.Source, u.File == "stale-takeover")
					if u.File == "stale-edited" {
						ou.File = []byte(strings.Replace(string(ou.File), "Restart=", "Restart=no\n#", 1))
					}
				case "":
				default:
					t.Fatalf("unit %s: unknown file kind %q", name, u.File)
				}
				if ou.File != nil {
					ou.Owner, _ = ownmark.IsOwned(ou.File)
					if ou.LoadState == "" {
						ou.LoadState = "loaded"
					}
				}
				if len(u.DropIns) > 0 {
					ou.DropIns = map[string][]byte{}
					for p, d := range u.DropIns {
						ou.DropInPaths = append(ou.DropInPaths, p)
						ou.DropIns[p] = []byte(d)
					}
				}
				st.Units[name] = ou
			}
			in.Observed = st
			for _, u := range of.RestartPending {
				if in.RestartPending == nil {
					in.RestartPending = map[string]time.Time{}
				}
				in.RestartPending[u] = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) // the record's time
			}
			plan := Compute(in)
			var b strings.Builder
			for _, s := range plan.Steps {
				b.WriteString(s.String() + "\n")
			}
			b.WriteString("--- findings\n")
			for _, f := range plan.Findings {
				b.WriteString(string(f.Reason) + " " + f.Object + " " + f.Unit + ": " + f.Message + "\n")
			}
			if len(plan.StartsOwed) > 0 {
				b.WriteString("--- starts owed\n" + strings.Join(plan.StartsOwed, "\n") + "\n")
			}
			if len(plan.RestartIntents) > 0 {
				b.WriteString("--- restart journal before the first step\n" + strings.Join(plan.RestartIntents, "\n") + "\n")
			}
			got := b.String()
			golden := filepath.Join(dir, "plan.txt")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if got != string(want) {
				t.Errorf("plan differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
			// Determinism: same input, same plan, same hash.
			if again := Compute(in); again.Hash() != plan.Hash() {
				t.Errorf("plan hash not deterministic")
			}
		})
	}
}

func ownerFor(unit string) string {
	name := strings.TrimSuffix(strings.TrimSuffix(unit, ".service"), ".timer")
	if strings.HasSuffix(unit, ".timer") {
		return "Timer/" + name
	}
	return "Service/" + name
}
