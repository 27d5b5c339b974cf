package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/internal/ownmark"
)

func svc(name, extra string) string {
	return fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: %s}
spec:
  command: ["/bin/sleep", "infinity"]
  restart: {policy: always, delay: 100ms}
%s`, name, extra)
}

// Scenario 1: new manifest → unit written, exactly one daemon-reload, enabled, active.
func TestNewManifestConverges(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", "  environment: {MODE: one}\n"))
	e.write("worker.yaml", svc("worker", ""))
	out := e.apply(0)
	if n := countLines(out, "daemon-reload"); n != 1 {
		t.Errorf("daemon-reload steps = %d, want exactly 1:\n%s", n, out)
	}
	for _, u := range []string{"web.service", "worker.service"} {
		p := e.show(u, "ActiveState", "UnitFileState", "FragmentPath")
		if p["ActiveState"] != "active" || p["UnitFileState"] != "enabled" || p["FragmentPath"] != "/etc/systemd/system/"+u {
			t.Errorf("%s: %v", u, p)
		}
	}
	data, err := e.sb.ReadFile("/etc/systemd/system/web.service")
	if err != nil || !strings.Contains(string(data), "X-Resil-Object=Service/web") || !strings.Contains(string(data), `Environment="MODE=one"`) {
		t.Errorf("web.service content: %v\n%s", err, data)
	}
}

// Scenario 2: changed manifest → file updated, running unit restarted once;
// an unchanged second pass has no step.
func TestChangedManifestRestartsOnce(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", "  environment: {MODE: one}\n"))
	e.apply(0)
	before := e.show("web.service", "MainPID", "ExecMainStartTimestampMonotonic")
	e.write("web.yaml", svc("web", "  environment: {MODE: two}\n"))
	out := e.apply(0)
	if countLines(out, "restart web.service") != 1 || countLines(out, "daemon-reload") != 1 {
		t.Errorf("want one write, one reload, one restart:\n%s", out)
	}
	after := e.show("web.service", "MainPID", "ActiveState", "Environment", "ExecMainStartTimestampMonotonic")
	if after["MainPID"] == before["MainPID"] || after["ActiveState"] != "active" || after["Environment"] != "MODE=two" {
		t.Errorf("not restarted with the new content: before %v after %v", before, after)
	}
	out = e.apply(0)
	if !strings.HasPrefix(out, "0 steps") {
		t.Errorf("second pass should have no step:\n%s", out)
	}
	if again := e.prop("web.service", "MainPID"); again != after["MainPID"] {
		t.Errorf("unchanged pass restarted the unit: %s → %s", after["MainPID"], again)
	}
}

// Scenario 3: deleted manifest → stopped, disabled, file removed; a foreign
// unit in the same directory untouched.
func TestDeletedManifestPrunesOnlyOwned(t *testing.T) {
	e := newEnv(t)
	foreign := "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"
	if err := e.sb.WriteFile("/etc/systemd/system/foreign.service", []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}
	e.systemctl("daemon-reload")
	e.systemctl("enable", "--now", "foreign.service")
	e.write("web.yaml", svc("web", ""))
	e.apply(0)
	e.remove("web.yaml")
	out := e.apply(0)
	for _, want := range []string{"stop web.service", "disable web.service", "remove /etc/systemd/system/web.service"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q:\n%s", want, out)
		}
	}
	p := e.show("web.service", "ActiveState", "UnitFileState", "LoadState")
	if p["ActiveState"] != "inactive" || p["LoadState"] != "not-found" {
		t.Errorf("web.service after prune: %v", p)
	}
	if _, err := os.Stat(filepath.Join(e.sb.Root(), "etc/systemd/system/web.service")); !os.IsNotExist(err) {
		t.Errorf("web.service file still there: %v", err)
	}
	f := e.show("foreign.service", "ActiveState", "UnitFileState")
	if f["ActiveState"] != "active" || f["UnitFileState"] != "enabled" {
		t.Errorf("foreign unit touched: %v", f)
	}
	if data, _ := e.sb.ReadFile("/etc/systemd/system/foreign.service"); string(data) != foreign {
		t.Errorf("foreign unit file changed")
	}
}

// Scenario 4: systemctl stop out of band → drift event, active again; with
// drift: report → event only.
func TestOutOfBandStop(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	e.write("quiet.yaml", svc("quiet", "  drift: report\n"))
	e.apply(0)
	a := e.startAgent()
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	e.systemctl("stop", "web.service", "quiet.service")
	e.eventually("web.service active again", 30*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	e.eventually("drift event for web", 10*time.Second, func() bool { return a.hasEvent("StoppedOutOfBand", "web.service is inactive") })
	e.eventually("report event for quiet", 10*time.Second, func() bool { return a.hasEvent("StoppedOutOfBand", "drift policy report") })
	time.Sleep(3 * time.Second) // a resync or two
	if s := e.prop("quiet.service", "ActiveState"); s != "inactive" {
		t.Errorf("report policy started quiet.service: %s", s)
	}
}

// Scenario 5: hand edit of the unit file → restored; a systemctl-edit-style
// foreign drop-in → reported, kept.
func TestHandEditRestoredDropInReported(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	e.apply(0)
	path := "/etc/systemd/system/web.service"
	orig, err := e.sb.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(orig), "Restart=always", "Restart=no", 1)
	if err := e.sb.WriteFile(path, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	dropin := "[Service]\nEnvironment=FROM_DROPIN=1\n"
	if err := e.sb.WriteFile("/etc/systemd/system/web.service.d/override.conf", []byte(dropin), 0o644); err != nil {
		t.Fatal(err)
	}
	e.systemctl("daemon-reload")
	out := e.apply(0)
	if !strings.Contains(out, "edited out of band, restoring") || !strings.Contains(out, "ForeignDropIn") {
		t.Errorf("apply output:\n%s", out)
	}
	// Restored to the rendered bytes; Restart= is reload-only, so the
	// running process keeps running and the file says since when its
	// process settings are unchanged (X-Resil-Process-Since).
	if got, _ := e.sb.ReadFile(path); string(ownmark.WithoutProcessSince(got)) != string(orig) {
		t.Errorf("unit file not restored:\n%s", got)
	}
	if got, _ := e.sb.ReadFile("/etc/systemd/system/web.service.d/override.conf"); string(got) != dropin {
		t.Errorf("foreign drop-in changed or removed")
	}
	p := e.show("web.service", "Restart", "DropInPaths", "Environment")
	if p["Restart"] != "always" || !strings.Contains(p["DropInPaths"], "override.conf") || p["Environment"] != "FROM_DROPIN=1" {
		t.Errorf("systemd view: %v", p)
	}
}

// Scenario 6: a good manifest overwritten by invalid YAML → the service stays
// active; a warning event names the file.
func TestInvalidManifestKeepsLastGood(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	a := e.startAgent()
	e.eventually("web active", 30*time.Second, func() bool { return e.prop("web.service", "ActiveState") == "active" })
	pid := e.prop("web.service", "MainPID")
	e.write("web.yaml", "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: web\nspec: [\n")
	e.eventually("invalid manifest event", 20*time.Second, func() bool { return a.hasEvent("InvalidManifest", "web.yaml") })
	time.Sleep(3 * time.Second)
	p := e.show("web.service", "ActiveState", "MainPID", "LoadState")
	if p["ActiveState"] != "active" || p["MainPID"] != pid || p["LoadState"] != "loaded" {
		t.Errorf("service disturbed by an invalid manifest: %v (pid was %s)", p, pid)
	}
	if _, err := e.sb.ReadFile("/etc/systemd/system/web.service"); err != nil {
		t.Errorf("unit file removed: %v", err)
	}
}

// Scenario 7: the whole manifest directory swapped by a symlink (git-sync
// style) → one converge to the new version.
func TestSymlinkSwap(t *testing.T) {
	e := newEnv(t)
	for rev, mode := range map[string]string{"rev1": "one", "rev2": "two"} {
		dir := filepath.Join(e.host, rev)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "web.yaml"), []byte(svc("web", "  environment: {MODE: "+mode+"}\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("rev1", filepath.Join(e.host, "current")); err != nil {
		t.Fatal(err)
	}
	a := e.startAgent("--manifests", hostMount+"/current")
	e.eventually("rev1 applied", 30*time.Second, func() bool {
		return a.countLogs("first pass done") > 0 && e.prop("web.service", "Environment") == "MODE=one"
	})
	restartsBefore := a.countLogsBy("reconcile", "step applied")
	tmp := filepath.Join(e.host, "current.tmp")
	if err := os.Symlink("rev2", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.host, "current")); err != nil {
		t.Fatal(err)
	}
	e.eventually("rev2 applied", 30*time.Second, func() bool {
		p := e.show("web.service", "Environment", "ActiveState")
		return p["Environment"] == "MODE=two" && p["ActiveState"] == "active"
	})
	time.Sleep(3 * time.Second)
	// One converge: one write, one reload, one restart.
	if got := a.countLogsBy("reconcile", "step applied") - restartsBefore; got != 3 {
		t.Errorf("steps applied for the swap = %d, want 3 (write, daemon-reload, restart)\n%s", got, a.output())
	}
}

// Scenario 8: a crash-looping service with restart.limit 3 in 60 s ends
// failed by the start limit; recorded as StartLimitHit; the agent adds no
// restarts of its own.
func TestCrashLoopStartLimit(t *testing.T) {
	e := newEnv(t)
	e.write("crash.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: crash}
spec:
  command: ["/bin/sh", "-c", "exit 3"]
  restart: {policy: always, delay: 100ms, limit: {burst: 3, interval: 60s}}
`)
	a := e.startAgent()
	e.eventually("crash.service failed", 30*time.Second, func() bool { return e.prop("crash.service", "ActiveState") == "failed" })
	// systemd 252 keeps Result=exit-code (start-limit-hit replaces only a
	// success); the agent tells the start limit by the policy that would
	// have restarted it (QA: reported as Failed).
	e.eventually("StartLimitHit event", 20*time.Second, func() bool {
		return a.hasEvent("StartLimitHit", "start limit hit: systemd stopped restarting it after")
	})
	if a.hasEvent("Failed", "crash.service") {
		t.Errorf("the start limit also reported as Failed (Result %s)", e.prop("crash.service", "Result"))
	}
	journal, err := e.sb.Journal(e.ctx, "-u", "crash.service", "--no-pager")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(journal, "Start request repeated too quickly") {
		t.Errorf("journal lacks the start-limit message:\n%s", journal)
	}
	n1 := e.prop("crash.service", "NRestarts")
	time.Sleep(5 * time.Second) // two resyncs
	p := e.show("crash.service", "ActiveState", "NRestarts")
	if p["ActiveState"] != "failed" || p["NRestarts"] != n1 {
		t.Errorf("agent restarted a start-limited unit: NRestarts %s → %v", n1, p)
	}
	starts := countLines(journal, "Started crash.service")
	if starts > 3 {
		t.Errorf("%d starts, want at most the burst (3)", starts)
	}
}

// Scenario 9: the seed-style worker whose pre-start TCP check succeeds on
// the second try.
func TestPreStartCheckSecondTry(t *testing.T) {
	// The sandbox runs the host's programs: the listener and the check use nc.
	sandbox.RequireProgram(t, "/usr/bin/nc", "netcat-openbsd")
	e := newEnv(t)
	listener := "[Service]\nExecStart=/usr/bin/nc -lk 127.0.0.1 7777\n"
	if err := e.sb.WriteFile("/etc/systemd/system/listener.service", []byte(listener), 0o644); err != nil {
		t.Fatal(err)
	}
	e.systemctl("daemon-reload")
	e.systemctl("start", "listener.service")
	// The first try fails (no marker yet), the second reaches the port.
	e.write("worker.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: worker}
spec:
  command: ["/bin/sleep", "infinity"]
  restart: {policy: always, delay: 5s, limit: {burst: 3, interval: 60s}}
  preStart:
    - command: ["/bin/sh", "-c", "if [ -e /run/tried ]; then exec /usr/bin/nc -z 127.0.0.1 7777; else touch /run/tried; exit 1; fi"]
      retries: 5
      delay: 200ms
`)
	e.apply(0)
	p := e.show("worker.service", "ActiveState", "SubState")
	if p["ActiveState"] != "active" {
		t.Errorf("worker: %v", p)
	}
	if _, err := e.sb.ReadFile("/run/tried"); err != nil {
		t.Errorf("first try did not run: %v", err)
	}
}

var stepLine = regexp.MustCompile(`^\s+\d+\. (.*)$`)

// Scenario 10: diff before apply lists exactly the steps apply executes.
func TestDiffMatchesApply(t *testing.T) {
	e := newEnv(t)
	e.write("web.yaml", svc("web", ""))
	e.write("nightly.yaml", `apiVersion: resil.dev/v1
kind: Timer
metadata: {name: nightly}
spec:
  schedule: ["*-*-* 03:00:00"]
  persistent: true
  command: ["/bin/true"]
`)
	out, _, code := e.reconciler("diff")
	if code != 1 {
		t.Fatalf("diff exit %d, want 1 (changes):\n%s", code, out)
	}
	var planned []string
	for _, l := range strings.Split(out, "\n") {
		if m := stepLine.FindStringSubmatch(l); m != nil {
			planned = append(planned, m[1])
		}
	}
	if !strings.Contains(out, "+++ /etc/systemd/system/web.service") {
		t.Errorf("diff shows no file diff:\n%s", out)
	}
	hash := regexp.MustCompile(`plan ([0-9a-f]{16})`).FindStringSubmatch(out)
	if hash == nil {
		t.Fatalf("no plan hash in diff output:\n%s", out)
	}
	applied, _, code := e.reconciler("apply", "--expect-plan", hash[1])
	if code != 0 {
		t.Fatalf("apply --expect-plan exit %d:\n%s", code, applied)
	}
	var executed []string
	for _, l := range strings.Split(applied, "\n") {
		if strings.HasPrefix(l, "changed ") || strings.HasPrefix(l, "unchanged ") {
			executed = append(executed, strings.TrimSpace(strings.SplitN(l, " ", 2)[1]))
		}
	}
	if strings.Join(planned, "\n") != strings.Join(executed, "\n") {
		t.Errorf("diff planned:\n%s\napply executed:\n%s", strings.Join(planned, "\n"), strings.Join(executed, "\n"))
	}
	out, _, code = e.reconciler("diff")
	if code != 0 {
		t.Errorf("diff after apply exit %d, want 0:\n%s", code, out)
	}
	// A stale reviewed plan is refused.
	e.write("web.yaml", svc("web", "  environment: {X: y}\n"))
	if out, _, code := e.reconciler("apply", "--expect-plan", hash[1]); code != 1 || !strings.Contains(out+"", "Plan:") {
		t.Errorf("apply with a stale plan hash: exit %d\n%s", code, out)
	}
	if e.prop("web.service", "Environment") != "" {
		t.Errorf("stale plan was applied")
	}
}

// diff works as a non-root user against a checkout, reading systemd's state
// over the system bus, and changes nothing.
func TestDiffAsNonRoot(t *testing.T) {
	e := newEnv(t)
	if err := os.Chmod(e.host, 0o755); err != nil {
		t.Fatal(err)
	}
	e.write("web.yaml", svc("web", ""))
	e.apply(0)
	e.write("web.yaml", svc("web", "  environment: {MODE: review}\n"))
	cmd := e.sb.Command(e.ctx, "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		agentBin, "diff", "--manifests", manifestsDir, "--backend", "systemd", "--state-dir", "/var/tmp/resil-nobody")
	out, err := cmd.CombinedOutput()
	code := cmd.ProcessState.ExitCode()
	if code != 1 || !strings.Contains(string(out), "+Environment=\"MODE=review\"") || !strings.Contains(string(out), "restart web.service") {
		t.Fatalf("non-root diff: exit %d (%v)\n%s", code, err, out)
	}
	if e.prop("web.service", "Environment") != "" {
		t.Errorf("diff changed the host")
	}
}

// A service whose process exits by itself with status 0 under a policy
// that does not restart a clean exit (never, on-failure) is done: the
// agent reports it Exited and does not start it again (it used to start
// it every pass into its start limit). A stop out of band of a service
// whose process exits 0 on SIGTERM is still a stop: started again.
func TestExitedOnItsOwnNotStartedAgain(t *testing.T) {
	e := newEnv(t)
	e.write("once.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: once}
spec:
  command: ["/bin/sh", "-c", "sleep 2; exit 0"]
  restart: {policy: never}
`)
	e.write("clean.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: clean}
spec:
  command: ["/bin/sh", "-c", "sleep 2; exit 0"]
`)
	e.write("graceful.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: graceful}
spec:
  command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]
`)
	// No daemon-reload after this apply: systemd unloads an inactive unit
	// nothing references, and its run history (the timestamps the
	// judgement needs) with it. The apply enables before its reload, so
	// multi-user.target references the new units from that reload on.
	out := e.apply(0)
	if i, j := strings.Index(out, "enable once.service"), strings.Index(out, "daemon-reload"); i < 0 || j < 0 || i > j {
		t.Errorf("apply did not enable before its daemon-reload:\n%s", out)
	}
	a := e.startAgent()
	e.eventually("first pass", 30*time.Second, func() bool { return a.countLogs("first pass done") > 0 })
	for _, u := range []string{"once.service", "clean.service"} {
		e.eventually(u+" exited", 30*time.Second, func() bool { return e.prop(u, "ActiveState") == "inactive" && e.prop(u, "ExecMainExitTimestamp") != "" })
	}
	e.eventually("Exited events", 30*time.Second, func() bool {
		return a.hasEvent("Exited", "once.service exited by itself") && a.hasEvent("Exited", "clean.service exited by itself")
	})
	starts := map[string]string{}
	for _, u := range []string{"once.service", "clean.service"} {
		starts[u] = e.prop(u, "ExecMainStartTimestamp")
	}
	e.systemctl("stop", "graceful.service")
	e.eventually("graceful.service started again", 30*time.Second, func() bool { return e.prop("graceful.service", "ActiveState") == "active" })
	if !a.hasEvent("StoppedOutOfBand", "graceful.service is inactive") {
		t.Errorf("no StoppedOutOfBand event for graceful.service")
	}
	time.Sleep(2 * time.Second) // passes woken by graceful's stop and start
	for u, was := range starts {
		if p := e.show(u, "ActiveState", "ExecMainStartTimestamp"); p["ActiveState"] != "inactive" || p["ExecMainStartTimestamp"] != was {
			t.Errorf("%s started again: %v (started %s before)", u, p, was)
		}
	}
	if a.hasEvent("StoppedOutOfBand", "once.service") || a.hasEvent("StoppedOutOfBand", "clean.service") {
		t.Errorf("a service that exited by itself reported as stopped out of band")
	}
}
