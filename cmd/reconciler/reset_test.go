package main

import (
	"errors"
	"strings"
	"testing"

	"resil.dev/resil/desired"
)

// reset starts again only what a manifest declares running; a stopped
// service, a disabled timer and a timer's job only have their failed
// state cleared, and a unit no manifest declares is refused (it started
// any unit of that name, one resil does not own or one declared stopped).
func TestResetTarget(t *testing.T) {
	off := false
	obj := func(kind desired.Kind, name string) *desired.Object {
		o := &desired.Object{APIVersion: desired.APIVersion, Kind: kind, Metadata: desired.ObjectMeta{Name: name}}
		o.Source.File = name + ".yaml"
		return o
	}
	web := obj(desired.KindService, "web")
	web.Service = &desired.ServiceSpec{Command: []string{"/bin/true"}}
	idle := obj(desired.KindService, "idle")
	idle.Service = &desired.ServiceSpec{Command: []string{"/bin/true"}, State: desired.StateStopped}
	backup := obj(desired.KindTimer, "backup")
	backup.Timer = &desired.TimerSpec{OnBoot: "1m", Command: []string{"/bin/true"}}
	quiet := obj(desired.KindTimer, "quiet")
	quiet.Timer = &desired.TimerSpec{OnBoot: "1m", Service: "web", Enabled: &off}
	elsewhere := obj(desired.KindService, "elsewhere")
	elsewhere.Service = &desired.ServiceSpec{Command: []string{"/bin/true"}}
	set := &desired.Set{
		Objects:     map[string]*desired.Object{web.ID(): web, idle.ID(): idle, backup.ID(): backup, quiet.ID(): quiet},
		NotSelected: map[string]*desired.Object{elsewhere.ID(): elsewhere},
	}
	broken := &desired.Set{Objects: set.Objects, Broken: map[string]error{"bad.yaml": errors.New("bad")}}
	for _, tc := range []struct {
		name      string
		set       *desired.Set
		unit      string
		wantStart bool
		wantWhy   string // "" when started
		wantErr   string
	}{
		{"running service", set, "web.service", true, "", ""},
		{"stopped service", set, "idle.service", false, "state: stopped", ""},
		{"timer", set, "backup.timer", true, "", ""},
		{"timer's job", set, "backup.service", false, "the job of backup.timer", ""},
		{"disabled timer", set, "quiet.timer", false, "enabled: false", ""},
		{"not declared", set, "sshd.service", false, "", "no manifest in /etc/resil.d declares it"},
		{"declared for other hosts", set, "elsewhere.service", false, "", "does not select this one"},
		{"an invalid file may declare it", broken, "sshd.service", false, "an invalid one may", ""},
		{"manifests unreadable", nil, "web.service", false, "cannot be read", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start, why, err := resetTarget(tc.set, errors.New("permission denied"), "/etc/resil.d", tc.unit)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if start != tc.wantStart || !strings.Contains(why, tc.wantWhy) || (tc.wantWhy == "") != (why == "") {
				t.Errorf("start %v why %q, want %v %q", start, why, tc.wantStart, tc.wantWhy)
			}
		})
	}
}

// reset takes what status and pause print: an object ID (the kind in any
// case), as well as a unit or a name (QA: `reset Service/crash` tried
// "Service/crash.service"). An object is reset with every unit it owns: a
// failed timer is its failed job (QA: `reset Timer/job` reset only
// job.timer, and the object stayed Failed), and an ID no manifest declares
// is refused (QA: `reset Service/jt` reset Timer/jt's job).
func TestResetUnits(t *testing.T) {
	obj := func(kind desired.Kind, name string) *desired.Object {
		o := &desired.Object{APIVersion: desired.APIVersion, Kind: kind, Metadata: desired.ObjectMeta{Name: name}}
		switch kind {
		case desired.KindService:
			o.Service = &desired.ServiceSpec{Command: []string{"/bin/true"}}
		case desired.KindTimer:
			o.Timer = &desired.TimerSpec{OnBoot: "1m", Command: []string{"/bin/true"}}
		}
		return o
	}
	web, job, jt, other, elsewhere := obj(desired.KindService, "web"), obj(desired.KindTimer, "job"), obj(desired.KindTimer, "jt"),
		obj(desired.KindTimer, "other"), obj(desired.KindTimer, "elsewhere")
	other.Timer = &desired.TimerSpec{OnBoot: "1m", Service: "web"}
	set := &desired.Set{
		Objects:     map[string]*desired.Object{web.ID(): web, job.ID(): job, jt.ID(): jt, other.ID(): other},
		NotSelected: map[string]*desired.Object{elsewhere.ID(): elsewhere},
	}
	broken := &desired.Set{Objects: set.Objects, Broken: map[string]error{"bad.yaml": errors.New("bad")}}
	for _, tc := range []struct {
		arg     string
		set     *desired.Set
		want    string // units, space-separated
		wantErr string
	}{
		{"Service/web", set, "web.service", ""},
		{"service/web", set, "web.service", ""},
		{"SERVICE/web", set, "web.service", ""},
		{"Timer/job", set, "job.service job.timer", ""},
		{"timer/job", set, "job.service job.timer", ""},
		{"Timer/other", set, "other.timer", ""}, // its service is Service/web's
		{"Timer/elsewhere", set, "elsewhere.service elsewhere.timer", ""},
		{"job", set, "job.service job.timer", ""},
		{"web", set, "web.service", ""},
		{"web.service", set, "web.service", ""},
		{"job.timer", set, "job.timer", ""},
		{"sshd", set, "sshd.service", ""}, // resetTarget refuses it
		{"Service/jt", set, "", "no such object: no manifest in /etc/resil.d declares Service/jt"},
		{"Service/sshd", set, "", "no such object"},
		{"Service/sshd", broken, "sshd.service", ""}, // an invalid file may declare it
		{"Timer/job", nil, "job.timer", ""},          // manifests unreadable
		{"Widget/x", set, "", "is not a unit"},
		{"Service/", set, "", "is not a unit"},
		{"Watchdog/wd", set, "", "no unit"},
	} {
		t.Run(tc.arg, func(t *testing.T) {
			got, err := resetUnits(tc.set, "/etc/resil.d", tc.arg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("resetUnits(%q) = %v, %v; want error %q", tc.arg, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || strings.Join(got, " ") != tc.want {
				t.Errorf("resetUnits(%q) = %v, %v; want %s", tc.arg, got, err, tc.want)
			}
		})
	}
}
