package process

import (
	"errors"
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
)

func TestRender(t *testing.T) {
	o := service("worker", desired.ServiceSpec{Command: []string{"/bin/worker", "--x"},
		Watchdog: &desired.ServiceWatchdog{Timeout: "5s"}})
	files, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].Name != "worker.service" || files[0].Dir != desired.DirUnit {
		t.Fatalf("files: %+v", files)
	}
	data := files[0].Data
	if !strings.HasPrefix(string(data), "# X-Resil-Object=Service/worker\n") {
		t.Fatalf("header: %q", data[:40])
	}
	if id, ok := ownmark.IsOwned(data); !ok || id != "Service/worker" {
		t.Fatalf("IsOwned = %q, %v", id, ok)
	}
	if _, intact := ownmark.HashOf(data); !intact {
		t.Fatal("HashOf: not intact")
	}
	again, _ := Render(o)
	if string(again[0].Data) != string(data) {
		t.Fatal("render is not deterministic")
	}
	spec, err := ParseUnitFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Type != TypeNotify || spec.Watchdog.NotifyAccess != "main" || spec.Restart.Policy != desired.RestartOnFailure ||
		spec.Restart.Burst != 5 || spec.StopTimeout != "10s" {
		t.Fatalf("defaults: %+v %+v", spec, spec.Restart)
	}
	edited := []byte(strings.Replace(string(data), "/bin/worker", "/bin/evil", 1))
	if _, intact := ownmark.HashOf(edited); intact {
		t.Fatal("HashOf: edit not detected")
	}

	tf, err := Render(timer("backup", desired.TimerSpec{Schedule: []string{"daily"}, Command: []string{"backup"},
		Retry: &desired.Retry{Attempts: 3, Delay: "1s"}}))
	if err != nil {
		t.Fatal(err)
	}
	if len(tf) != 2 || tf[0].Name != "backup.timer" || tf[1].Name != "backup.service" {
		t.Fatalf("timer files: %v %v", tf[0].Name, tf[1].Name)
	}
	job, err := ParseUnitFile(tf[1].Data)
	if err != nil {
		t.Fatal(err)
	}
	if job.Type != TypeOneshot || job.Restart.Policy != desired.RestartNever || job.Restart.Burst != 0 ||
		job.Retry == nil || job.Retry.Attempts != 3 || job.Retry.Delay != "1s" {
		t.Fatalf("job: %+v %+v", job, job.Restart)
	}
	ts, _ := ParseUnitFile(tf[0].Data)
	if ts.Timer.Unit != "backup.service" {
		t.Fatalf("timer unit %q", ts.Timer.Unit)
	}
}

// The process backend honours an explicit allowlist and refuses the rest,
// naming each refused field or directive: never less isolation than asked.
func TestRenderRefusesWhatItCannotHonour(t *testing.T) {
	base := func(mod func(s *desired.ServiceSpec)) *desired.Object {
		s := desired.ServiceSpec{Command: []string{"/bin/true"}}
		mod(&s)
		return service("svc", s)
	}
	hatch := func(sec, k, v string) *desired.Object {
		return base(func(s *desired.ServiceSpec) { s.Systemd = map[string]map[string]string{sec: {k: v}} })
	}
	refused := []struct {
		name string
		o    *desired.Object
		want string
	}{
		{"NoNewPrivileges", hatch("Service", "NoNewPrivileges", "yes"), "spec.systemd.Service.NoNewPrivileges"},
		{"ExecStartPre", hatch("Service", "ExecStartPre", "/bin/true"), "spec.systemd.Service.ExecStartPre"},
		{"ProtectSystem", hatch("Service", "ProtectSystem", "strict"), "spec.systemd.Service.ProtectSystem"},
		{"DynamicUser", hatch("Service", "DynamicUser", "yes"), "spec.systemd.Service.DynamicUser"},
		{"LimitNOFILE", hatch("Service", "LimitNOFILE", "1024"), "spec.systemd.Service.LimitNOFILE"},
		{"Environment", hatch("Service", "Environment", "A=1"), "spec.systemd.Service.Environment"},
		{"Unit Requires", hatch("Unit", "Requires", "db.service"), "spec.systemd.Unit.Requires"},
		{"Install Alias", hatch("Install", "Alias", "x.service"), "spec.systemd.Install.Alias"},
		{"empty User", hatch("Service", "User", ""), "spec.systemd.Service.User (an empty value"},
		{"relative WorkingDirectory", hatch("Service", "WorkingDirectory", "-/srv"), "spec.systemd.Service.WorkingDirectory"},
		{"requires", base(func(s *desired.ServiceSpec) { s.Requires = []string{"db.service"} }), "spec.requires"},
		{"memoryMax", base(func(s *desired.ServiceSpec) { s.Resources = &desired.Resources{MemoryMax: "1G"} }), "spec.resources.memoryMax"},
		{"cpuQuota", base(func(s *desired.ServiceSpec) { s.Resources = &desired.Resources{CPUQuota: "50%"} }), "spec.resources.cpuQuota"},
		{"tasksMax", base(func(s *desired.ServiceSpec) { s.Resources = &desired.Resources{TasksMax: 10} }), "spec.resources.tasksMax"},
		{"stateDirectory", base(func(s *desired.ServiceSpec) { s.StateDirectory = "svc" }), "spec.stateDirectory"},
		{"timer section", timer("t", desired.TimerSpec{Schedule: []string{"daily"}, Command: []string{"/bin/true"},
			Systemd: map[string]map[string]string{"Timer": {"WakeSystem": "yes"}}}), "spec.systemd.Timer.WakeSystem"},
		{"timer job sandboxing", timer("t", desired.TimerSpec{Schedule: []string{"daily"}, Command: []string{"/bin/true"},
			Systemd: map[string]map[string]string{"Service": {"PrivateTmp": "yes"}}}), "spec.systemd.Service.PrivateTmp"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			files, err := Render(c.o)
			if !errors.Is(err, actuators.ErrUnsupported) || !strings.Contains(err.Error(), c.want) || files != nil {
				t.Fatalf("Render: %v, %d files; want ErrUnsupported naming %s", err, len(files), c.want)
			}
		})
	}
	// Every refusal is named, not just the first.
	_, err := Render(base(func(s *desired.ServiceSpec) {
		s.Systemd = map[string]map[string]string{"Service": {"User": "nobody", "ExecStartPre": "/bin/true", "NoNewPrivileges": "yes"}}
	}))
	if err == nil || !strings.Contains(err.Error(), "ExecStartPre") || !strings.Contains(err.Error(), "NoNewPrivileges") {
		t.Fatalf("all refusals: %v", err)
	}

	honoured := []struct {
		name  string
		o     *desired.Object
		check func(s *Spec) bool
	}{
		{"User and Group map to the setuid path", base(func(s *desired.ServiceSpec) {
			s.User = "root"
			s.Systemd = map[string]map[string]string{"Service": {"User": "nobody", "Group": "nogroup"}}
		}), func(s *Spec) bool { return s.User == "nobody" && s.Group == "nogroup" }},
		{"WorkingDirectory", hatch("Service", "WorkingDirectory", "/srv"), func(s *Spec) bool { return s.WorkingDirectory == "/srv" }},
		{"text and ordering", base(func(s *desired.ServiceSpec) {
			s.After, s.Wants = []string{"network-online.target"}, []string{"network-online.target"}
			s.Systemd = map[string]map[string]string{"Unit": {"Documentation": "man:x(1)", "After": "a.service"}, "Install": {"WantedBy": "default.target"}}
		}), func(s *Spec) bool { return s.User == "" }},
		{"timer job User", timer("t", desired.TimerSpec{Schedule: []string{"daily"}, Command: []string{"/bin/true"},
			Systemd: map[string]map[string]string{"Service": {"User": "nobody"}}}), func(s *Spec) bool { return s.Kind == "timer" || s.User == "nobody" }},
	}
	for _, c := range honoured {
		t.Run(c.name, func(t *testing.T) {
			files, err := Render(c.o)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range files {
				s, err := ParseUnitFile(f.Data)
				if err != nil || !c.check(s) {
					t.Fatalf("%s: %v %+v", f.Name, err, s)
				}
			}
		})
	}
}

// The source marker names the manifest and its drop-ins, as on systemd.
func TestRenderSourceMarker(t *testing.T) {
	o := service("web", desired.ServiceSpec{Command: []string{"/bin/true"}})
	o.Source = desired.Source{File: "web.yaml", DropIns: []string{"web.d/10-env.yaml"}}
	files, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	if got := ownmark.SourceOf(files[0].Data); strings.Join(got, ",") != "web.yaml,web.d/10-env.yaml" {
		t.Fatalf("SourceOf = %q", got)
	}
	if _, intact := ownmark.HashOf(files[0].Data); !intact {
		t.Fatal("hash does not cover the marker")
	}
	if _, err := ParseUnitFile(files[0].Data); err != nil {
		t.Fatal(err)
	}
	o.Source.File = "we\nird.yaml"
	files, _ = Render(o)
	if _, err := ParseUnitFile(files[0].Data); err != nil {
		t.Fatalf("a control character in the source broke the header: %v", err)
	}
}
