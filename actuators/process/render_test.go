package process

import (
	"strings"
	"testing"

	"resil.dev/resil/desired"
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
	if id, ok := desired.IsOwned(data); !ok || id != "Service/worker" {
		t.Fatalf("IsOwned = %q, %v", id, ok)
	}
	if _, intact := desired.HashOf(data); !intact {
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
	if _, intact := desired.HashOf(edited); intact {
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
