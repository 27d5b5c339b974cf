package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/reconcile/store"
)

// Issue 10: the shipped example manifests/examples/postgres (Debian's
// PostgreSQL 15 as user postgres, a worker that waits for it, a persistent
// backup timer) driven through its failure scenarios on real systemd (the
// sandbox) and on the process backend (the agent on this host, loopback,
// a free port). The test's data directory is its own (initdb by the test,
// as user postgres); the host's clusters are never touched.

const (
	pgBin       = "/usr/lib/postgresql/15/bin"
	exampleBase = "/var/lib/resil-pg" // the example's directory, replaced by the test's
	examplePort = "5433"
	exampleDir  = "../manifests/examples/postgres"
)

// requirePostgres gives up through sandbox.Missing (a failure under
// RESIL_E2E_REQUIRE=1) without root, PostgreSQL 15 or its user; `make test`
// installs the package (scripts/test-deps.sh → scripts/postgres-deps.sh).
func requirePostgres(t *testing.T) {
	t.Helper()
	sandbox.RequireRoot(t, "to run postgres as user postgres")
	for _, p := range []string{pgBin + "/postgres", pgBin + "/initdb", "/usr/bin/pg_isready", "/usr/bin/psql", "/usr/bin/pg_dumpall"} {
		sandbox.RequireProgram(t, p, "postgresql")
	}
	if _, err := user.Lookup("postgres"); err != nil {
		sandbox.Missing(t, "user postgres (apt-get install postgresql): %v", err)
	}
}

// pgTemplate is one initdb'd data directory per test binary (initdb is
// slow here); each test copies it. It lives in agentDir, removed by TestMain.
var pgTemplate = sync.OnceValues(func() (string, error) {
	dir := filepath.Join(agentDir, "pg-template")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if out, err := exec.Command("chown", "postgres:postgres", dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("chown: %w: %s", err, out)
	}
	data := filepath.Join(dir, "data")
	cmd := exec.Command("runuser", "-u", "postgres", "--", pgBin+"/initdb", "-D", data, "--auth=trust",
		"--username=postgres", "--no-sync", "--encoding=UTF8", "--locale=C.UTF-8")
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %w: %s", err, out)
	}
	return data, nil
})

// newPGBase makes a directory the postgres user owns, with data/ (a copy
// of the template), run/ and backup/.
func newPGBase(t *testing.T, base string) {
	t.Helper()
	tmpl, err := pgTemplate()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"run", "backup"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-a", tmpl, filepath.Join(base, "data")).CombinedOutput(); err != nil {
		t.Fatalf("copy data dir: %v: %s", err, out)
	}
	if out, err := exec.Command("chown", "-R", "postgres:postgres", base).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
}

// pgHost is one backend running the example.
type pgHost struct {
	t        *testing.T
	name     string
	base     string // the example's directory as the agent sees it
	hostBase string // the same on the host
	port     string
	write    func(rel, content string)
	remove   func(rel string)
	cli      func(args ...string) (string, int)
	kill9    func(pid int)
	stamp    func(timer string, at time.Time)
}

// example reads a shipped manifest with the test's directory and port.
func (h *pgHost) example(file string) string {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(exampleDir, file))
	if err != nil {
		h.t.Fatal(err)
	}
	s := strings.ReplaceAll(string(data), exampleBase, h.base)
	return strings.ReplaceAll(s, `"`+examplePort+`"`, `"`+h.port+`"`)
}

func (h *pgHost) read(rel string) string {
	data, _ := os.ReadFile(filepath.Join(h.hostBase, rel))
	return string(data)
}

func (h *pgHost) postmasterPID() int {
	l := strings.SplitN(h.read("data/postmaster.pid"), "\n", 2)
	pid, _ := strconv.Atoi(strings.TrimSpace(l[0]))
	return pid
}

// ready runs pg_isready on the host against the database (inside the
// sandbox that is its own network namespace, so through the agent side).
func (h *pgHost) ready() bool {
	_, code := h.cli("__pg_isready")
	return code == 0
}

// workerLog returns the worker's lines: "start ready|not-ready T", "up T", "down T".
func (h *pgHost) workerLog() [][2]string {
	var out [][2]string
	for _, l := range strings.Split(strings.TrimSpace(h.read("worker.log")), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 {
			out = append(out, [2]string{strings.Join(f[:len(f)-1], " "), f[len(f)-1]})
		}
	}
	return out
}

func (h *pgHost) workerStarts() []string {
	var s []string
	for _, l := range h.workerLog() {
		if strings.HasPrefix(l[0], "start") {
			s = append(s, l[0])
		}
	}
	return s
}

// upAfter is when the worker last came back up after t0 (zero if it has
// not, or was never down after t0).
func (h *pgHost) upAfter(t0 time.Time) time.Time {
	var down bool
	var up time.Time
	for _, l := range h.workerLog() {
		ts := stamps(h.t, []string{l[1]})[0]
		if ts.Before(t0) {
			continue
		}
		switch l[0] {
		case "down":
			down, up = true, time.Time{}
		case "up":
			if down {
				up = ts
			}
		}
	}
	return up
}

func (h *pgHost) status(name string) store.ObjectStatus {
	h.t.Helper()
	out, _ := h.cli("status", "-o", "json", name)
	var rep struct {
		Objects []store.ObjectStatus `json:"objects"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Objects) != 1 {
		return store.ObjectStatus{}
	}
	return rep.Objects[0]
}

func (h *pgHost) events(name string) []store.StoredEvent {
	h.t.Helper()
	out, code := h.cli("events", "-o", "json", "--object", name)
	if code != 0 {
		h.t.Fatalf("events exit %d: %s", code, out)
	}
	var evs []store.StoredEvent
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		h.t.Fatalf("events: %v\n%s", err, out)
	}
	return evs
}

func (h *pgHost) eventCount(name, reason, substr string) int {
	n := 0
	for _, ev := range h.events(name) {
		if string(ev.Reason) == reason && strings.Contains(ev.Message, substr) {
			n += ev.Count
		}
	}
	return n
}

func (h *pgHost) eventually(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: timed out after %s waiting for %s", h.name, timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// converged: scenario 6 - diff has nothing to do and status exits 0.
func (h *pgHost) converged(after string) {
	h.t.Helper()
	var out string
	var code int
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, code = h.cli("diff")
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: after %s: diff exit %d:\n%s", h.name, after, code, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for {
		out, code = h.cli("status")
		if code == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: after %s: status exit %d:\n%s", h.name, after, code, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// restartsOnEdit edits pg.yaml with edit and checks the database restarts
// exactly want times (0 or 1).
func (h *pgHost) restartsOnEdit(what string, want int, edit func(string) string) {
	h.t.Helper()
	before := h.postmasterPID()
	agentRestarts := h.eventCount("pg", "Restarted", "")
	h.write("pg.yaml", edit(h.example("pg.yaml")))
	if want == 1 {
		h.eventually("pg restarted after the "+what+" edit", 30*time.Second, func() bool {
			p := h.postmasterPID()
			return p != 0 && p != before && h.ready()
		})
	}
	after := h.postmasterPID()
	// diff shows the edit until the agent applied it.
	h.converged(what + " edit")
	time.Sleep(2500 * time.Millisecond) // more passes: no further restart
	if p := h.postmasterPID(); p != after || (want == 0 && p != before) {
		h.t.Errorf("%s: %s edit: database pid %d → %d → %d, want %d restart(s)", h.name, what, before, after, p, want)
	}
	if n := h.eventCount("pg", "Restarted", "") - agentRestarts; n != want {
		h.t.Errorf("%s: %s edit: %d Restarted events, want %d", h.name, what, n, want)
	}
}

func runPGScenarios(t *testing.T, h *pgHost, startAgent func()) {
	// Two backup timers from the example: both missed a run due 2 minutes
	// ago (their stamps say they last ran 10 minutes ago, the host was
	// "down" since); pg-backup (maxLateness 1h) catches up once,
	// pg-backup-late (maxLateness 1m) skips it (scenario 4).
	due := time.Now().UTC().Add(-2 * time.Minute)
	backup := h.example("pg-backup.yaml")
	backup = strings.Replace(backup, `schedule: ["*-*-* 03:00:00"]`, fmt.Sprintf(`schedule: ["*-*-* *:%02d:%02d UTC"]`, due.Minute(), due.Second()), 1)
	backup = strings.Replace(backup, "delay: 10s", "delay: 1s", 1)
	backup = strings.Replace(backup, "persistent: true", "persistent: true\n  accuracy: 1ms", 1)
	late := strings.Replace(backup, "name: pg-backup", "name: pg-backup-late", 1)
	late = strings.Replace(late, "maxLateness: 6h", "maxLateness: 1m", 1)
	late = strings.ReplaceAll(late, "/backup/runs", "/backup/runs-late")
	backup = strings.Replace(backup, "maxLateness: 6h", "maxLateness: 1h", 1)
	// The frequent dump: every 3 s with retry (runs until scenario 3).
	frequent := strings.Replace(backup, "name: pg-backup", "name: pg-dump", 1)
	frequent = strings.Replace(frequent, fmt.Sprintf(`schedule: ["*-*-* *:%02d:%02d UTC"]`, due.Minute(), due.Second()), `schedule: ["*:*:0/3"]`, 1)
	frequent = strings.Replace(frequent, "  persistent: true\n", "", 1)
	frequent = strings.Replace(frequent, "  maxLateness: 1h\n", "", 1)
	frequent = strings.Replace(frequent, "retry: {attempts: 5, delay: 1s}", "retry: {attempts: 3, delay: 1s}", 1)
	frequent = strings.ReplaceAll(frequent, "/backup/runs", "/backup/frequent-runs")
	frequent = strings.ReplaceAll(frequent, "/backup/all.sql", "/backup/frequent.sql")
	h.write("pg.yaml", h.example("pg.yaml"))
	h.write("pg-worker.yaml", h.example("pg-worker.yaml"))
	h.write("pg-backup.yaml", backup)
	h.write("pg-backup-late.yaml", late)
	h.write("pg-dump.yaml", frequent)
	h.stamp("pg-backup.timer", time.Now().Add(-10*time.Minute))
	h.stamp("pg-backup-late.timer", time.Now().Add(-10*time.Minute))

	// 1. Cold start: the worker's preStart waits for the database; the
	// worker never starts before it is ready.
	start := time.Now()
	startAgent()
	h.eventually("the worker up", 60*time.Second, func() bool { return len(h.workerStarts()) > 0 && h.ready() })
	t.Logf("%s: cold start → database ready and worker started in %s", h.name, time.Since(start).Round(10*time.Millisecond))
	if s := h.workerStarts(); len(s) != 1 || s[0] != "start ready" {
		t.Errorf("%s: worker starts %q, want one start with the database ready", h.name, s)
	}
	// 4. The missed backup ran once (after retries while the database
	// started); the one later than maxLateness was skipped and reported.
	h.eventually("the catch-up backup", 30*time.Second, func() bool { return h.read("backup/runs") != "" })
	h.converged("cold start")
	time.Sleep(2 * time.Second)
	if n := len(strings.Fields(h.read("backup/runs"))); n != 1 {
		t.Errorf("%s: catch-up backup ran %d times, want once", h.name, n)
	}
	if dump := h.read("backup/all.sql"); !strings.Contains(dump, "PostgreSQL database cluster dump") {
		t.Errorf("%s: backup/all.sql is not a pg_dumpall dump (%d bytes)", h.name, len(dump))
	}
	if r := h.read("backup/runs-late"); r != "" {
		t.Errorf("%s: a backup later than maxLateness ran: %q", h.name, r)
	}
	if h.eventCount("pg-backup", "TimerCatchUp", "") == 0 {
		t.Errorf("%s: no TimerCatchUp event for pg-backup", h.name)
	}
	if h.eventCount("pg-backup-late", "TimerMissed", "") == 0 {
		t.Errorf("%s: no TimerMissed event for pg-backup-late", h.name)
	}

	// 2. kill -9 of postgres: restarted per policy (cause auto in the
	// ledger); the worker recovers on its own, without a restart.
	pid := h.postmasterPID()
	killed := time.Now()
	h.kill9(pid)
	var spawned time.Duration // the new postmaster wrote its pid file
	h.eventually("postgres back", 30*time.Second, func() bool {
		p := h.postmasterPID()
		if p != 0 && p != pid && spawned == 0 {
			spawned = time.Since(killed)
		}
		return p != 0 && p != pid && h.ready()
	})
	back := time.Since(killed)
	h.eventually("the worker up again", 30*time.Second, func() bool { return !h.upAfter(killed).IsZero() })
	t.Logf("%s: kill -9 postgres → new postmaster after ≤ %s, accepting connections after ≤ %s, worker healthy again after %s",
		h.name, spawned.Round(10*time.Millisecond), back.Round(10*time.Millisecond), h.upAfter(killed).Sub(killed).Round(10*time.Millisecond))
	h.eventually("Restarted (cause auto) in the ledger", 30*time.Second, func() bool { return h.eventCount("pg", "Restarted", "cause auto") == 1 })
	if s := h.workerStarts(); len(s) != 1 {
		t.Errorf("%s: the worker was restarted: %q", h.name, s)
	}
	// The frequent dump rode through the outage: every 3 s slot from the
	// second one after the database was back has its dump (issue 10: with
	// retry as restarts, systemd refused most activations, start-limit-hit).
	from := killed.Add(back).Truncate(3 * time.Second).Add(6 * time.Second)
	to := from.Add(12 * time.Second)
	time.Sleep(time.Until(to.Add(1500 * time.Millisecond)))
	runs := stamps(t, strings.Fields(h.read("backup/frequent-runs")))
	var missing []string
	n := 0
	for slot := from; slot.Before(to); slot = slot.Add(3 * time.Second) {
		found := false
		for _, r := range runs {
			if !r.Before(slot) && r.Before(slot.Add(3*time.Second)) {
				found = true
			}
		}
		if found {
			n++
		} else {
			missing = append(missing, slot.Format("15:04:05"))
		}
	}
	t.Logf("%s: pg_dumpall every 3 s with retry: %d of %d scheduled dumps in the 12 s after the database was back (%d dumps in all)", h.name, n, n+len(missing), len(runs))
	if len(missing) > 0 {
		t.Errorf("%s: no dump for the slots %v", h.name, missing)
	}
	h.remove("pg-dump.yaml")
	h.converged("kill -9")

	// 3. A bad setting in a drop-in: postgres crash-loops into its start
	// limit; Failed, one RestartStorm, one alert hook run. Removing the
	// drop-in converges again.
	tune := strings.Replace(h.example("pg.yaml"), "unix_socket_directories=", "work_mem=plenty\n    - -c\n    - unix_socket_directories=", 1)
	tune = "spec:\n" + tune[strings.Index(tune, "  command:"):strings.Index(tune, "  restart:")]
	h.write("pg.d/50-tune.yaml", tune)
	h.eventually("pg Failed", 60*time.Second, func() bool { return h.status("pg").State == "Failed" })
	st := h.status("pg")
	t.Logf("%s: bad setting → %s, %s", h.name, st.Observed, st.Message)
	h.eventually("one RestartStorm", 20*time.Second, func() bool { return h.eventCount("pg", "RestartStorm", "") >= 1 })
	h.eventually("the alert hook", 20*time.Second, func() bool { return strings.TrimSpace(h.read("alerts.jsonl")) != "" })
	time.Sleep(3 * time.Second) // more passes: no second storm, no restart of a failed unit
	if n := h.eventCount("pg", "RestartStorm", ""); n != 1 {
		t.Errorf("%s: %d RestartStorm events, want 1", h.name, n)
	}
	if hooks := strings.Split(strings.TrimSpace(h.read("alerts.jsonl")), "\n"); len(hooks) != 1 || !strings.Contains(hooks[0], `"RestartStorm"`) {
		t.Errorf("%s: alert hook runs, want one RestartStorm:\n%s", h.name, h.read("alerts.jsonl"))
	}
	if _, code := h.cli("status"); code != 1 {
		t.Errorf("%s: status exit %d while pg failed, want 1", h.name, code)
	}
	if s := h.status("pg"); s.State != "Failed" {
		t.Errorf("%s: pg %s after more passes: the agent restarted a failed unit", h.name, s.State)
	}
	fixed := time.Now()
	h.remove("pg.d/50-tune.yaml")
	h.eventually("pg running again", 60*time.Second, h.ready)
	h.eventually("the worker up again", 30*time.Second, func() bool { return !h.upAfter(fixed.Add(-30 * time.Second)).IsZero() })
	h.converged("drop-in removed")
	if s := h.workerStarts(); len(s) != 1 {
		t.Errorf("%s: the worker was restarted: %q", h.name, s)
	}

	// 5. Edits that change only the description or the restart delay
	// apply on reload: the database keeps running (same postmaster PID, no
	// Restarted event) on both backends. The process backend's unit carries
	// no description, so that edit changes no file there at all.
	h.restartsOnEdit("description", 0, func(s string) string {
		return strings.Replace(s, "description: PostgreSQL 15 (resil example)", "description: PostgreSQL 15 (resil example, edited)", 1)
	})
	h.restartsOnEdit("restart delay", 0, func(s string) string { return strings.Replace(s, "delay: 500ms", "delay: 700ms", 1) })
	if s := h.workerStarts(); len(s) != 1 {
		t.Errorf("%s: the worker was restarted: %q", h.name, s)
	}
	h.converged("edits")
}

// On real systemd (the sandbox masks the host's postgresql units).
func TestPostgresScenariosSystemd(t *testing.T) {
	requirePostgres(t)
	e := newEnv(t)
	if err := os.Chmod(e.host, 0o755); err != nil {
		t.Fatal(err)
	}
	hostBase := filepath.Join(e.host, "pg")
	newPGBase(t, hostBase)
	h := &pgHost{t: t, name: "systemd", base: hostMount + "/pg", hostBase: hostBase, port: examplePort,
		write: e.write, remove: e.remove}
	h.cli = func(args ...string) (string, int) {
		if len(args) == 1 && args[0] == "__pg_isready" {
			_, err := e.sb.Run(e.ctx, "/usr/bin/pg_isready", "-q", "-h", "127.0.0.1", "-p", h.port)
			if err != nil {
				return "", 1
			}
			return "", 0
		}
		out, errOut, code := e.reconciler(args...)
		return out + errOut, code
	}
	h.kill9 = func(pid int) {
		if _, err := e.sb.Run(e.ctx, "/bin/kill", "-9", strconv.Itoa(pid)); err != nil {
			t.Fatalf("kill -9 %d: %v", pid, err)
		}
	}
	h.stamp = func(timer string, at time.Time) {
		stamp := "/var/lib/systemd/timers/stamp-" + timer
		if _, err := e.sb.Run(e.ctx, "/bin/sh", "-c", "mkdir -p /var/lib/systemd/timers && touch -d @"+strconv.FormatInt(at.Unix(), 10)+" "+stamp); err != nil {
			t.Fatal(err)
		}
	}
	runPGScenarios(t, h, func() { e.startAgent() })
	// What systemd itself says about the worker: never restarted.
	if p := e.show("pg-worker.service", "NRestarts"); p["NRestarts"] != "0" {
		t.Errorf("pg-worker NRestarts %s", p["NRestarts"])
	}
}

// On the process backend: the agent on this host, postgres on 127.0.0.1
// at a free port, its socket in the test's directory.
func TestPostgresScenariosProcess(t *testing.T) {
	requirePostgres(t)
	root, err := os.MkdirTemp("", "resil-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	m, state, base := filepath.Join(root, "m"), filepath.Join(root, "state"), filepath.Join(root, "pg")
	if err := os.MkdirAll(m, 0o755); err != nil {
		t.Fatal(err)
	}
	newPGBase(t, base)
	port := freePort(t)
	bin := filepath.Join(agentDir, "reconciler")
	h := &pgHost{t: t, name: "process", base: base, hostBase: base, port: port}
	h.write = func(rel, content string) {
		p := filepath.Join(m, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(filepath.Dir(p), ".tmp-"+filepath.Base(p))
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
	h.remove = func(rel string) {
		if err := os.Remove(filepath.Join(m, rel)); err != nil {
			t.Fatal(err)
		}
	}
	h.cli = func(args ...string) (string, int) {
		var cmd *exec.Cmd
		if len(args) == 1 && args[0] == "__pg_isready" {
			cmd = exec.Command("/usr/bin/pg_isready", "-q", "-h", "127.0.0.1", "-p", port)
		} else {
			cmd = exec.Command(bin, append(args, "--backend", "process", "--manifests", m, "--state-dir", state,
				"--owner-check", "off", "--log-format", "console")...)
		}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return string(out), code
	}
	h.kill9 = func(pid int) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", pid, err)
		}
	}
	h.stamp = func(timer string, at time.Time) {
		p := filepath.Join(state, "timers", timer+".stamp")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(at.Format(time.RFC3339Nano)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var a *procAgent
	// --stop-on-exit: the database and worker stop with the agent at the end.
	runPGScenarios(t, h, func() { a = startProcAgent(t, m, state, "--stop-on-exit") })
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(40 * time.Second):
		t.Fatal("agent did not stop")
	}
	if pid := h.postmasterPID(); pid != 0 && alive(pid) {
		t.Errorf("postgres %d still runs after the agent stopped it", pid)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
