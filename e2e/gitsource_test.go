package e2e

// Issue 15's git source end to end: process-backend agents on the host
// (--source git) following a local repository over file:// (no network):
// signed commits deployed and converged, unsigned, invalid and force-pushed
// ones refused as a whole, per-host paths, and kill -9 around the swap of
// the manifests link.

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"resil.dev/resil/desired/gitsource/gittest"
)

// gitRepo is the shared test repository (gittest.Repo).
type gitRepo = gittest.Repo

func newGitRepo(t *testing.T) *gitRepo { return gittest.New(t) }

func newSSHKey(t *testing.T, name string) string { return gittest.SSHKey(t, name) }

func allowedSignersFile(t *testing.T, principal, key string) string {
	return gittest.AllowedSigners(t, map[string]string{principal: key})
}

// markerService is a service that writes rev to marker/NAME when it
// starts; a new rev changes its command, so it restarts.
func markerService(name, rev, marker string) string {
	return fmt.Sprintf(`apiVersion: resil.dev/v1
kind: Service
metadata: {name: %s}
spec:
  command: ["/bin/sh", "-c", "echo %s > %s/%s; exec sleep infinity"]
  environment: {REV: "%s"}
`, name, rev, marker, name, rev)
}

func readMarker(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return strings.TrimSpace(string(b))
}

// gitStatus is what `status -o json` says of the git source.
type gitStatus struct {
	Revision *struct {
		Commit string `json:"commit"`
		Signer string `json:"signer"`
	} `json:"revision"`
	LastFetch *struct {
		Outcome string `json:"outcome"`
		Head    string `json:"head"`
		Error   string `json:"error"`
	} `json:"lastFetch"`
}

func readGitStatus(t *testing.T, state string) gitStatus {
	t.Helper()
	out, _, _ := runCLI(t, exec.Command(filepath.Join(agentDir, "reconciler"), "status", "--state-dir", state, "-o", "json"))
	var st gitStatus
	_ = json.Unmarshal([]byte(out), &st)
	return st
}

// syncNow runs `reconciler sync` and returns its output and exit code.
func syncNow(t *testing.T, state string) (string, int) {
	t.Helper()
	out, errOut, code := runCLI(t, exec.Command(filepath.Join(agentDir, "reconciler"), "sync", "--state-dir", state, "--wait", "60s"))
	return out + errOut, code
}

// The life of a verified ref: a signed commit is deployed and converged;
// an unsigned commit, a commit whose manifests do not validate (one valid
// change beside one invalid file: neither is deployed) and a force-push
// are refused and the host keeps the previous revision as a whole; a signed
// descendant is deployed again. Fetches are driven by `reconciler sync`.
func TestGitSourceVerifiedRevisions(t *testing.T) {
	r := newGitRepo(t)
	alice, mallory := newSSHKey(t, "alice"), newSSHKey(t, "mallory")
	signers := allowedSignersFile(t, "alice@example.com", alice)
	dir := t.TempDir()
	marker, state := filepath.Join(dir, "marker"), filepath.Join(dir, "state")
	if err := os.Mkdir(marker, 0o755); err != nil {
		t.Fatal(err)
	}
	c1 := r.Commit("web and db v1", alice, map[string]string{
		"hosts/common/web.yaml": markerService("web", "1", marker),
		"hosts/common/db.yaml":  markerService("db", "1", marker),
	})
	start := time.Now()
	startProcAgent(t, filepath.Join(dir, "unused"), state, "--stop-on-exit", "--metrics-addr", "",
		"--source", "git", "--repo", r.URL(), "--ref", "main", "--path", "hosts/common", "--verify-signers", signers, "--fetch-interval", "1h")
	waitFor(t, "revision 1 converged", 60*time.Second, func() bool {
		return readMarker(marker, "web") == "1" && readMarker(marker, "db") == "1"
	})
	t.Logf("agent start → first signed revision converged: %s", time.Since(start).Round(time.Millisecond))
	if st := readGitStatus(t, state); st.Revision == nil || st.Revision.Commit != c1 || st.Revision.Signer != "alice@example.com" {
		t.Fatalf("status revision %+v, want %s signed by alice", st.Revision, c1)
	}

	// Signed v2: fetch → converged latency.
	r.Commit("web v2", alice, map[string]string{"hosts/common/web.yaml": markerService("web", "2", marker)})
	start = time.Now()
	if out, code := syncNow(t, state); code != 0 || !strings.Contains(out, "fetch: deployed") {
		t.Fatalf("sync: exit %d\n%s", code, out)
	}
	waitFor(t, "revision 2 converged", 60*time.Second, func() bool { return readMarker(marker, "web") == "2" })
	t.Logf("sync (fetch) → signed revision converged: %s", time.Since(start).Round(time.Millisecond))
	c2 := r.Git("rev-parse", "HEAD")

	refused := []struct {
		name, want, reason string
		commit             func() string
	}{
		{"unsigned", "not signed", "rejected", func() string {
			return r.Commit("web v3 unsigned", "", map[string]string{"hosts/common/web.yaml": markerService("web", "3", marker)})
		}},
		{"foreign key", "not in", "rejected", func() string {
			return r.Commit("web v3 mallory", mallory, map[string]string{"hosts/common/web.yaml": markerService("web", "3", marker)})
		}},
		{"invalid", "hosts/common/bad.yaml:", "invalid", func() string {
			return r.Commit("web v3 and a broken file", alice, map[string]string{
				"hosts/common/web.yaml": markerService("web", "3", marker),
				"hosts/common/bad.yaml": "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: bad}\nspec: {command: [relative]}\n",
			})
		}},
		{"force-push", "does not descend", "rejected", func() string {
			r.Git("reset", "--quiet", "--hard", c2+"~1")
			return r.Commit("web v3 rewritten", alice, map[string]string{"hosts/common/web.yaml": markerService("web", "3", marker)})
		}},
	}
	for _, tc := range refused {
		head := tc.commit()
		out, code := syncNow(t, state)
		if code != 1 || !strings.Contains(out, "fetch: "+tc.reason) || !strings.Contains(out, tc.want) {
			t.Fatalf("%s: sync exit %d, want 1 with %q and %q:\n%s", tc.name, code, tc.reason, tc.want, out)
		}
		st := readGitStatus(t, state)
		if st.Revision == nil || st.Revision.Commit != c2 || st.LastFetch == nil || st.LastFetch.Head != head {
			t.Fatalf("%s: status %+v %+v, want revision %s kept", tc.name, st.Revision, st.LastFetch, c2)
		}
		// A wrong deployment would show within this; the host is unchanged.
		time.Sleep(300 * time.Millisecond)
		if w, d := readMarker(marker, "web"), readMarker(marker, "db"); w != "2" || d != "1" {
			t.Fatalf("%s: markers web=%s db=%s, want the previous revision (2, 1)", tc.name, w, d)
		}
		if _, err := os.Stat(filepath.Join(state, "git", "manifests", "bad.yaml")); err == nil {
			t.Fatalf("%s: a file of the refused revision is deployed", tc.name)
		}
		t.Logf("%s refused: %s", tc.name, strings.SplitN(out, "\n", 2)[0])
	}
	events, _, _ := runCLI(t, exec.Command(filepath.Join(agentDir, "reconciler"), "events", "--state-dir", state))
	for _, reason := range []string{"RevisionDeployed", "RevisionRejected", "RevisionInvalid"} {
		if !strings.Contains(events, reason) {
			t.Errorf("events lack %s:\n%s", reason, events)
		}
	}
	// Back on a signed descendant of the deployed commit (the rewritten
	// branch is reset to it first).
	r.Git("reset", "--quiet", "--hard", c2)
	r.Commit("web v4", alice, map[string]string{"hosts/common/web.yaml": markerService("web", "4", marker), "hosts/common/db.yaml": markerService("db", "4", marker)})
	if out, code := syncNow(t, state); code != 0 {
		t.Fatalf("sync: exit %d\n%s", code, out)
	}
	waitFor(t, "revision 4 converged", 60*time.Second, func() bool {
		return readMarker(marker, "web") == "4" && readMarker(marker, "db") == "4"
	})
}

// Two hosts follow the same ref with --path hosts/common --path hosts/NAME
// (--hostname): each runs the common service and its own.
func TestGitSourceHostPaths(t *testing.T) {
	r := newGitRepo(t)
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	if err := os.Mkdir(marker, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, h := range []string{"alpha", "beta"} {
		files["hosts/"+h+"/own.yaml"] = markerService("own-"+h, h, marker)
		files["hosts/common/common-"+h+".yaml"] = markerService("common-"+h, "c", filepath.Join(marker, h))
		if err := os.Mkdir(filepath.Join(marker, h), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.Commit("two hosts", "", files)
	for _, h := range []string{"alpha", "beta"} {
		startProcAgent(t, filepath.Join(dir, "unused"), filepath.Join(dir, "state-"+h), "--stop-on-exit", "--metrics-addr", "",
			"--hostname", h, "--source", "git", "--repo", r.URL(), "--path", "hosts/common", "--path", "hosts/"+h, "--fetch-interval", "200ms")
	}
	waitFor(t, "each host's own service", 60*time.Second, func() bool {
		return readMarker(marker, "own-alpha") == "alpha" && readMarker(marker, "own-beta") == "beta" &&
			readMarker(filepath.Join(marker, "alpha"), "common-alpha") == "c" && readMarker(filepath.Join(marker, "beta"), "common-beta") == "c"
	})
	for h, other := range map[string]string{"alpha": "beta", "beta": "alpha"} {
		if _, err := os.Stat(filepath.Join(dir, "state-"+h, "git", "manifests", "own.yaml")); err != nil {
			t.Errorf("%s: own.yaml not deployed: %v", h, err)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "state-"+h, "git", "manifests", "own.yaml"))
		if strings.Contains(string(b), "own-"+other) {
			t.Errorf("%s runs %s's manifest", h, other)
		}
	}
	// A new commit reaches both hosts by polling (no sync).
	r.Commit("beta v2", "", map[string]string{"hosts/beta/own.yaml": markerService("own-beta", "beta2", marker)})
	start := time.Now()
	waitFor(t, "beta's new revision by polling", 60*time.Second, func() bool { return readMarker(marker, "own-beta") == "beta2" })
	t.Logf("commit → converged by polling (--fetch-interval 200ms): %s", time.Since(start).Round(time.Millisecond))
}

// revisionOf reads the deployed manifests link of a state dir and checks
// it holds one revision whole: every file carries the REV of the commit
// its record names (subject "rev N"). It returns N ("" before any).
func revisionOf(t *testing.T, state string, files int) string {
	t.Helper()
	link := filepath.Join(state, "git", "manifests")
	target, err := os.Readlink(link)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Subject string `json:"subject"`
	}
	b, err := os.ReadFile(filepath.Join(state, "git", target, ".resil-revision.json"))
	if err != nil {
		t.Fatalf("link names %s, which has no revision record: %v", target, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	n := strings.TrimPrefix(rec.Subject, "rev ")
	ents, err := os.ReadDir(filepath.Join(state, "git", target))
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		count++
		data, err := os.ReadFile(filepath.Join(state, "git", target, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), `REV: "`+n+`"`) {
			t.Fatalf("mixed revision: %s holds %s, the record says rev %s:\n%s", target, e.Name(), n, data)
		}
	}
	if count != files {
		t.Fatalf("revision %s (%s) has %d files, want %d", n, target, count, files)
	}
	return n
}

// kill -9 during a checkout swap leaves the previous or the new revision,
// never a mix: first at the exact instant between materialise and swap
// (RESIL_TEST_GIT_CRASH_BEFORE_SWAP), then at random instants of an agent
// deploying a new commit every few milliseconds.
func TestGitSourceKillDuringSwap(t *testing.T) {
	r := newGitRepo(t)
	dir := t.TempDir()
	state, marker := filepath.Join(dir, "state"), filepath.Join(dir, "marker")
	if err := os.Mkdir(marker, 0o755); err != nil {
		t.Fatal(err)
	}
	const nfiles = 6
	rev := func(n int) string {
		files := map[string]string{}
		for i := range nfiles {
			name := fmt.Sprintf("svc%d", i)
			files[name+".yaml"] = markerService(name, strconv.Itoa(n), marker)
		}
		return r.Commit("rev "+strconv.Itoa(n), "", files)
	}
	rev(1)
	args := []string{"--metrics-addr", "", "--source", "git", "--repo", r.URL(), "--fetch-interval", "50ms"}
	a := startProcAgent(t, filepath.Join(dir, "unused"), state, args...)
	waitFor(t, "rev 1 deployed", 60*time.Second, func() bool { return revisionOf(t, state, nfiles) == "1" })
	stopAgent(t, a)

	// The exact instant: the hook kills the agent after materialising rev 2.
	rev(2)
	bin := filepath.Join(agentDir, "reconciler")
	cmd := exec.Command(bin, append([]string{"run", "--backend", "process", "--state-dir", state, "--owner-check", "off", "--log-format", "console"}, args...)...)
	cmd.Env = append(os.Environ(), "RESIL_TEST_GIT_CRASH_BEFORE_SWAP=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("agent with the crash hook: %v, want killed by SIGKILL\n%s", err, out)
	}
	if got := revisionOf(t, state, nfiles); got != "1" {
		t.Fatalf("after a kill between materialise and swap: rev %s, want 1", got)
	}
	a = startProcAgent(t, filepath.Join(dir, "unused"), state, args...)
	waitFor(t, "rev 2 deployed after the restart", 60*time.Second, func() bool { return revisionOf(t, state, nfiles) == "2" })
	waitFor(t, "rev 2 converged", 60*time.Second, func() bool { return readMarker(marker, "svc0") == "2" && readMarker(marker, "svc5") == "2" })
	stopAgent(t, a)

	// Random instants: commits land every 30 ms while the agent polls every
	// 50 ms; kill -9 after a random 50–600 ms, check, restart.
	n := 2
	kills := 12
	if testing.Short() {
		kills = 6
	}
	seen := map[string]bool{}
	for k := range kills {
		a := startProcAgent(t, filepath.Join(dir, "unused"), state, args...)
		deadline := time.Now().Add(time.Duration(50+rand.IntN(550)) * time.Millisecond)
		for time.Now().Before(deadline) {
			n++
			rev(n)
			time.Sleep(30 * time.Millisecond)
		}
		_ = a.cmd.Process.Kill()
		<-a.done
		got := revisionOf(t, state, nfiles)
		seen[got] = true
		t.Logf("kill %d: deployed rev %s (head rev %d)", k+1, got, n)
	}
	// Converges on the head.
	startProcAgent(t, filepath.Join(dir, "unused"), state, append(args, "--stop-on-exit")...)
	want := strconv.Itoa(n)
	waitFor(t, "the head deployed and converged", 60*time.Second, func() bool {
		return revisionOf(t, state, nfiles) == want && readMarker(marker, "svc0") == want && readMarker(marker, "svc5") == want
	})
	if len(seen) < 2 {
		t.Logf("note: kills landed on %d distinct revisions", len(seen))
	}
	// The swap comes before the old revisions' removal, and the loop may
	// converge on the new link before the source has removed them.
	var kept int
	deadline := time.Now().Add(30 * time.Second)
	for {
		ents, _ := os.ReadDir(filepath.Join(state, "git", "revs"))
		if kept = len(ents); kept <= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if kept > 2 {
		t.Errorf("%d revision directories kept, want at most 2", kept)
	}
}

// stopAgent SIGTERMs an agent and waits (its services keep running for the
// next agent to adopt).
func stopAgent(t *testing.T, a *procAgent) {
	t.Helper()
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop")
	}
}

// cpuTicks is a process's CPU time, its own and its waited-for children's
// (git), in clock ticks (/proc/PID/stat utime stime cutime cstime).
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var sum int64
	for _, i := range []int{11, 12, 13, 14} { // fields 14-17, counted from state (field 3)
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return sum
}

// The cost of an idle poll (nothing new on the ref): CPU time of the agent
// and the git processes it runs, per fetch, over a few seconds of
// --fetch-interval 200ms, against the same agent on a plain directory.
// A figure for the report, not an assertion:
//
//	RESIL_E2E_REQUIRE=1 go test -count=1 -run TestGitSourceIdlePollCost -v ./e2e/
func TestGitSourceIdlePollCost(t *testing.T) {
	r := newGitRepo(t)
	r.Commit("one", "", map[string]string{"web.yaml": "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: idle}\nspec: {command: [/bin/sleep, infinity]}\n"})
	const window = 6 * time.Second
	measure := func(extra ...string) (ticks int64, fetches int) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "m"), 0o755); err != nil {
			t.Fatal(err)
		}
		a := startProcAgent(t, filepath.Join(dir, "m"), filepath.Join(dir, "state"),
			append([]string{"--metrics-addr", "", "--stop-on-exit", "--resync", "1h", "--log-level", "debug", "--log-format", "json"}, extra...)...)
		time.Sleep(2 * time.Second) // first deployment and pass done
		before, n0 := cpuTicks(t, a.cmd.Process.Pid), strings.Count(a.out.String(), `"msg":"fetched"`)
		time.Sleep(window)
		after, n1 := cpuTicks(t, a.cmd.Process.Pid), strings.Count(a.out.String(), `"msg":"fetched"`)
		stopAgent(t, a)
		return after - before, n1 - n0
	}
	gitTicks, fetches := measure("--source", "git", "--repo", r.URL(), "--fetch-interval", "200ms")
	dirTicks, _ := measure()
	if fetches == 0 {
		t.Fatalf("no fetch in %s", window)
	}
	tick := time.Second / 100 // USER_HZ
	perPoll := time.Duration(gitTicks-dirTicks) * tick / time.Duration(fetches)
	t.Logf("idle: %d fetches in %s; CPU (agent + git children) %s with the git source, %s on a plain directory: ≈ %s per idle poll (file:// remote); at the default 30 s interval ≈ %.3f%% of one core",
		fetches, window, time.Duration(gitTicks)*tick, time.Duration(dirTicks)*tick, perPoll, 100*perPoll.Seconds()/30)
}
