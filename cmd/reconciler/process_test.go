package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"resil.dev/resil/actuators/process"
	"resil.dev/resil/desired"
	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/ledger"
	"resil.dev/resil/reconcile/store"
)

// procEnv is a manifests dir and a state dir for the process backend,
// driven through the CLI in this process (apply runs the supervisor for its
// pass; the processes outlive it, as they outlive a killed agent).
type procEnv struct {
	t                *testing.T
	manifests, state string
}

func newProcEnv(t *testing.T) *procEnv {
	t.Helper()
	e := &procEnv{t: t, manifests: t.TempDir(), state: t.TempDir()}
	t.Cleanup(e.killAll)
	return e
}

func (e *procEnv) write(name, body string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.manifests, name), []byte(body), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *procEnv) cli(cmd string, extra ...string) (string, int) {
	e.t.Helper()
	args := append([]string{cmd, "--backend", "process", "--manifests", e.manifests, "--state-dir", e.state}, extra...)
	if !hasOwnerCheck(extra) {
		args = append(args, "--owner-check", "off")
	}
	return runCLI(e.t, args...)
}

func hasOwnerCheck(args []string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, "--owner-check") {
			return true
		}
	}
	return false
}

type procRow struct {
	Unit     string `json:"unit"`
	PID      int    `json:"pid"`
	SpecHash string `json:"specHash"`
}

func (e *procEnv) rows() map[string]procRow {
	e.t.Helper()
	out := map[string]procRow{}
	b, err := os.ReadFile(filepath.Join(e.state, "processes.json"))
	if os.IsNotExist(err) {
		return out
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var tab struct {
		Processes []procRow `json:"processes"`
	}
	if err := json.Unmarshal(b, &tab); err != nil {
		e.t.Fatal(err)
	}
	for _, r := range tab.Processes {
		out[r.Unit] = r
	}
	return out
}

// pid is the running main process of unit, 0 if none.
func (e *procEnv) pid(unit string) int {
	r, ok := e.rows()[unit]
	if !ok || r.PID <= 0 || syscall.Kill(r.PID, 0) != nil {
		return 0
	}
	return r.PID
}

func (e *procEnv) killAll() {
	for _, r := range e.rows() {
		if r.PID > 1 {
			_ = syscall.Kill(-r.PID, syscall.SIGKILL)
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(r.PID, &ws, 0, nil)
		}
	}
}

func environOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{'\n'}))
}

const procWeb = `apiVersion: resil.dev/v1
kind: Service
metadata: {name: web}
spec:
  command: ["/bin/sleep", "infinity"]
  environment: {MODE: one}
`

// A restarted agent has no memory of last good versions: a broken manifest
// must still never stop or remove what it owned. The unit file's
// X-Resil-Source names the broken file, as on systemd.
func TestProcessBackendBrokenManifestNotPruned(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(e *procEnv)
		owner  string
	}{
		{"typo comand", func(e *procEnv) { e.write("web.yaml", strings.Replace(procWeb, "command:", "comand:", 1)) }, "off"},
		{"cut mid-line", func(e *procEnv) { e.write("web.yaml", procWeb[:strings.Index(procWeb, "sleep")]) }, "off"},
		{"refused by the owner check", func(e *procEnv) {
			if err := os.Chmod(filepath.Join(e.manifests, "web.yaml"), 0o666); err != nil {
				e.t.Fatal(err)
			}
		}, "on"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.owner == "on" {
				sandbox.RequireRoot(t, "for the owner check")
			}
			e := newProcEnv(t)
			e.write("web.yaml", procWeb)
			e.write("other.yaml", strings.Replace(procWeb, "name: web", "name: other", 1))
			if out, code := e.cli("apply", "--owner-check", c.owner); code != 0 {
				t.Fatalf("first apply: exit %d\n%s", code, out)
			}
			pid := e.pid("web.service")
			if pid == 0 {
				t.Fatal("web not running after apply")
			}
			unit := filepath.Join(e.state, "units", "web.service")
			data, _ := os.ReadFile(unit)
			if got := ownmark.SourceOf(data); len(got) != 1 || got[0] != "web.yaml" {
				t.Fatalf("unit file source marker %q:\n%s", got, data)
			}
			c.break_(e)
			// diff, then apply: each a fresh process, with no memory.
			out, code := e.cli("diff", "--owner-check", c.owner)
			if code != 2 || strings.Contains(out, "web.service (pruned") || strings.Contains(out, "stop web.service") {
				t.Fatalf("diff with a broken manifest: exit %d\n%s", code, out)
			}
			out, code = e.cli("apply", "--owner-check", c.owner)
			if code != 1 || strings.Contains(out, "web.service (pruned") {
				t.Fatalf("apply with a broken manifest: exit %d\n%s", code, out)
			}
			if _, err := os.Stat(unit); err != nil || e.pid("web.service") != pid {
				t.Fatalf("web disturbed: unit file %v, pid %d (was %d)\n%s", err, e.pid("web.service"), pid, out)
			}
			// status names it Invalid (not converged, exit 1), and the
			// metric's state with it; the other object is fine.
			if out, code := e.cli("status", "web", "--owner-check", c.owner); code != 1 || !strings.Contains(out, "[Invalid]") {
				t.Errorf("status web with its manifest broken: exit %d\n%s", code, out)
			}
			if out, code := e.cli("status", "other", "--owner-check", c.owner); code != 0 || strings.Contains(out, "Invalid") {
				t.Errorf("status other: exit %d\n%s", code, out)
			}
			// Deleting the file really prunes.
			if err := os.Remove(filepath.Join(e.manifests, "web.yaml")); err != nil {
				t.Fatal(err)
			}
			if out, code := e.cli("apply", "--owner-check", c.owner); code != 0 || e.pid("web.service") != 0 {
				t.Fatalf("apply after delete: exit %d, pid %d\n%s", code, e.pid("web.service"), out)
			}
			if _, err := os.Stat(unit); err == nil {
				t.Fatal("unit file of a deleted manifest kept")
			}
		})
	}
}

// A new manifest whose object is invalid, never seen valid, has no last
// good version and nothing on the host; status and diff still name it
// (Invalid, not converged) instead of "no such object" and no findings.
// Fixed, it converges. With nothing left, the JSON lists are [], not null.
func TestProcessBackendNeverValidObjectIsInvalid(t *testing.T) {
	e := newProcEnv(t)
	e.write("other.yaml", strings.Replace(procWeb, "name: web", "name: other", 1))
	e.write("fresh.yaml", `apiVersion: resil.dev/v1
kind: Service
metadata: {name: fresh}
spec:
  command: ["relative"]
`)
	if out, code := e.cli("apply"); code != 1 || !strings.Contains(out, "fresh.yaml:5:13") {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	out, code := e.cli("status", "fresh")
	if code != 1 || !strings.Contains(out, "absent [Invalid]") || !strings.Contains(out, "fresh.yaml is invalid") && !strings.Contains(out, "LastGoodRetained") {
		t.Errorf("status fresh: exit %d\n%s", code, out)
	}
	out, code = e.cli("diff", "-o", "json")
	var rep struct {
		Findings []reconcile.Finding `json:"findings"`
	}
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&rep); err != nil { // stderr follows
		t.Fatalf("diff -o json: exit %d: %v\n%s", code, err, out)
	}
	found := false
	for _, f := range rep.Findings {
		found = found || f.Object == "Service/fresh" && f.Reason == reconcile.ReasonLastGoodRetained
	}
	if code != 2 || !found {
		t.Errorf("diff -o json: exit %d, findings %+v", code, rep.Findings)
	}
	e.write("fresh.yaml", strings.Replace(procWeb, "name: web", "name: fresh", 1))
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply after the fix: exit %d\n%s", code, out)
	}
	if out, code := e.cli("status", "fresh"); code != 0 || strings.Contains(out, "Invalid") {
		t.Errorf("status fresh after the fix: exit %d\n%s", code, out)
	}
	for _, f := range []string{"fresh.yaml", "other.yaml"} {
		if err := os.Remove(filepath.Join(e.manifests, f)); err != nil {
			t.Fatal(err)
		}
	}
	if out, code := e.cli("apply", "--allow-prune", "2"); code != 0 || e.pid("fresh.service") != 0 {
		t.Fatalf("apply with nothing: exit %d\n%s", code, out)
	}
	for cmd, list := range map[string]string{"status": "objects", "diff": "findings"} {
		out, code := e.cli(cmd, "-o", "json")
		var rep map[string]json.RawMessage
		if err := json.NewDecoder(strings.NewReader(out)).Decode(&rep); err != nil || string(rep[list]) != "[]" {
			t.Errorf("%s -o json with nothing desired: exit %d, %s %s (want []), %v\n%s", cmd, code, list, rep[list], err, out)
		}
	}
}

// Killed after the unit file was written, before the restart: the file
// already matches, the process is older. diff shows exactly the restart;
// apply runs it once; then diff is clean.
func TestProcessBackendLostRestartAfterKill(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	old := e.pid("web.service")
	// The edit, and what the killed pass got done: the new unit file.
	e.write("web.yaml", strings.Replace(procWeb, "MODE: one", "MODE: two", 1))
	set, err := desired.Load(e.manifests, desired.Options{})
	if err != nil {
		t.Fatal(err)
	}
	files, err := process.Render(set.Objects["Service/web"])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.state, "units", "web.service"), files[0].Data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := e.cli("diff")
	if code != 1 || !strings.Contains(out, "restart web.service (running process started from an older unit file)") ||
		strings.Contains(out, "write ") || !strings.Contains(out, "StaleProcess") {
		t.Fatalf("diff after the lost restart: exit %d\n%s", code, out)
	}
	if strings.Count(out, "restart web.service") != 1 {
		t.Fatalf("diff: not exactly one restart\n%s", out)
	}
	out, code = e.cli("apply")
	if code != 0 || strings.Count(out, "restart web.service") != 1 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	now := e.pid("web.service")
	if now == 0 || now == old || syscall.Kill(old, 0) == nil {
		t.Fatalf("after apply: pid %d, old %d", now, old)
	}
	if env := environOf(t, now); !strings.Contains(env, "\nMODE=two\n") && !strings.HasPrefix(env, "MODE=two\n") {
		t.Fatalf("new process environment:\n%s", env)
	}
	if out, code := e.cli("diff"); code != 0 {
		t.Fatalf("diff after apply: exit %d\n%s", code, out)
	}
	if out, code := e.cli("apply"); code != 0 || e.pid("web.service") != now || strings.Contains(out, "restart") {
		t.Fatalf("second apply touched the service: exit %d pid %d\n%s", code, e.pid("web.service"), out)
	}
}

// The process backend never runs a manifest with less isolation than it
// asks: escape-hatch directives it cannot apply are refused (Unsupported,
// nothing started); the ones it maps (User=) are honoured.
func TestProcessBackendEscapeHatch(t *testing.T) {
	t.Run("unsupported directives refused", func(t *testing.T) {
		e := newProcEnv(t)
		e.write("web.yaml", procWeb+"  systemd: {Service: {User: nobody, ExecStartPre: /bin/true, NoNewPrivileges: \"yes\"}}\n")
		out, code := e.cli("diff")
		for _, want := range []string{"Unsupported Service/web", "spec.systemd.Service.ExecStartPre", "spec.systemd.Service.NoNewPrivileges"} {
			if code != 2 || !strings.Contains(out, want) {
				t.Fatalf("diff: exit %d, missing %q\n%s", code, want, out)
			}
		}
		if strings.Contains(out, "start web.service") {
			t.Fatalf("diff plans a start:\n%s", out)
		}
		out, code = e.cli("apply")
		if code != 1 || !strings.Contains(out, "Unsupported") || e.pid("web.service") != 0 {
			t.Fatalf("apply: pid %d\n%s", e.pid("web.service"), out)
		}
		if _, err := os.Stat(filepath.Join(e.state, "units", "web.service")); err == nil {
			t.Fatal("unit file written for an unsupported manifest")
		}
	})
	t.Run("resources refused", func(t *testing.T) {
		e := newProcEnv(t)
		e.write("web.yaml", procWeb+"  resources: {memoryMax: 64M}\n")
		out, code := e.cli("apply")
		if code != 1 || !strings.Contains(out, "spec.resources.memoryMax") || e.pid("web.service") != 0 {
			t.Fatalf("apply: pid %d\n%s", e.pid("web.service"), out)
		}
		// The refused field is named at its line, in apply's and status's
		// list of invalid manifests (was: no file, no line).
		at := "web.yaml:7:15: spec.resources.memoryMax: this backend cannot honour it: no cgroup limits"
		if !strings.Contains(out, at) {
			t.Errorf("apply does not name the refused field's line %q:\n%s", at, out)
		}
		if out, code := e.cli("status"); code != 1 || !strings.Contains(out, at) {
			t.Errorf("status: exit %d, want the refused field's line %q:\n%s", code, at, out)
		}
	})
	t.Run("User honoured", func(t *testing.T) {
		sandbox.RequireRoot(t, "for setuid")
		e := newProcEnv(t)
		e.write("web.yaml", procWeb+"  systemd: {Service: {User: nobody}}\n")
		if out, code := e.cli("apply"); code != 0 {
			t.Fatalf("apply: exit %d\n%s", code, out)
		}
		pid := e.pid("web.service")
		status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(status), "\nUid:\t65534\t65534\t65534\t65534\n") {
			t.Fatalf("process %d does not run as nobody:\n%s", pid, status)
		}
	})
}

// On a host that only runs `apply` (no agent), `diff` plans what `apply`
// does, under the same hash, and a second `apply` has nothing to do: an
// enabled timer is started by every `apply`'s supervisor as it starts
// (`diff` sees it as that start leaves it), and a service whose process
// died meanwhile is started by the pass's step, shown by both (the
// supervisor used to start it before the pass: `diff` showed a start that
// `apply` never planned, and `apply --expect-plan` refused the plan).
func TestApplyOnlyHostDiffMatchesApply(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	e.write("tick.yaml", "apiVersion: resil.dev/v1\nkind: Timer\nmetadata: {name: tick}\nspec:\n  schedule: [hourly]\n  command: [/bin/true]\n")
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("first apply: exit %d\n%s", code, out)
	}
	planOf := func() diffJSON {
		t.Helper()
		out, _ := e.cli("diff", "-o", "json")
		var d diffJSON
		if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &d); err != nil {
			t.Fatalf("diff -o json: %v\n%s", err, out)
		}
		return d
	}
	for i := 0; i < 3; i++ {
		if d := planOf(); d.Changes {
			t.Fatalf("diff %d after apply: %+v", i+1, d.Steps)
		}
		if out, code := e.cli("apply"); code != 0 || !strings.Contains(out, "0 steps") {
			t.Fatalf("apply %d after apply: exit %d\n%s", i+2, code, out)
		}
	}
	pid := e.pid("web.service")
	if pid == 0 {
		t.Fatal("web not running")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	d := planOf()
	if !d.Changes || len(d.Steps) != 1 || !strings.HasPrefix(d.Steps[0].Text, "start web.service") {
		t.Fatalf("diff after web died with no agent: %+v", d.Steps)
	}
	if out, code := e.cli("apply", "--expect-plan", d.Hash); code != 0 || !strings.Contains(out, "start web.service") {
		t.Fatalf("apply --expect-plan %s: exit %d\n%s", d.Hash, code, out)
	}
	if e.pid("web.service") == 0 {
		t.Fatal("web not started again")
	}
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
	}
	t.Fatalf("pid %d still alive", pid)
}

// A restart made by `apply` is the agent's own in the restart ledger
// (cause agent), and the next agent, continuing from the baseline apply
// left, counts nothing more for it (it counted a manual restart: apply
// kept no ledger, so a new main process with no step of its own looked
// like someone else's restart).
func TestApplyRestartIsTheAgents(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("first apply: exit %d\n%s", code, out)
	}
	e.write("web.yaml", strings.Replace(procWeb, "MODE: one", "MODE: two", 1))
	if out, code := e.cli("apply"); code != 0 || !strings.Contains(out, "restart web.service") {
		t.Fatalf("apply of the change: exit %d\n%s", code, out)
	}
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	s, err := store.Open(filepath.Join(e.state, store.FileName), store.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	causes := func() []string {
		t.Helper()
		rs, err := s.Restarts(ctx, "Service/web", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.Cause)
		}
		return out
	}
	if got := causes(); len(got) != 1 || got[0] != string(ledger.CauseAgent) {
		t.Fatalf("restarts of web after apply's restart: %v, want [agent]", got)
	}
	// The next agent's first observation, against apply's baseline.
	sup, err := process.New(e.state, log, process.Options{})
	if err != nil {
		t.Fatal(err)
	}
	obs, err := sup.Observe(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tel := newTelemetry(s, nil, reconcile.NewRing(16, log), log, "process", ledger.Policy{}, 0)
	tel.ledger.Observe(ctx, reconcile.Result{Observed: obs}, time.Now())
	if got := causes(); len(got) != 1 {
		t.Fatalf("the next agent counted apply's restart again: %v", got)
	}
}

// reset on the process backend starts a service its manifest declares
// running, even under drift: report (which leaves a service stopped out of
// band as it is): the supervisor clears the failed state and starts it in
// one command, before the next pass observes, so that pass sees it
// running, not StoppedOutOfBand.
func TestProcessBackendResetStartsDeclaredService(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", strings.Replace(procWeb, "spec:\n", "spec:\n  drift: report\n", 1))
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	pid := e.pid("web.service")
	if pid == 0 {
		t.Fatal("web not running after apply")
	}
	// Killed while no agent runs: nothing restarts it, and drift: report
	// leaves it so.
	_ = syscall.Kill(pid, syscall.SIGKILL)
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, 0, nil)
	if out, code := e.cli("apply"); code != 0 || e.pid("web.service") != 0 || !strings.Contains(out, "StoppedOutOfBand") {
		t.Fatalf("apply after the kill: exit %d, pid %d\n%s", code, e.pid("web.service"), out)
	}
	if out, code := e.cli("reset", "web"); code != 0 || strings.TrimSpace(out) != "reset web.service" {
		t.Fatalf("reset: exit %d\n%s", code, out)
	}
	out, code := e.cli("apply")
	if code != 0 || e.pid("web.service") == 0 || strings.Contains(out, "StoppedOutOfBand") {
		t.Fatalf("apply after reset: exit %d, pid %d\n%s", code, e.pid("web.service"), out)
	}
	if out, code := e.cli("status", "web"); code != 0 || !strings.Contains(out, "active (running)") {
		t.Fatalf("status after reset: exit %d\n%s", code, out)
	}
}

// An agent killed (kill -9) right after its restart step, before its
// ledger observed the new process: the next agent counts that restart as
// the agent's, not manual (manual restarts count toward restart storms;
// the process backend marks a restart job's process).
func TestProcessBackendKilledAfterRestartCountsAgent(t *testing.T) {
	e := newProcEnv(t)
	e.write("web.yaml", procWeb)
	for i := range 2 { // the second pass observes it running: the ledger's baseline
		if out, code := e.cli("apply"); code != 0 {
			t.Fatalf("apply %d: exit %d\n%s", i, code, out)
		}
	}
	old := e.pid("web.service")
	e.write("web.yaml", strings.Replace(procWeb, "MODE: one", "MODE: two", 1))
	e.applyKilledAt("restart web.service", true)
	if p := e.pid("web.service"); p == 0 || p == old {
		t.Fatalf("web pid %d after the restart (was %d)", p, old)
	}
	// An apply runs its ledger when it changes something: a new object.
	e.write("other.yaml", strings.Replace(procWeb, "name: web", "name: other", 1))
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("apply after the kill: exit %d\n%s", code, out)
	}
	out, _ := e.cli("events", "--object", "Service/web")
	if strings.Contains(out, "cause manual") || !strings.Contains(out, "cause agent") {
		t.Fatalf("the killed agent's restart is not counted as the agent's:\n%s", out)
	}
}

// A multi-document file written in two steps (printf 'm1\n---\n' > f;
// printf 'm2' >> f) ends, between them, in a bare separator: invalid (cut
// short), so m2 keeps running with the same process; apply completes it.
func TestProcessBackendTrailingSeparatorKeepsSecondDocument(t *testing.T) {
	e := newProcEnv(t)
	m1 := strings.Replace(procWeb, "name: web", "name: m1", 1)
	m2 := strings.Replace(procWeb, "name: web", "name: m2", 1)
	e.write("multi.yaml", m1+"---\n"+m2)
	if out, code := e.cli("apply"); code != 0 {
		t.Fatalf("first apply: exit %d\n%s", code, out)
	}
	pid := e.pid("m2.service")
	if pid == 0 {
		t.Fatal("m2 not running after apply")
	}
	e.write("multi.yaml", m1+"---\n")
	out, code := e.cli("apply")
	if code != 1 || !strings.Contains(out, "is it cut short?") || e.pid("m2.service") != pid {
		t.Fatalf("apply of a file cut after its separator: exit %d, m2 pid %d (was %d)\n%s", code, e.pid("m2.service"), pid, out)
	}
	e.write("multi.yaml", m1+"---\n"+m2)
	if out, code := e.cli("apply"); code != 0 || e.pid("m2.service") != pid {
		t.Fatalf("apply of the whole file: exit %d, m2 pid %d (was %d)\n%s", code, e.pid("m2.service"), pid, out)
	}
}
