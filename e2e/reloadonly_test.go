package e2e

// The restart classification (reconcile.ClassifyUnitChange) against a real
// systemd: every key it calls reload-only takes effect on daemon-reload
// alone, with the main process left running.

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"resil.dev/resil/reconcile"
)

// reloadOnlySample is, per reload-only key, a changed line for the test
// unit and the property (and the value it must show) proving that systemd
// applied it. An empty property: systemd has no property that shows it;
// the main PID check still holds.
var reloadOnlySample = map[string]struct{ line, prop, want string }{
	"Unit/Description":                 {"Description=changed description", "Description", "changed description"},
	"Unit/Documentation":               {"Documentation=man:true(1)", "Documentation", "man:true(1)"},
	"Unit/After":                       {"After=rl-other.service", "After", "rl-other.service"},
	"Unit/Before":                      {"Before=rl-other.service", "Before", "rl-other.service"},
	"Unit/Wants":                       {"Wants=rl-other.service", "Wants", "rl-other.service"},
	"Unit/Requires":                    {"Requires=rl-other.service", "Requires", "rl-other.service"},
	"Unit/Requisite":                   {"Requisite=rl-other.service", "Requisite", "rl-other.service"},
	"Unit/BindsTo":                     {"BindsTo=rl-other.service", "BindsTo", "rl-other.service"},
	"Unit/PartOf":                      {"PartOf=rl-other.service", "PartOf", "rl-other.service"},
	"Unit/Upholds":                     {"Upholds=rl-other.service", "Upholds", "rl-other.service"},
	"Unit/Conflicts":                   {"Conflicts=rl-none.service", "Conflicts", "rl-none.service"},
	"Unit/OnFailure":                   {"OnFailure=rl-other.service", "OnFailure", "rl-other.service"},
	"Unit/OnSuccess":                   {"OnSuccess=rl-other.service", "OnSuccess", "rl-other.service"},
	"Unit/OnFailureJobMode":            {"OnFailureJobMode=fail", "OnFailureJobMode", "fail"},
	"Unit/StartLimitIntervalSec":       {"StartLimitIntervalSec=77s", "StartLimitIntervalUSec", "1min 17s"},
	"Unit/StartLimitBurst":             {"StartLimitBurst=77", "StartLimitBurst", "77"},
	"Unit/StartLimitAction":            {"StartLimitAction=none", "StartLimitAction", "none"},
	"Unit/JobTimeoutSec":               {"JobTimeoutSec=77s", "JobTimeoutUSec", "1min 17s"},
	"Unit/JobRunningTimeoutSec":        {"JobRunningTimeoutSec=77s", "JobRunningTimeoutUSec", "1min 17s"},
	"Unit/JobTimeoutAction":            {"JobTimeoutAction=none", "JobTimeoutAction", "none"},
	"Unit/StopWhenUnneeded":            {"StopWhenUnneeded=no", "StopWhenUnneeded", "no"},
	"Unit/RefuseManualStart":           {"RefuseManualStart=yes", "RefuseManualStart", "yes"},
	"Unit/RefuseManualStop":            {"RefuseManualStop=yes", "RefuseManualStop", "yes"},
	"Unit/AllowIsolate":                {"AllowIsolate=yes", "AllowIsolate", "yes"},
	"Service/Restart":                  {"Restart=on-failure", "Restart", "on-failure"},
	"Service/RestartSec":               {"RestartSec=77s", "RestartUSec", "1min 17s"},
	"Service/RestartPreventExitStatus": {"RestartPreventExitStatus=77", "RestartPreventExitStatus", "77"},
	"Service/RestartForceExitStatus":   {"RestartForceExitStatus=77", "RestartForceExitStatus", "77"},
	"Service/SuccessExitStatus":        {"SuccessExitStatus=77", "SuccessExitStatus", "77"},
	"Service/TimeoutStopSec":           {"TimeoutStopSec=77s", "TimeoutStopUSec", "1min 17s"},
	"Service/TimeoutAbortSec":          {"TimeoutAbortSec=77s", "TimeoutAbortUSec", "1min 17s"},
	"Install/*":                        {"WantedBy=default.target", "", ""},
}

func TestReloadOnlyKeysAgainstSystemd(t *testing.T) {
	e := newEnv(t)
	const path = "/etc/systemd/system/rl.service"
	unit := func(extra map[string]string) string {
		var b strings.Builder
		for _, section := range []string{"Unit", "Service", "Install"} {
			fmt.Fprintf(&b, "[%s]\n", section)
			if section == "Service" {
				b.WriteString("ExecStart=/bin/sleep infinity\n")
			}
			if section == "Install" {
				b.WriteString("WantedBy=multi-user.target\n")
			}
			if l := extra[section]; l != "" {
				b.WriteString(l + "\n")
			}
		}
		return b.String()
	}
	write := func(content string) {
		t.Helper()
		if err := e.sb.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		e.systemctl("daemon-reload")
	}
	if err := e.sb.WriteFile("/etc/systemd/system/rl-other.service", []byte("[Service]\nExecStart=/bin/sleep infinity\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	write(unit(nil))
	// rl-other runs: BindsTo= on an inactive unit makes systemd stop
	// rl.service at once (a dependency taking effect, not a new process).
	e.systemctl("start", "rl-other.service", "rl.service")
	pid := e.prop("rl.service", "MainPID")
	if pid == "" || pid == "0" {
		t.Fatalf("rl.service did not start: MainPID %q", pid)
	}
	tested := map[string]bool{}
	all := reconcile.ReloadOnlyKeys()
	sections := make([]string, 0, len(all))
	for section := range all {
		sections = append(sections, section)
	}
	sort.Strings(sections)
	for _, section := range sections {
		for _, key := range all[section] {
			id := section + "/" + key
			s, ok := reloadOnlySample[id]
			if !ok {
				t.Errorf("%s is reload-only in reconcile but has no sample here: add one", id)
				continue
			}
			tested[id] = true
			if !strings.HasPrefix(s.line, key+"=") && key != "*" {
				t.Fatalf("sample of %s sets %q", id, s.line)
			}
			// The classifier agrees with itself on the sample...
			before, after := unit(nil), unit(map[string]string{section: s.line})
			if c := reconcile.ClassifyUnitChange([]byte(before), []byte(after)); c.Restart {
				t.Errorf("%s: classified as a restart: %+v", id, c)
			}
			// ...and systemd applies it on daemon-reload with the process
			// left alone.
			write(after)
			if s.prop != "" {
				if got := e.prop("rl.service", s.prop); !strings.Contains(got, s.want) {
					t.Errorf("%s: after daemon-reload %s=%q, want it to contain %q", id, s.prop, got, s.want)
				}
			}
			if got := e.prop("rl.service", "MainPID"); got != pid {
				t.Errorf("%s: MainPID %s → %s", id, pid, got)
				write(before)
				e.systemctl("start", "rl.service")
				pid = e.prop("rl.service", "MainPID")
				continue
			}
			if got := e.prop("rl.service", "NeedDaemonReload"); got != "no" {
				t.Errorf("%s: NeedDaemonReload=%s after daemon-reload", id, got)
			}
			write(before)
		}
	}
	for id := range reloadOnlySample {
		if !tested[id] {
			t.Errorf("sample %s names no reload-only key of reconcile", id)
		}
	}
	// A key that needs a restart is seen by systemd only in the next
	// process: the running one keeps its environment.
	write(unit(map[string]string{"Service": "Environment=RL=changed"}))
	if got := e.prop("rl.service", "MainPID"); got != pid {
		t.Fatalf("MainPID changed by a daemon-reload: %s → %s", pid, got)
	}
	environ, err := e.sb.ReadFile("/proc/" + pid + "/environ")
	if err == nil && strings.Contains(string(environ), "RL=changed") {
		t.Fatalf("running process has the new environment without a restart")
	}
}

// The agent against a real systemd: a manifest change its process does
// not depend on is written and reloaded with the main PID kept (diff says
// "reload only"), also when the agent dies right after the write; a change
// it depends on restarts it once.
func TestReloadOnlyManifestChangeKeepsMainPID(t *testing.T) {
	e := newEnv(t)
	manifest := func(delay, description, mode string) string {
		return `apiVersion: resil.dev/v1
kind: Service
metadata: {name: web}
spec:
  description: ` + description + `
  command: ["/bin/sleep", "infinity"]
  environment: {MODE: ` + mode + `}
  restart: {policy: always, delay: ` + delay + `}
`
	}
	e.write("web.yaml", manifest("1s", "web", "one"))
	e.apply(0)
	pid := e.prop("web.service", "MainPID")
	if pid == "" || pid == "0" {
		t.Fatalf("web.service not running: MainPID %q", pid)
	}
	keeps := func(what string) {
		t.Helper()
		if got := e.prop("web.service", "MainPID"); got != pid {
			t.Fatalf("%s: MainPID %s → %s", what, pid, got)
		}
		if rep, code := e.diffJSON(); code != 0 {
			t.Fatalf("%s: diff exit %d: %v %+v", what, code, rep.texts(), rep.Findings)
		}
	}

	e.write("web.yaml", manifest("3s", "web", "one"))
	out, _, code := e.reconciler("diff")
	if code != 1 || !strings.Contains(out, "reload only: RestartSec changed") || strings.Contains(out, "restart web.service") {
		t.Fatalf("diff of a RestartSec change: exit %d\n%s", code, out)
	}
	e.apply(0)
	if got := e.prop("web.service", "RestartUSec"); got != "3s" {
		t.Fatalf("RestartUSec %q after apply, want 3s", got)
	}
	keeps("RestartSec change")

	e.write("web.yaml", manifest("3s", "the web server", "one"))
	e.apply(0)
	if got := e.prop("web.service", "Description"); got != "the web server" {
		t.Fatalf("Description %q", got)
	}
	keeps("Description change")

	// Killed right after the write (step 1): the next pass reloads and
	// leaves the process alone.
	e.write("web.yaml", manifest("4s", "the web server", "one"))
	cmd := e.sb.Command(e.ctx, agentBin, "apply", "--backend", "systemd", "--state-dir", "/var/lib/resil", "--manifests", manifestsDir)
	cmd.Env = append(cmd.Env, "RESIL_TEST_CRASH_AFTER_STEP=1")
	if _, _, code := runCLI(t, cmd); code == 0 {
		t.Fatal("apply with RESIL_TEST_CRASH_AFTER_STEP=1 was not killed")
	}
	out, _, code = e.reconciler("diff")
	if code != 1 || !strings.Contains(out, "daemon-reload") || strings.Contains(out, "restart web.service") {
		t.Fatalf("diff after a crash between write and reload: exit %d\n%s", code, out)
	}
	e.apply(0)
	if got := e.prop("web.service", "RestartUSec"); got != "4s" {
		t.Fatalf("RestartUSec %q after the crash and apply, want 4s", got)
	}
	keeps("RestartSec change across a crash")

	// The environment: one restart, then converged.
	e.write("web.yaml", manifest("4s", "the web server", "two"))
	out = e.apply(0)
	if strings.Count(out, "restart web.service") != 1 || !strings.Contains(out, "unit file changed: Environment") {
		t.Fatalf("apply of an environment change:\n%s", out)
	}
	if got := e.prop("web.service", "MainPID"); got == pid || got == "0" {
		t.Fatalf("environment change did not restart: MainPID %s", got)
	}
	if _, code := e.diffJSON(); code != 0 {
		t.Fatalf("diff after the restart: exit %d", code)
	}
}
