package e2e

// Issue 9 on the systemd backend: a restart lost to a crash (item 2),
// enablement read from disk (item 12), vendor units (item 11) and a diff
// that writes nothing (item 8), each against the sandboxed systemd.

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/desired"
)

// rendered returns the unit files the manifests in the host directory
// render to, by unit name: the bytes the agent would write.
func (e *env) rendered() map[string][]byte {
	e.t.Helper()
	set, err := desired.Load(filepath.Join(e.host, "m"), desired.Options{Insecure: true})
	if err != nil {
		e.t.Fatalf("load manifests: %v", err)
	}
	out := map[string][]byte{}
	for _, o := range set.Sorted() {
		files, err := desired.Render(o)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, f := range files {
			out[f.Name] = f.Data
		}
	}
	return out
}

// diff runs `reconciler diff -o json` and returns the report and exit code.
func (e *env) diffJSON(extra ...string) (diffReport, int) {
	e.t.Helper()
	out, errOut, code := e.reconciler(append([]string{"diff", "-o", "json"}, extra...)...)
	var rep diffReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		e.t.Fatalf("diff -o json (exit %d): %v\nstdout:\n%s\nstderr:\n%s", code, err, out, errOut)
	}
	return rep, code
}

type diffReport struct {
	Hash  string `json:"hash"`
	Steps []struct {
		Text string `json:"text"`
	} `json:"steps"`
	Findings []struct {
		Object  string `json:"object"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"findings"`
}

func (r diffReport) texts() []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Text)
	}
	return out
}

func (r diffReport) hasFinding(reason, substr string) bool {
	for _, f := range r.Findings {
		if f.Reason == reason && strings.Contains(f.Message, substr) {
			return true
		}
	}
	return false
}

// mainEnviron reads the environment of a unit's running main process.
func (e *env) mainEnviron(unit string) string {
	e.t.Helper()
	pid := e.prop(unit, "MainPID")
	if pid == "" || pid == "0" {
		e.t.Fatalf("%s has no main process", unit)
	}
	data, err := e.sb.ReadFile("/proc/" + pid + "/environ")
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.ReplaceAll(string(data), "\x00", " ")
}

// Item 2: the agent is killed after writing the new unit file but before the
// restart. The file then matches the manifest; the old process must still be
// seen as drift, whether the daemon-reload happened or not.
func TestLostRestartAfterCrash(t *testing.T) {
	for _, reload := range []bool{false, true} {
		name := "without-reload"
		if reload {
			name = "after-reload"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.write("web.yaml", svc("web", "  environment: {MODE: one}\n"))
			e.apply(0)
			if env := e.mainEnviron("web.service"); !strings.Contains(env, "MODE=one") {
				t.Fatalf("first version runs with %q", env)
			}
			oldPID := e.prop("web.service", "MainPID")

			// The crash: the new file written as the agent writes it, no restart.
			e.write("web.yaml", svc("web", "  environment: {MODE: two}\n"))
			if err := e.sb.WriteFile("/etc/systemd/system/web.service", e.rendered()["web.service"], 0o644); err != nil {
				t.Fatal(err)
			}
			if reload {
				e.systemctl("daemon-reload")
			}

			rep, code := e.diffJSON()
			want := []string{"restart web.service (running process started from an older unit file)"}
			if !reload {
				want = append([]string{"daemon-reload (web.service changed on disk since last reload)"}, want...)
			}
			if code != 1 || strings.Join(rep.texts(), "\n") != strings.Join(want, "\n") || !rep.hasFinding("StaleProcess", "older unit file") {
				t.Fatalf("diff exit %d, steps %q, findings %+v; want exit 1 and %q", code, rep.texts(), rep.Findings, want)
			}
			out := e.apply(0)
			if !strings.Contains(out, "restart web.service") {
				t.Fatalf("apply did not restart:\n%s", out)
			}
			if pid := e.prop("web.service", "MainPID"); pid == oldPID {
				t.Fatalf("MainPID still %s", pid)
			}
			if env := e.mainEnviron("web.service"); !strings.Contains(env, "MODE=two") {
				t.Fatalf("restarted process runs with %q, want MODE=two", env)
			}
			if rep, code := e.diffJSON(); code != 0 || len(rep.Steps) != 0 {
				t.Fatalf("second diff: exit %d, steps %q", code, rep.texts())
			}
		})
	}
}

// The window the stale-process rule cannot see: the agent is killed after
// writing the new unit file, systemd restarts the crashed service itself
// (Restart=) from the old definition, then a daemon-reload (the killed
// agent's, in flight) loads the new file. The process is newer than the
// file and no reload is pending; only the restart journal tells the next
// agent the restart is owed.
func TestLostRestartSystemdRestartedBeforeReload(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", "  environment: {MODE: one}\n"))
	e.apply(0)
	oldPID := e.prop("web.service", "MainPID")

	e.write("web.yaml", svc("web", "  environment: {MODE: two}\n"))
	cmd := e.sb.Command(e.ctx, agentBin, "apply", "--backend", "systemd", "--state-dir", "/var/lib/resil", "--manifests", manifestsDir)
	cmd.Env = append(cmd.Env, "RESIL_TEST_CRASH_AFTER_STEP=1")
	if _, _, code := runCLI(t, cmd); code == 0 {
		t.Fatal("apply with RESIL_TEST_CRASH_AFTER_STEP=1 was not killed")
	}
	if got := e.prop("web.service", "NeedDaemonReload"); got != "yes" {
		t.Fatalf("NeedDaemonReload %q after the killed write, want yes", got)
	}
	e.systemctl("kill", "--kill-whom=main", "--signal=KILL", "web.service")
	var restarted string
	e.eventually("systemd restarts web.service itself", 10*time.Second, func() bool {
		st := e.show("web.service", "MainPID", "ActiveState")
		restarted = st["MainPID"]
		return st["ActiveState"] == "active" && restarted != "0" && restarted != oldPID
	})
	if env := e.mainEnviron("web.service"); !strings.Contains(env, "MODE=one") {
		t.Fatalf("systemd's own restart runs %q, want the old MODE=one", env)
	}
	e.systemctl("daemon-reload")

	rep, code := e.diffJSON()
	want := []string{"restart web.service (restart owed by an interrupted pass)"}
	if code != 1 || strings.Join(rep.texts(), "\n") != strings.Join(want, "\n") || !rep.hasFinding("StaleProcess", "interrupted pass") {
		t.Fatalf("diff exit %d, steps %q, findings %+v; want exit 1 and %q", code, rep.texts(), rep.Findings, want)
	}
	e.apply(0)
	if pid := e.prop("web.service", "MainPID"); pid == restarted {
		t.Fatalf("MainPID still %s", pid)
	}
	if env := e.mainEnviron("web.service"); !strings.Contains(env, "MODE=two") {
		t.Fatalf("restarted process runs with %q, want MODE=two", env)
	}
	if rep, code := e.diffJSON(); code != 0 || len(rep.Steps) != 0 {
		t.Fatalf("diff after the restart: exit %d, steps %q", code, rep.texts())
	}

	// Killed right after its own restart (step 3: write, reload, restart),
	// before it dropped the record: the process started after the reload,
	// so nothing is owed and the next agent leaves it alone.
	e.write("web.yaml", svc("web", "  environment: {MODE: three}\n"))
	cmd = e.sb.Command(e.ctx, agentBin, "apply", "--backend", "systemd", "--state-dir", "/var/lib/resil", "--manifests", manifestsDir)
	cmd.Env = append(cmd.Env, "RESIL_TEST_CRASH_AFTER_STEP=3")
	if _, _, code := runCLI(t, cmd); code == 0 {
		t.Fatal("apply with RESIL_TEST_CRASH_AFTER_STEP=3 was not killed")
	}
	if j, err := e.sb.ReadFile("/var/lib/resil/restart-pending.json"); err != nil || !strings.Contains(string(j), "web.service") {
		t.Fatalf("restart journal after a kill right after the restart: %q, %v; want web.service recorded", j, err)
	}
	third := e.prop("web.service", "MainPID")
	if env := e.mainEnviron("web.service"); !strings.Contains(env, "MODE=three") {
		t.Fatalf("the killed agent's restart runs %q, want MODE=three", env)
	}
	if rep, code := e.diffJSON(); code != 0 || len(rep.Steps) != 0 {
		t.Fatalf("diff after a kill right after the restart: exit %d, steps %q (a needless restart)", code, rep.texts())
	}
	e.apply(0)
	if pid := e.prop("web.service", "MainPID"); pid != third {
		t.Fatalf("MainPID %s after apply, want %s kept", pid, third)
	}
	if j, err := e.sb.ReadFile("/var/lib/resil/restart-pending.json"); err != nil || strings.Contains(string(j), "web.service") {
		t.Fatalf("restart journal after the next apply: %q, %v; want the record dropped", j, err)
	}
}

// Item 12: enablement is read from the unit files on disk, both directions,
// with and without a daemon-reload.
func TestEnablementFromDisk(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	e.write("off.yaml", svc("off", "  enabled: false\n"))
	e.apply(0)
	const link = "/etc/systemd/system/multi-user.target.wants/web.service"
	const offLink = "/etc/systemd/system/multi-user.target.wants/off.service"

	check := func(what string, wantSteps []string) {
		t.Helper()
		rep, code := e.diffJSON()
		if code != 1 || strings.Join(rep.texts(), "\n") != strings.Join(wantSteps, "\n") {
			t.Fatalf("%s: diff exit %d, steps %q; want %q", what, code, rep.texts(), wantSteps)
		}
		out := e.apply(0)
		if strings.Contains(out, "unchanged enable") || strings.Contains(out, "unchanged disable") {
			t.Fatalf("%s: apply ran a step that changed nothing:\n%s", what, out)
		}
		if rep, code := e.diffJSON(); code != 0 {
			t.Fatalf("%s: diff after apply: exit %d, steps %q (the host never looks converged)", what, code, rep.texts())
		}
		if rep, _ := e.diffJSON(); rep.hasFinding("DisabledOutOfBand", "") {
			t.Fatalf("%s: DisabledOutOfBand still reported after apply: %+v", what, rep.Findings)
		}
	}

	// systemctl disable (it reloads).
	e.systemctl("disable", "web.service")
	check("systemctl disable", []string{"enable web.service (disabled, want enabled)", "daemon-reload (enablement changed)"})
	if s := strings.TrimSpace(e.systemctl("is-enabled", "web.service")); s != "enabled" {
		t.Fatalf("is-enabled = %s", s)
	}

	// The symlink removed by hand, no reload.
	if err := e.sb.Remove(link); err != nil {
		t.Fatal(err)
	}
	check("symlink removed without reload", []string{"enable web.service (disabled, want enabled)", "daemon-reload (enablement changed)"})

	// A manual enable of a unit that must stay disabled, no reload.
	if err := os.Symlink("/etc/systemd/system/off.service", filepath.Join(e.sb.Root(), offLink)); err != nil {
		t.Fatal(err)
	}
	check("symlink added without reload", []string{"disable off.service (enabled, want disabled)", "daemon-reload (enablement changed)"})

	// systemctl enable of it (reloads).
	e.systemctl("enable", "off.service")
	check("systemctl enable", []string{"disable off.service (enabled, want disabled)", "daemon-reload (enablement changed)"})
}

const vendorUnit = `[Unit]
Description=vendor unit (test)
[Service]
Type=exec
ExecStart=/bin/sleep infinity
Environment=FROM=vendor
[Install]
WantedBy=multi-user.target
`

// Item 11: a manifest named like a vendor unit is a ForeignUnitConflict and
// resil writes nothing, unless spec.takeOver; pruning a taken-over unit
// removes only resil's file.
func TestVendorUnitTakeOver(t *testing.T) {
	e := newEnv(t)
	// The overlay's upper layer is a tmpfs: this never reaches the host.
	if err := e.sb.WriteFile("/lib/systemd/system/vend.service", []byte(vendorUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	e.systemctl("daemon-reload")
	e.systemctl("enable", "--now", "vend.service")
	vendorPID := e.prop("vend.service", "MainPID")

	e.write("vend.yaml", svc("vend", "  environment: {FROM: resil}\n"))
	rep, code := e.diffJSON()
	if code != 0 || len(rep.Steps) != 0 || !rep.hasFinding("ForeignUnitConflict", "/lib/systemd/system/vend.service already provides vend.service") {
		t.Fatalf("diff without takeOver: exit %d, steps %q, findings %+v", code, rep.texts(), rep.Findings)
	}
	out := e.apply(0)
	if !strings.Contains(out, "ForeignUnitConflict") {
		t.Errorf("apply does not warn about the conflict:\n%s", out)
	}
	if _, err := e.sb.ReadFile("/etc/systemd/system/vend.service"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("resil wrote /etc/systemd/system/vend.service without takeOver (%v)", err)
	}
	if pid := e.prop("vend.service", "MainPID"); pid != vendorPID {
		t.Fatalf("vendor unit touched: MainPID %s → %s", vendorPID, pid)
	}

	// Take-over: resil's unit in /etc overrides the vendor file.
	e.write("vend.yaml", svc("vend", "  takeOver: true\n  environment: {FROM: resil}\n"))
	out = e.apply(0)
	if !strings.Contains(out, "restart vend.service (taken over from /lib/systemd/system/vend.service)") {
		t.Fatalf("take-over apply:\n%s", out)
	}
	if p := e.prop("vend.service", "FragmentPath"); p != "/etc/systemd/system/vend.service" {
		t.Fatalf("FragmentPath = %s after take-over", p)
	}
	if env := e.mainEnviron("vend.service"); !strings.Contains(env, "FROM=resil") {
		t.Fatalf("taken-over unit runs with %q", env)
	}
	if rep, code := e.diffJSON(); code != 0 {
		t.Fatalf("diff after take-over: exit %d, steps %q", code, rep.texts())
	}

	// takeOver turned off: resil's file goes, the vendor unit is back in
	// force (it stayed shadowed by resil's stale file before).
	e.write("vend.yaml", svc("vend", "  environment: {FROM: resil}\n"))
	out = e.apply(0)
	if !strings.Contains(out, "takeOver turned off") {
		t.Fatalf("apply with takeOver turned off:\n%s", out)
	}
	if p := e.show("vend.service", "FragmentPath", "ActiveState"); p["FragmentPath"] != "/lib/systemd/system/vend.service" || p["ActiveState"] != "active" {
		t.Fatalf("after takeOver turned off: %v", p)
	}
	if env := e.mainEnviron("vend.service"); !strings.Contains(env, "FROM=vendor") {
		t.Fatalf("after takeOver turned off the unit runs with %q, want the vendor's", env)
	}
	if rep, code := e.diffJSON(); code != 0 || len(rep.Steps) != 0 {
		t.Fatalf("diff after takeOver turned off: exit %d, steps %q", code, rep.texts())
	}
	e.write("vend.yaml", svc("vend", "  takeOver: true\n  environment: {FROM: resil}\n"))
	e.apply(0)

	// Prune: only resil's file goes; the vendor unit is in force again.
	e.remove("vend.yaml")
	out = e.apply(0)
	if strings.Contains(out, "stop vend.service") || strings.Contains(out, "disable vend.service") {
		t.Fatalf("prune of a taken-over unit stopped or disabled it:\n%s", out)
	}
	if data, err := e.sb.ReadFile("/lib/systemd/system/vend.service"); err != nil || string(data) != vendorUnit {
		t.Fatalf("vendor file changed: %v", err)
	}
	p := e.show("vend.service", "FragmentPath", "ActiveState", "UnitFileState")
	if p["FragmentPath"] != "/lib/systemd/system/vend.service" || p["ActiveState"] != "active" || p["UnitFileState"] != "enabled" {
		t.Fatalf("after prune: %v", p)
	}
	if env := e.mainEnviron("vend.service"); !strings.Contains(env, "FROM=vendor") {
		t.Fatalf("after prune the unit runs with %q, want the vendor's", env)
	}
	if rep, code := e.diffJSON(); code != 0 {
		t.Fatalf("diff after prune: exit %d, steps %q", code, rep.texts())
	}
}

// Item 8: diff writes nothing, not even a missing state dir.
func TestDiffCreatesNoStateDir(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	const state = "/var/lib/resil-diff-only"
	out, errOut, code := e.reconcilerState(state, "diff")
	if code != 1 || !strings.Contains(out, "start web.service") {
		t.Fatalf("diff exit %d:\n%s\n%s", code, out, errOut)
	}
	if _, err := os.Lstat(filepath.Join(e.sb.Root(), state)); !os.IsNotExist(err) {
		t.Fatalf("diff created %s (%v)", state, err)
	}
	if _, err := os.Lstat(filepath.Join(e.sb.Root(), "etc/systemd/system/web.service")); !os.IsNotExist(err) {
		t.Fatalf("diff wrote the unit file (%v)", err)
	}
}

// reconcilerState runs the CLI inside the sandbox with another state dir.
func (e *env) reconcilerState(state string, args ...string) (string, string, int) {
	e.t.Helper()
	full := append(args, "--backend", "systemd", "--state-dir", state, "--log-format", "console", "--manifests", manifestsDir)
	cmd := e.sb.Command(e.ctx, agentBin, full...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run reconciler %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// An object that changes kind keeping its name takes the unit its old self
// owned, both ways: Service/job to Timer/job stops and disables the old
// service and makes job.service the timer's job; back to a Service prunes
// the timer and runs the service again. Each time diff is clean after.
func TestKindChangeTakesUnit(t *testing.T) {
	e := newEnv(t)
	e.write("job.yaml", svc("job", ""))
	e.apply(0)
	if p := e.show("job.service", "ActiveState", "UnitFileState"); p["ActiveState"] != "active" || p["UnitFileState"] != "enabled" {
		t.Fatalf("service: %v", p)
	}
	e.write("job.yaml", "apiVersion: resil.dev/v1\nkind: Timer\nmetadata: {name: job}\nspec:\n  onBoot: 1h\n  command: [\"/bin/echo\", \"x\"]\n")
	out := e.apply(0)
	if !strings.Contains(out, "taken from Service/job") {
		t.Fatalf("apply of the kind change:\n%s", out)
	}
	if p := e.show("job.service", "ActiveState", "UnitFileState"); p["ActiveState"] != "inactive" || p["UnitFileState"] == "enabled" {
		t.Fatalf("the old service after the change to a timer: %v", p)
	}
	if p := e.show("job.timer", "ActiveState"); p["ActiveState"] != "active" {
		t.Fatalf("timer: %v", p)
	}
	if rep, code := e.diffJSON(); code != 0 {
		t.Fatalf("diff after the change to a timer: exit %d, steps %q, findings %+v", code, rep.texts(), rep.Findings)
	}
	e.write("job.yaml", svc("job", ""))
	e.apply(0)
	if p := e.show("job.service", "ActiveState", "UnitFileState"); p["ActiveState"] != "active" || p["UnitFileState"] != "enabled" {
		t.Fatalf("service again: %v", p)
	}
	if p := e.show("job.timer", "LoadState"); p["LoadState"] != "not-found" {
		t.Fatalf("timer after the change back: %v", p)
	}
	if rep, code := e.diffJSON(); code != 0 {
		t.Fatalf("diff after the change back: exit %d, steps %q", code, rep.texts())
	}
}
