package e2e

import (
	"strings"
	"testing"
	"time"

	"resil.dev/resil/internal/ownmark"
)

// An owned unit file deleted out of band (rm, no daemon-reload) while
// systemd still has the unit loaded from it is FileDeleted drift, not a
// new unit: under enforce it is restored (and the service restarted: the
// deleted file cannot be compared with the manifest, so the version the
// process runs cannot be told); under drift: report the file stays absent
// and the process untouched, the drift reported on every pass, and by the
// agent as a Warning event.
func TestDeletedUnitFileDrift(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	e.write("quiet.yaml", svc("quiet", "  drift: report\n"))
	e.apply(0)
	const webPath, quietPath = "/etc/systemd/system/web.service", "/etc/systemd/system/quiet.service"
	orig, err := e.sb.ReadFile(webPath)
	if err != nil {
		t.Fatal(err)
	}
	webPID, quietPID := e.prop("web.service", "MainPID"), e.prop("quiet.service", "MainPID")
	for _, p := range []string{webPath, quietPath} {
		if err := e.sb.Remove(p); err != nil {
			t.Fatal(err)
		}
	}

	diff, errOut, code := e.reconciler("diff")
	if code != 1 { // 1: changes pending
		t.Fatalf("diff exit %d\n%s\n%s", code, diff, errOut)
	}
	out := e.apply(0)
	for _, want := range []string{
		"write " + webPath + " (deleted out of band, restoring)",
		"restart web.service (its unit file was deleted out of band: the version it runs cannot be told)",
		"FileDeleted",
		webPath + " was deleted out of band (web.service is still loaded from it); restoring",
		quietPath + " was deleted out of band (quiet.service is still loaded from it); drift policy report: left as is",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
		if !strings.Contains(diff, want) {
			t.Errorf("diff output lacks %q:\n%s", want, diff)
		}
	}
	if strings.Contains(out, "(new unit)") || strings.Contains(out, "quiet.service (") {
		t.Errorf("a deleted file read as a new unit, or quiet.service acted on:\n%s", out)
	}
	if got, err := e.sb.ReadFile(webPath); err != nil || string(got) != string(orig) {
		t.Errorf("web.service not restored: %v\n%s", err, got)
	}
	if p := e.show("web.service", "ActiveState", "MainPID", "NeedDaemonReload"); p["ActiveState"] != "active" || p["MainPID"] == webPID || p["NeedDaemonReload"] != "no" {
		t.Errorf("web.service after the restore: %v (pid was %s; a restart is kept)", p, webPID)
	}
	if _, err := e.sb.ReadFile(quietPath); err == nil {
		t.Errorf("drift: report rewrote %s", quietPath)
	}
	if p := e.show("quiet.service", "ActiveState", "MainPID"); p["ActiveState"] != "active" || p["MainPID"] != quietPID {
		t.Errorf("drift: report touched quiet.service: %v (pid was %s)", p, quietPID)
	}
	// The first pass's daemon-reload (for web) dropped what systemd knew
	// of quiet's file: a unit running with no file is still FileDeleted.
	out = e.apply(0)
	if !strings.Contains(out, "\n0 steps") || !strings.Contains(out, "quiet.service runs with no unit file: "+quietPath+" was deleted out of band (and the units reloaded since); drift policy report: left as is") {
		t.Errorf("second pass: want no step, quiet's drift reported again:\n%s", out)
	}

	// The agent: a Warning event for each, the file restored for web.
	a := e.startAgent()
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	if err := e.sb.Remove(webPath); err != nil {
		t.Fatal(err)
	}
	e.eventually("FileDeleted events", 20*time.Second, func() bool {
		return a.hasEvent("FileDeleted", webPath+" was deleted out of band (web.service is still loaded from it); restoring") &&
			a.hasEvent("FileDeleted", quietPath+" was deleted out of band (and the units reloaded since); drift policy report: left as is")
	})
	e.eventually("web.service restored", 20*time.Second, func() bool {
		got, err := e.sb.ReadFile(webPath)
		return err == nil && string(got) == string(orig)
	})
	for _, ev := range a.events() {
		if ev["reason"] == "FileDeleted" && ev["level"] != nil && ev["level"] != "warn" {
			t.Errorf("FileDeleted event not a warning: %v", ev)
		}
	}
	time.Sleep(3 * time.Second) // a resync or two
	if _, err := e.sb.ReadFile(quietPath); err == nil {
		t.Errorf("the agent rewrote %s under drift: report", quietPath)
	}
	if p := e.prop("quiet.service", "MainPID"); p != quietPID {
		t.Errorf("the agent restarted quiet.service under drift: report: pid %s, was %s", p, quietPID)
	}
}

// A hand edit of a unit file (the manifest unchanged: the file's
// X-Resil-Hash is the render's) that the running process never ran, as
// its process started before the edit, is restored with a write and a
// daemon-reload, without a restart: with no reload after the edit, and
// with one (systemd loaded the edit, the process still runs what it
// started with). The next pass has nothing to do (the restored file says
// since when its process settings hold). Restarted by hand after the
// edit, the process runs the edit: restored and restarted.
func TestHandEditNotRunRestoredWithoutRestart(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", "  environment: {GEN: \"1\"}\n"))
	e.apply(0)
	const path = "/etc/systemd/system/web.service"
	orig, err := e.sb.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edit := func() {
		t.Helper()
		cur, err := e.sb.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(cur), `Environment="GEN=1"`, `Environment="GEN=HACKED"`, 1)
		if edited == string(cur) {
			t.Fatalf("no Environment line to edit:\n%s", cur)
		}
		if err := e.sb.WriteFile(path, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		reload  bool
		restart bool
	}{
		{name: "edited, no reload"},
		{name: "edited, daemon-reload", reload: true},
		{name: "edited, daemon-reload, restarted by hand", reload: true, restart: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			time.Sleep(200 * time.Millisecond) // the edit well after the process's start
			edit()
			if tc.reload {
				e.systemctl("daemon-reload")
				if env := e.prop("web.service", "Environment"); env != "GEN=HACKED" {
					t.Fatalf("systemd did not load the edit: Environment=%s", env)
				}
			}
			if tc.restart {
				time.Sleep(200 * time.Millisecond)
				e.systemctl("restart", "web.service")
			}
			pid := e.prop("web.service", "MainPID")
			out := e.apply(0)
			if !strings.Contains(out, "FileEdited") || !strings.Contains(out, path+" was edited out of band") {
				t.Errorf("no FileEdited finding:\n%s", out)
			}
			p := e.show("web.service", "ActiveState", "MainPID", "Environment", "NeedDaemonReload")
			if p["ActiveState"] != "active" || p["Environment"] != "GEN=1" || p["NeedDaemonReload"] != "no" {
				t.Errorf("after the restore: %v", p)
			}
			if got, _ := e.sb.ReadFile(path); string(ownmark.WithoutProcessSince(got)) != string(orig) {
				t.Errorf("unit file not restored:\n%s", got)
			}
			if tc.restart {
				if !strings.Contains(out, "write "+path+" (edited out of band, restoring)") || countLines(out, "restart web.service (unit file changed: Environment)") != 1 {
					t.Errorf("a process that ran the edit must be restarted:\n%s", out)
				}
				if p["MainPID"] == pid {
					t.Errorf("MainPID %s unchanged: the process still runs the edit", pid)
				}
			} else {
				if !strings.Contains(out, "write "+path+" (edited out of band after the process started; restoring, no restart)") ||
					countLines(out, "restart web.service") != 0 || countLines(out, "daemon-reload") != 1 {
					t.Errorf("want a write and a daemon-reload, no restart:\n%s", out)
				}
				if p["MainPID"] != pid {
					t.Errorf("MainPID %s → %s: restarted for an edit it never ran", pid, p["MainPID"])
				}
			}
			again := e.prop("web.service", "MainPID")
			if out := e.apply(0); !strings.HasPrefix(out, "0 steps") {
				t.Errorf("the pass after the restore should have no step:\n%s", out)
			}
			if now := e.prop("web.service", "MainPID"); now != again {
				t.Errorf("the pass after the restore restarted web.service: %s → %s", again, now)
			}
		})
	}
}
