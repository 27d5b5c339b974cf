package ownmarktest

import (
	"strings"
	"testing"

	"resil.dev/resil/desired"
)

// Unit returns the file desired.Render writes for the object id
// ("Service/NAME", or "Timer/NAME" for its .timer file). A service runs
// argv (default /bin/true) as Type=exec with Restart=no, so a test sees
// systemd's own outcome of one run; a timer fires minutely.
func Unit(t testing.TB, id string, argv ...string) []byte {
	t.Helper()
	return render(t, id, nil, argv)
}

// Oneshot is Unit for a Type=oneshot service (a start job that waits for
// argv to exit).
func Oneshot(t testing.TB, id string, argv ...string) []byte {
	t.Helper()
	return render(t, id, map[string]map[string]string{"Service": {"Type": "oneshot"}}, argv)
}

func render(t testing.TB, id string, escape map[string]map[string]string, argv []string) []byte {
	t.Helper()
	kind, name, ok := strings.Cut(id, "/")
	if !ok {
		t.Fatalf("ownmarktest: object id %q is not KIND/NAME", id)
	}
	if len(argv) == 0 {
		argv = []string{"/bin/true"}
	}
	o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.Kind(kind),
		Metadata: desired.ObjectMeta{Name: name}, Source: desired.Source{File: name + ".yaml"}}
	switch o.Kind {
	case desired.KindService:
		o.Service = &desired.ServiceSpec{Command: argv, Restart: &desired.RestartSpec{Policy: desired.RestartNever}, Systemd: escape}
	case desired.KindTimer:
		o.Timer = &desired.TimerSpec{Schedule: []string{"minutely"}, Command: argv}
	default:
		t.Fatalf("ownmarktest: kind %q: want Service or Timer", kind)
	}
	files, err := desired.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	return files[0].Data
}
