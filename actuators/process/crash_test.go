package process

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

// markedPIDs lists the live processes carrying dir's supervisor marker
// and unit's name, main processes first (group leaders).
func markedPIDs(t *testing.T, dir, unit string) []int {
	t.Helper()
	id, err := readStateID(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, m := range scanMarked("/proc", []string{id}, func(string, int) bool { return true }) {
		if m.unit == unit && m.pid == m.pgid {
			pids = append(pids, m.pid)
		}
	}
	return pids
}

func readTable(t *testing.T, dir string) map[string]procRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "processes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tab processTable
	if err := json.Unmarshal(b, &tab); err != nil {
		t.Fatal(err)
	}
	out := map[string]procRecord{}
	for _, r := range tab.Processes {
		out[r.Unit] = r
	}
	return out
}

func writeTable(t *testing.T, dir string, rows map[string]procRecord) {
	t.Helper()
	var tab processTable
	for _, r := range rows {
		tab.Processes = append(tab.Processes, r)
	}
	b, _ := json.Marshal(tab)
	if err := os.WriteFile(filepath.Join(dir, "processes.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The agent was killed after the new unit file was written, before the
// restart: the running process is older than the file. Every observer says
// so (StaleProcess) - the offline one diff uses and the live one, after
// adoption - and the supervisor itself leaves the process alone for the
// plan's restart, which then runs the new version.
func TestStaleProcessAfterKillBetweenWriteAndRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seen := filepath.Join(dir, "seen")
	v := func(mode string) *desired.Object {
		return service("web", desired.ServiceSpec{Command: sh(`echo "$MODE" >> ` + seen + `; exec sleep 1000`),
			Environment: map[string]string{"MODE": mode}})
	}
	h1 := newHarness(t, dir, Options{})
	h1.install(v("one"), true)
	h1.run()
	u1 := h1.waitUnit("web.service", "running", isActive)
	if u1.StaleProcess {
		t.Fatalf("fresh process reported stale: %+v", u1)
	}
	// The pass writes the new file, then the agent dies.
	files, err := Render(v("two"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h1.a.Apply(context.Background(), actuators.Step{Op: actuators.OpWriteFile, Unit: "web.service", Data: files[0].Data}); err != nil {
		t.Fatal(err)
	}
	if u := h1.unit("web.service"); !u.StaleProcess || !u.NeedDaemonReload {
		t.Fatalf("live, file written, not reloaded: stale %v reload %v", u.StaleProcess, u.NeedDaemonReload)
	}
	h1.abandon()

	// Offline (diff while no agent runs): still the old process, stale.
	h2 := newHarness(t, dir, Options{})
	st, err := h2.s.Observe(context.Background(), []string{"web.service"})
	if err != nil {
		t.Fatal(err)
	}
	if u := st.Units["web.service"]; !isActive(u) || u.MainPID != u1.MainPID || !u.StaleProcess {
		t.Fatalf("offline: active %v pid %d (want %d) stale %v", isActive(u), u.MainPID, u1.MainPID, u.StaleProcess)
	}
	// The restarted agent adopts it and does not restart it on its own.
	h2.run()
	u2 := h2.waitUnit("web.service", "adopted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID == u1.MainPID })
	if !u2.StaleProcess || u2.NeedDaemonReload {
		t.Fatalf("live after restart: stale %v reload %v", u2.StaleProcess, u2.NeedDaemonReload)
	}
	if res, err := h2.apply(context.Background(), actuators.Step{Op: actuators.OpRestart, Unit: "web.service"}); err != nil || res != actuators.Changed {
		t.Fatalf("restart: %v %v", res, err)
	}
	u3 := h2.unit("web.service")
	if !isActive(u3) || u3.MainPID == u1.MainPID || u3.StaleProcess {
		t.Fatalf("after restart: pid %d stale %v", u3.MainPID, u3.StaleProcess)
	}
	waitFor(t, "new version's output", func() bool { return len(lines(t, seen)) == 2 })
	if got := strings.Join(lines(t, seen), ","); got != "one,two" {
		t.Fatalf("runs %q, want one,two", got)
	}
	if rec := readTable(t, dir)["web.service"]; rec.SpecHash != fileHash(files[0].Data) || rec.PID != int(u3.MainPID) {
		t.Fatalf("table row %+v, want hash %s", rec, fileHash(files[0].Data))
	}
	// A second restart now would be a lost-restart loop: nothing is stale.
	st, _ = newHarness(t, dir, Options{}).s.Observe(context.Background(), []string{"web.service"})
	if u := st.Units["web.service"]; u.StaleProcess || u.MainPID != u3.MainPID {
		t.Fatalf("offline after restart: %+v", u)
	}
}

// A process adopted from an older file and restarted by its own policy runs
// the new file, and the table records the new hash (not the adopted one).
func TestAdoptedStaleProcessAutoRestartRecordsNewHash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	v := func(mode string) *desired.Object {
		return service("w", desired.ServiceSpec{Command: sh(`exec sleep 1000`), Environment: map[string]string{"MODE": mode},
			Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "0s"}})
	}
	h1 := newHarness(t, dir, Options{})
	h1.install(v("one"), true)
	h1.run()
	u1 := h1.waitUnit("w.service", "running", isActive)
	files, _ := Render(v("two"))
	h1.apply(context.Background(), actuators.Step{Op: actuators.OpWriteFile, Unit: "w.service", Data: files[0].Data})
	h1.abandon()
	h2 := newHarness(t, dir, Options{})
	h2.run()
	h2.waitUnit("w.service", "adopted stale", func(u *observed.Unit) bool { return u.MainPID == u1.MainPID && u.StaleProcess })
	syscallKill(t, int(u1.MainPID))
	u := h2.waitUnit("w.service", "restarted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != u1.MainPID })
	if u.StaleProcess || readTable(t, dir)["w.service"].SpecHash != fileHash(files[0].Data) {
		t.Fatalf("after auto-restart: stale %v, table %+v", u.StaleProcess, readTable(t, dir)["w.service"])
	}
}

// Killed after fork/exec, before the process table got the PID: the row is
// an intent (PID 0). The next agent finds the launch by its INVOCATION_ID and
// adopts it - no second process, same PID.
func TestIntentAdoptedAfterKillBeforeTableWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	h1 := newHarness(t, dir, Options{})
	h1.install(service("svc", desired.ServiceSpec{Command: sh(`echo $$ >> ` + runs + `; exec sleep 1000`)}), true)
	h1.run()
	u1 := h1.waitUnit("svc.service", "running", isActive)
	h1.abandon()
	rows := readTable(t, dir)
	rec := rows["svc.service"]
	if rec.Nonce == "" || rec.PID != int(u1.MainPID) {
		t.Fatalf("table row %+v", rec)
	}
	rec.PID, rec.PGID, rec.StartTime = 0, 0, 0
	rows["svc.service"] = rec
	writeTable(t, dir, rows)
	os.Remove(filepath.Join(dir, "status.json"))

	// diff (offline) already sees it running.
	st, _ := newHarness(t, dir, Options{}).s.Observe(context.Background(), []string{"svc.service"})
	if u := st.Units["svc.service"]; !isActive(u) || u.MainPID != u1.MainPID {
		t.Fatalf("offline with an intent: %+v", u)
	}
	h2 := newHarness(t, dir, Options{})
	h2.run()
	u2 := h2.waitUnit("svc.service", "adopted", isActive)
	if u2.MainPID != u1.MainPID {
		t.Fatalf("pid %d, want the launched %d", u2.MainPID, u1.MainPID)
	}
	if got := markedPIDs(t, dir, "svc.service"); len(got) != 1 || got[0] != int(u1.MainPID) {
		t.Fatalf("processes of svc: %v", got)
	}
	if n := len(lines(t, runs)); n != 1 {
		t.Fatalf("ran %d times", n)
	}
	if r := readTable(t, dir)["svc.service"]; r.PID != int(u1.MainPID) || r.StartTime == 0 {
		t.Fatalf("intent not resolved in the table: %+v", r)
	}
}

// An intent whose fork never happened (killed before it) names nothing:
// the unit is started once.
func TestIntentWithoutProcessStartsOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	h1 := newHarness(t, dir, Options{})
	h1.install(service("svc", desired.ServiceSpec{Command: sh(`echo $$ >> ` + runs + `; exec sleep 1000`)}), true)
	writeTable(t, dir, map[string]procRecord{"svc.service": {Unit: "svc.service", Nonce: newNonce(), Started: 1,
		Stdout: filepath.Join(dir, "run", "svc.service.x.out"), Stderr: filepath.Join(dir, "run", "svc.service.x.err")}})
	h1.run()
	h1.waitUnit("svc.service", "running", isActive)
	waitFor(t, "one run", func() bool { return len(lines(t, runs)) == 1 })
	if got := markedPIDs(t, dir, "svc.service"); len(got) != 1 {
		t.Fatalf("processes of svc: %v", got)
	}
}

// A process of ours that no table row accounts for (its row lost) is a
// stray: the next agent stops it instead of running a second one beside it.
func TestStrayWithoutTableRowStopped(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h1 := newHarness(t, dir, Options{})
	h1.install(service("svc", desired.ServiceSpec{Command: sh(`exec sleep 1000`)}), true)
	h1.run()
	u1 := h1.waitUnit("svc.service", "running", isActive)
	h1.abandon()
	writeTable(t, dir, map[string]procRecord{})
	os.Remove(filepath.Join(dir, "status.json"))
	h2 := newHarness(t, dir, Options{})
	h2.run()
	u2 := h2.waitUnit("svc.service", "running", isActive)
	if alive(int(u1.MainPID)) || u2.MainPID == u1.MainPID {
		t.Fatalf("stray %d alive %v, now %d", u1.MainPID, alive(int(u1.MainPID)), u2.MainPID)
	}
	if got := markedPIDs(t, dir, "svc.service"); len(got) != 1 || got[0] != int(u2.MainPID) {
		t.Fatalf("processes of svc: %v", got)
	}
}

// Concurrent starts write the table concurrently; the last write must hold
// every row (a slower writer replacing a newer table lost rows, and a lost
// row became an orphan or a duplicate after kill -9).
func TestProcessTableKeepsEveryConcurrentStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, dir, Options{})
	h.run()
	const n = 12
	for i := range n {
		h.install(service(fmt.Sprintf("s%d", i), desired.ServiceSpec{Command: sh(`exec sleep 1000`)}), false)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.a.Apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: fmt.Sprintf("s%d.service", i)})
		}()
	}
	wg.Wait()
	rows := readTable(t, dir)
	for i := range n {
		name := fmt.Sprintf("s%d.service", i)
		u := h.unit(name)
		if r := rows[name]; r.PID == 0 || r.PID != int(u.MainPID) {
			t.Errorf("%s: table row %+v, running pid %d", name, r, u.MainPID)
		}
	}
}

// Children carry the launch markers; systemd's INVOCATION_ID among them.
func TestChildEnvironmentMarkers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	h.run()
	h.install(service("env", desired.ServiceSpec{Command: sh(`exec sleep 1000`), Environment: map[string]string{"INVOCATION_ID": "forged"}}), true)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "env.service"})
	u := h.unit("env.service")
	// The child may still be between its fork and its exec, with no
	// environment of its own yet: read until it has one.
	var env []byte
	for deadline := time.Now().Add(5 * time.Second); len(env) == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var err error
		if env, err = os.ReadFile("/proc/" + strconv.Itoa(int(u.MainPID)) + "/environ"); err != nil {
			t.Fatal(err)
		}
	}
	rec := readTable(t, h.dir)["env.service"]
	for _, want := range []string{"INVOCATION_ID=" + rec.Nonce, "RESIL_UNIT=env.service", "RESIL_SUPERVISOR=" + h.s.id} {
		if !bytes.Contains(env, append([]byte(want), 0)) && !bytes.HasSuffix(env, []byte(want)) {
			t.Errorf("environment lacks %s: %q", want, env)
		}
	}
}

// Leftovers of an agent killed mid-write are removed on start.
func TestLeftoverTempFilesRemoved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, dir, Options{})
	junk := []string{filepath.Join(dir, ".processes.json123"), filepath.Join(dir, "status.json.tmp"),
		filepath.Join(dir, "units", ".web.service987"), filepath.Join(dir, "run", "gone.service.abc.out")}
	for _, f := range junk {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Files of others in the shared state dir: the agent's last good
	// objects being written right now (a temp file the supervisor removed
	// made that write fail, found by a loaded test run).
	others := []string{filepath.Join(dir, ".lastgood.json4242"), filepath.Join(dir, ".events.db123")}
	for _, f := range others {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h.run()
	for _, f := range junk {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
	for _, f := range others {
		if _, err := os.Lstat(f); err != nil {
			t.Errorf("the supervisor removed another writer's file %s: %v", f, err)
		}
	}
}

// The start's cleanup runs while adopted units already write the table:
// the temporary file of a write under way is not a leftover (CI saw an
// adopted process's table write fail with ENOENT at its rename, and the
// table kept the old row).
func TestLeftoverCleanupSparesWritesUnderWay(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, dir, Options{})
	path := filepath.Join(dir, "processes.json")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				h.s.removeLeftovers(nil)
			}
		}
	}()
	failed := 0
	for range 300 {
		if err := h.s.writeFile(path, []byte(`{"processes":[]}`), 0o600); err != nil {
			failed++
		}
	}
	close(stop)
	wg.Wait()
	if failed > 0 {
		t.Fatalf("%d of 300 writes failed while the cleanup ran", failed)
	}
}

// A table write that failed is tried again on its own: the file does not
// keep a stopped unit's row until some other unit changes.
func TestFailedTableWriteRetried(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, dir, Options{})
	h.install(service("web", desired.ServiceSpec{Command: []string{"/bin/sleep", "1000"}}), true)
	h.run()
	h.waitUnit("web.service", "running", isActive)
	table := filepath.Join(dir, "processes.json")
	if _, ok := readTable(t, dir)["web.service"]; !ok {
		t.Fatal("no row for the running unit")
	}
	// A folder in the table's place: the rename of the next write fails.
	if err := os.Remove(table); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(table, "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpStop, Unit: "web.service"}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(table); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the table written again without the stopped unit's row", func() bool {
		b, err := os.ReadFile(table)
		if err != nil {
			return false
		}
		var pt processTable
		if json.Unmarshal(b, &pt) != nil {
			return false
		}
		for _, r := range pt.Processes {
			if r.Unit == "web.service" {
				return false
			}
		}
		return true
	})
}

// Killed while stopping a process (a stop or a restart, SIGTERM sent, the
// process not yet gone): the row says so, and the next agent finishes the
// stop - its exit is a requested one, not a failure that a restart: never
// policy would leave failed, nor a process left running as if adopted.
func TestStopInterruptedByKillIsFinished(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	v, u1 := killedWhileStopping(t, dir, actuators.OpStop, func(r procRecord) bool { return r.Stopping })
	if !alive(int(u1.MainPID)) {
		t.Fatal("the process ignoring SIGTERM died with the agent")
	}
	// The next agent has a short stop timeout (the file changed meanwhile).
	files, _ := Render(v("100ms"))
	if err := os.WriteFile(filepath.Join(dir, "units", "slow.service"), files[0].Data, 0o644); err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, dir, Options{})
	h2.run()
	h2.waitUnit("slow.service", "stop finished", func(u *observed.Unit) bool { return u.ActiveState == "inactive" || u.ActiveState == "failed" })
	// A command goes through the unit's goroutine after the exit was
	// handled: a start queued behind the stop would have happened by now.
	h2.apply(context.Background(), actuators.Step{Op: actuators.OpResetFailed, Unit: "slow.service"})
	u := h2.unit("slow.service")
	if u.ActiveState != "inactive" || u.Result != ResultSuccess || alive(int(u1.MainPID)) {
		t.Fatalf("after the interrupted stop: %s/%s result %s, pid %d alive %v", u.ActiveState, u.SubState, u.Result, u1.MainPID, alive(int(u1.MainPID)))
	}
	if _, ok := readTable(t, dir)["slow.service"]; ok {
		t.Fatal("row kept after the stop")
	}
}

// A read-only observer (diff) creates nothing: not the state dir, not its
// subfolders.
func TestObserveWithoutStateDirCreatesNothing(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	h := newHarness(t, dir, Options{})
	st, err := h.s.Observe(context.Background(), []string{"web.service"})
	if err != nil {
		t.Fatal(err)
	}
	if u := st.Units["web.service"]; u == nil || u.Exists() {
		t.Fatalf("web: %+v", u)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("state dir created by New/Observe: %v", err)
	}
}

// An intent is resolved by the launch's INVOCATION_ID, or - when the process
// rewrote its environment - by the stdout FIFO it holds; a process that is
// not a group leader (a helper of the launch) is never taken for it.
func TestResolveIntent(t *testing.T) {
	root := t.TempDir()
	stat := func(pid, pgid int, state string) {
		d := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(filepath.Join(d, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("%d (sh) %s 1 %d %d 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 %d 2000000 100 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n", pid, state, pgid, pgid, 1000+pid)
		if err := os.WriteFile(filepath.Join(d, "stat"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stat(500, 500, "S") // the launch's main process, environment rewritten
	stat(501, 500, "S") // its helper, holding the same FIFO
	if err := os.Symlink("/state/run/w.service.x.out", filepath.Join(root, "501", "fd", "1")); err != nil {
		t.Fatal(err)
	}
	rec := procRecord{Unit: "w.service", Nonce: "n1", Stdout: "/state/run/w.service.x.out", Stderr: "/state/run/w.service.x.err"}
	if r := rec; resolveIntent(root, &r, nil, nil) {
		t.Fatalf("a helper holding the FIFO was taken for the main process: %+v", r)
	}
	if err := os.Symlink("/state/run/w.service.x.out", filepath.Join(root, "500", "fd", "1")); err != nil {
		t.Fatal(err)
	}
	if r := rec; !resolveIntent(root, &r, nil, nil) || r.PID != 500 || r.PGID != 500 || r.StartTime != 1500 {
		t.Fatalf("by FIFO: %+v", r)
	}
	marks := []marked{{pid: 700, pgid: 699, nonce: "n1"}, {pid: 699, pgid: 699, start: 42, nonce: "n1"}}
	if r := rec; !resolveIntent(root, &r, marks, nil) || r.PID != 699 || r.StartTime != 42 {
		t.Fatalf("by INVOCATION_ID: %+v", r)
	}
	table := map[string]procRecord{"w.service": rec, "done.service": {Unit: "done.service", PID: 9, Nonce: "n2"}}
	resolveIntents(root, table, marks)
	if table["w.service"].PID != 699 || table["done.service"].PID != 9 {
		t.Fatalf("resolveIntents: %+v", table)
	}

	// A reservation (procRecord.Next) replaces its row only when the row's
	// process is gone and the reserved launch runs.
	if err := os.WriteFile(filepath.Join(root, "stat"), []byte("cpu 1 2 3\nbtime 1700000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	next := &procRecord{Unit: "r.service", Nonce: "n3", NRestarts: 4}
	marks = append(marks, marked{pid: 800, pgid: 800, start: 250, nonce: "n3"})
	table = map[string]procRecord{
		"r.service":    {Unit: "r.service", PID: 12345, StartTime: 7, Nonce: "n0", Next: next}, // gone
		"live.service": {Unit: "live.service", PID: 500, StartTime: 1500, Nonce: "n5", Next: &procRecord{Nonce: "n3"}},
	}
	resolveIntents(root, table, marks)
	if r := table["r.service"]; r.PID != 800 || r.Nonce != "n3" || r.NRestarts != 4 || r.StartTime != 250 || r.Next != nil || r.Started != 1700000002500000 {
		t.Fatalf("reserved launch: %+v", r)
	}
	if r := table["live.service"]; r.PID != 500 || r.Nonce != "n5" {
		t.Fatalf("a running row was replaced by its reservation: %+v", r)
	}
}

// The restart count survives the agent (issue 9 torture suite: a service
// killed while the agent was down, or restarted just before a kill -9 of
// the agent, left no Restarted event): it is kept in the process table,
// restored on adoption, and a process that died while no agent ran is
// started again as an automatic restart on top of it.
func TestRestartCountSurvivesAgent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	obj := service("web", desired.ServiceSpec{Command: []string{"/bin/sleep", "infinity"},
		Restart: &desired.RestartSpec{Policy: desired.RestartAlways}})
	h1 := newHarness(t, dir, Options{})
	h1.install(obj, true)
	h1.run()
	u := h1.waitUnit("web.service", "running", isActive)
	// A crash restarted by the supervisor: NRestarts 1, recorded.
	syscallKill(t, int(u.MainPID))
	first := u.MainPID
	u = h1.waitUnit("web.service", "restarted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != first && u.MainPID != 0 })
	if u.NRestarts != 1 || readTable(t, dir)["web.service"].NRestarts != 1 {
		t.Fatalf("after one crash: NRestarts %d, table %d", u.NRestarts, readTable(t, dir)["web.service"].NRestarts)
	}
	h1.abandon()
	// The next agent adopts it: the count stays 1.
	h2 := newHarness(t, dir, Options{})
	h2.run()
	if u2 := h2.waitUnit("web.service", "adopted", isActive); u2.MainPID != u.MainPID || u2.NRestarts != 1 {
		t.Fatalf("adopted: pid %d (want %d), NRestarts %d (want 1)", u2.MainPID, u.MainPID, u2.NRestarts)
	}
	h2.abandon()
	// It dies while no agent runs: the next agent's start is restart 2.
	syscallKill(t, int(u.MainPID))
	waitFor(t, "process gone", func() bool { return !alive(int(u.MainPID)) })
	h3 := newHarness(t, dir, Options{})
	h3.run()
	u3 := h3.waitUnit("web.service", "started again", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != 0 && alive(int(u.MainPID)) })
	if u3.NRestarts != 2 {
		t.Fatalf("died while no agent ran: NRestarts %d, want 2", u3.NRestarts)
	}
}

// An agent killed during a restart delay: the next agent's start is that
// automatic restart (NRestarts counted), not a fresh start.
func TestKilledDuringRestartDelayCountsRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	obj := service("web", desired.ServiceSpec{Command: []string{"/bin/sleep", "infinity"},
		Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "1h"}})
	h1 := newHarness(t, dir, Options{})
	h1.install(obj, true)
	h1.run()
	u := h1.waitUnit("web.service", "running", isActive)
	syscallKill(t, int(u.MainPID))
	h1.waitUnit("web.service", "waiting to restart", func(u *observed.Unit) bool { return u.SubState == "auto-restart" })
	h1.abandon()
	// The next agent waits the restart delay of the unit file it loads
	// (TestRestartAtRunWaitsDelay): made short here.
	h2 := newHarness(t, dir, Options{})
	h2.install(service("web", desired.ServiceSpec{Command: []string{"/bin/sleep", "infinity"},
		Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "10ms"}}), true)
	h2.run()
	u2 := h2.waitUnit("web.service", "started again", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != 0 && alive(int(u.MainPID)) })
	if u2.NRestarts != 1 {
		t.Fatalf("killed during the restart delay: NRestarts %d, want 1", u2.NRestarts)
	}
}

// slowStopper is a service that ignores SIGTERM (it writes dir/ready once
// its trap is set), so a stop waits for its stop timeout.
func slowStopper(dir string) func(desired.Duration) *desired.Object {
	return func(timeout desired.Duration) *desired.Object {
		return service("slow", desired.ServiceSpec{Command: sh(`trap '' TERM; : > ` + filepath.Join(dir, "ready") + `; while :; do sleep 0.05; done`),
			StopTimeout: timeout, Restart: &desired.RestartSpec{Policy: desired.RestartNever}})
	}
}

// killedWhileStopping runs slowStopper under an agent, applies op (stop or
// restart), and kills the agent (abandons it) once the table row satisfies
// recorded; the process, ignoring SIGTERM, outlives it. It returns the
// service's constructor and the unit as the first agent last saw it.
func killedWhileStopping(t *testing.T, dir string, op actuators.Op, recorded func(procRecord) bool) (func(desired.Duration) *desired.Object, *observed.Unit) {
	t.Helper()
	v := slowStopper(dir)
	h1 := newHarness(t, dir, Options{})
	h1.install(v("1h"), true)
	h1.run()
	u1 := h1.waitUnit("slow.service", "running", isActive)
	waitFor(t, "trap set", func() bool { _, err := os.Stat(filepath.Join(dir, "ready")); return err == nil })
	done := make(chan error, 1)
	go func() {
		_, err := h1.a.Apply(context.Background(), actuators.Step{Op: op, Unit: "slow.service"})
		done <- err
	}()
	waitFor(t, string(op)+" recorded", func() bool { return recorded(readTable(t, dir)["slow.service"]) })
	h1.abandon()
	<-done
	return v, u1
}

// An agent killed between forking an automatic restart and writing its PID
// leaves the row of the process that exited, with the reservation of that
// restart (procRecord.Next): it carries the restart's launch ID and count,
// so the next agent adopts the launch as restart 1, not as a stray or a
// process that started with no restart (the restart ledger would lose it;
// found by the torture suite). The first start, not an automatic restart,
// writes an intent row before its fork instead.
func TestReservationCarriesRestartCount(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	obj := service("web", desired.ServiceSpec{Command: []string{"/bin/sleep", "infinity"},
		Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "10ms"}})
	h1 := newHarness(t, dir, Options{})
	var mu sync.Mutex
	var atFork []procRecord
	h1.s.beforeFork = func(unit string) {
		rec := readTable(t, dir)[unit]
		mu.Lock()
		atFork = append(atFork, rec)
		mu.Unlock()
	}
	h1.install(obj, true)
	h1.run()
	u := h1.waitUnit("web.service", "running", isActive)
	first := u.MainPID
	syscallKill(t, int(first))
	u = h1.waitUnit("web.service", "restarted", func(u *observed.Unit) bool { return isActive(u) && u.MainPID != first && u.MainPID != 0 })
	h1.abandon()
	mu.Lock()
	got := append([]procRecord(nil), atFork...)
	mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d forks seen, want 2 (start, restart): %+v", len(got), got)
	}
	if got[0].PID != 0 || got[0].NRestarts != 0 {
		t.Fatalf("the first start's row at its fork: %+v; want an intent (pid 0)", got[0])
	}
	row := got[1]
	if row.PID != int(first) || row.Next == nil || row.Next.NRestarts != 1 {
		t.Fatalf("the automatic restart's row at its fork: %+v (next %+v); want the exited pid %d reserving restart 1", row, row.Next, first)
	}
	after := readTable(t, dir)["web.service"]
	if after.PID != int(u.MainPID) || after.Nonce != row.Next.Nonce || after.Stdout != row.Next.Stdout || after.Next == nil || after.Next.NRestarts != 2 {
		t.Fatalf("row after the restart: %+v; want pid %d, the reserved launch, and restart 2 reserved", after, u.MainPID)
	}
	// The agent dies right after the fork: the table still holds the
	// exited process's row. The next agent finds the reserved launch and
	// keeps the count.
	rows := readTable(t, dir)
	rows["web.service"] = row
	writeTable(t, dir, rows)
	os.Remove(filepath.Join(dir, "status.json"))
	h2 := newHarness(t, dir, Options{})
	h2.run()
	u2 := h2.waitUnit("web.service", "adopted", isActive)
	if u2.MainPID != u.MainPID || u2.NRestarts != 1 {
		t.Fatalf("adopted from the reservation: pid %d (want %d), NRestarts %d (want 1)", u2.MainPID, u.MainPID, u2.NRestarts)
	}
	if d := time.Since(time.UnixMicro(int64(u2.ExecMainStartTimestamp))); d < 0 || d > time.Minute {
		t.Fatalf("adopted launch's start time %v is %v away", u2.ExecMainStartTimestamp, d)
	}
}

// A batch of starts writes its intents in one table write before the
// first fork (preIntents): every main fork finds its intent row in the
// file, with the launch ID the process then runs as, and the units
// without pre-start checks wrote no intent of their own. A start that
// fails before its fork (before or after taking its intent) leaves no
// intent behind.
func TestBatchStartWritesIntentsOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, dir, Options{})
	var mu sync.Mutex
	atFork := map[string]procRecord{}
	writesAtFork := map[string]uint64{}
	h.s.beforeFork = func(unit string) {
		mu.Lock()
		defer mu.Unlock()
		atFork[unit] = readTable(t, dir)[unit]
		writesAtFork[unit] = h.s.tableWrites.Load()
	}
	h.run()
	var steps []actuators.Step
	for i := range 10 {
		h.install(service(fmt.Sprintf("s%d", i), desired.ServiceSpec{Command: sh(`exec sleep 1000`)}), false)
		steps = append(steps, actuators.Step{Op: actuators.OpStart, Unit: fmt.Sprintf("s%d.service", i)})
	}
	h.install(service("checked", desired.ServiceSpec{Command: sh(`exec sleep 1000`),
		PreStart: []desired.Check{{Command: []string{"/bin/true"}}}}), false)
	h.install(service("nobody-here", desired.ServiceSpec{Command: sh(`exec sleep 1000`), User: "resil-no-such-user"}), false)
	h.install(service("no-env", desired.ServiceSpec{Command: sh(`exec sleep 1000`), EnvironmentFiles: []string{filepath.Join(dir, "missing.env")}}), false)
	steps = append(steps, actuators.Step{Op: actuators.OpStart, Unit: "checked.service"}, actuators.Step{Op: actuators.OpStart, Unit: "nobody-here.service"},
		actuators.Step{Op: actuators.OpStart, Unit: "no-env.service"})
	before, ownBefore := h.s.tableWrites.Load(), h.s.ownIntents.Load()
	_, errs := h.a.ApplyBatch(context.Background(), steps)
	if own := h.s.ownIntents.Load() - ownBefore; own != 1 {
		t.Errorf("%d starts wrote their own intent, want 1 (the one with a pre-start check)", own)
	}
	rows := readTable(t, dir)
	for i, st := range steps {
		name := st.Unit
		if name == "nobody-here.service" || name == "no-env.service" {
			if errs[i] == nil {
				t.Errorf("%s: started", name)
			}
			if r, ok := rows[name]; ok {
				t.Errorf("%s: row left after a failed start: %+v", name, r)
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("%s: %v", name, errs[i])
		}
		in, r := atFork[name], rows[name]
		if in.Unit != name || in.PID != 0 || in.Nonce == "" {
			t.Errorf("%s: at its fork the file held %+v, want its intent", name, in)
		}
		if r.PID == 0 || r.Nonce != in.Nonce || r.Stdout != in.Stdout {
			t.Errorf("%s: runs %+v, not the launch of its intent %+v", name, r, in)
		}
		if name != "checked.service" && writesAtFork[name] < before+1 {
			t.Errorf("%s: forked before the batch's intents were written", name)
		}
	}
	for i := range 10 {
		name := fmt.Sprintf("s%d.service", i)
		if w := writesAtFork[name]; w == 0 {
			t.Fatalf("%s: not forked", name)
		}
	}
}

// When the batch's intent write fails, no start forks by those intents,
// and they do not reach the file with a later write either (a start that
// failed before its fork would leave its intent there for good).
func TestBatchIntentsWriteFailedLeavesNoRows(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHarness(t, dir, Options{})
	h.run()
	h.install(service("bad", desired.ServiceSpec{Command: sh(`exec sleep 1000`), User: "resil-no-such-user"}), false)
	h.install(service("good", desired.ServiceSpec{Command: sh(`exec sleep 1000`)}), false)
	// The table cannot be replaced while a non-empty directory has its name.
	table := filepath.Join(dir, "processes.json")
	os.Remove(table)
	if err := os.MkdirAll(filepath.Join(table, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, errs := h.a.ApplyBatch(context.Background(), []actuators.Step{{Op: actuators.OpStart, Unit: "bad.service"}})
	if errs[0] == nil {
		t.Fatal("bad.service started")
	}
	if err := os.RemoveAll(table); err != nil {
		t.Fatal(err)
	}
	if _, errs := h.a.ApplyBatch(context.Background(), []actuators.Step{{Op: actuators.OpStart, Unit: "good.service"}}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	rows := readTable(t, dir)
	if r, ok := rows["bad.service"]; ok {
		t.Errorf("bad.service: an intent no launch used reached the file: %+v", r)
	}
	if rows["good.service"].PID == 0 {
		t.Errorf("good.service: row %+v", rows["good.service"])
	}
}
