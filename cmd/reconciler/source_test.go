package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"resil.dev/resil/desired"
	"resil.dev/resil/desired/gitsource"
	"resil.dev/resil/desired/gitsource/gittest"
)

func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = dir, gittest.Env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// diff names the deployed revision of the state dir's git source, and
// --revision diffs a branch the agent has not deployed, writing nothing.
func TestDiffRevision(t *testing.T) {
	repo, state := t.TempDir(), t.TempDir()
	gitIn(t, repo, "init", "--quiet", "--initial-branch=main")
	if err := os.MkdirAll(filepath.Join(repo, "m"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "m", "web.yaml"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	gitIn(t, repo, "add", "-A")
	gitIn(t, repo, "commit", "--quiet", "-m", "web on main")
	src, err := gitsource.New(gitsource.Config{Repo: "file://" + repo, Paths: []string{"m"}, Dir: gitsource.Dir(state),
		Load: desired.Options{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := src.Sync(context.Background()); err != nil || a.Outcome != gitsource.OutcomeDeployed {
		t.Fatalf("sync: %+v %v", a, err)
	}
	out, code := runCLI(t, "diff", "--backend", "process", "--owner-check", "off", "--state-dir", state)
	if code != 1 || !strings.Contains(out, `Manifests: revision `) || !strings.Contains(out, `"web on main"`) || !strings.Contains(out, "start web.service") {
		t.Fatalf("diff: exit %d\n%s", code, out)
	}
	gitIn(t, repo, "checkout", "--quiet", "-b", "feature")
	if err := os.WriteFile(filepath.Join(repo, "m", "web.yaml"), []byte(strings.Replace(good, "infinity", "1000", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	gitIn(t, repo, "commit", "--quiet", "-am", "feature")
	refs := gitIn(t, filepath.Join(state, "git", "repo.git"), "for-each-ref")
	out, code = runCLI(t, "diff", "--backend", "process", "--owner-check", "off", "--state-dir", state, "--revision", "feature")
	if code != 1 || !strings.Contains(out, `"feature" (`) || !strings.Contains(out, "1000") {
		t.Fatalf("diff --revision feature: exit %d\n%s", code, out)
	}
	if after := gitIn(t, filepath.Join(state, "git", "repo.git"), "for-each-ref"); after != refs {
		t.Errorf("diff --revision changed the mirror's refs:\n%s\n->\n%s", refs, after)
	}
	if _, code := runCLI(t, "diff", "--backend", "process", "--owner-check", "off", "--state-dir", state, "--revision", "nope"); code != 2 {
		t.Errorf("diff --revision nope: exit %d, want 2", code)
	}
	// sync with no agent running says so at once (no lock file; then a
	// lock file whose holder is gone), not after --wait: exit 2.
	if _, code, err := execCLI("sync", "--state-dir", state, "--wait", "1h"); code != 2 || err == nil || !strings.Contains(err.Error(), "no agent is running") {
		t.Errorf("sync without an agent: exit %d: %v", code, err)
	}
	gone := exec.Command("/bin/true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "agent.lock"), []byte(strconv.Itoa(gone.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, code, err := execCLI("sync", "--state-dir", state, "--wait", "1h"); code != 2 || err == nil || !strings.Contains(err.Error(), "no agent is running") {
		t.Errorf("sync with a dead agent's lock file: exit %d: %v", code, err)
	}
}

func TestSyncWithoutGitSource(t *testing.T) {
	if out, code := runCLI(t, "sync", "--state-dir", t.TempDir()); code != 2 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "run", "--state-dir", t.TempDir(), "--backend", "process", "--source", "svn", "--metrics-addr", ""); code != 2 {
		t.Fatalf("run --source svn: exit %d\n%s", code, out)
	}
}

// One resil_source_revision_info series, for the deployed revision;
// rejections by ref; fetch errors; the last good fetch's time.
func TestSourceMetrics(t *testing.T) {
	m := newMetrics(time.Minute, nil)
	m.enableSource("main")
	// At 0 from the start, before any event: Prometheus' increase() sees
	// the first rejection after an agent start (ResilRevisionRejected).
	if got := sourceSeries(t, m); got["resil_source_revisions_rejected_total"] != "{ref=main} 0" || got["resil_source_fetch_errors_total"] != "{} 0" {
		t.Errorf("at start: %v", got)
	}
	m.Deployed("main", gitsource.Revision{Commit: "0123456789abcdef"})
	m.Deployed("main", gitsource.Revision{Commit: "fedcba9876543210"})
	m.Rejected("main")
	m.Fetched(time.Unix(1000, 0), nil)
	m.Fetched(time.Unix(2000, 0), errors.New("offline"))
	got := sourceSeries(t, m)
	for name, want := range map[string]string{
		"resil_source_revision_info":                "{ref=main,revision=fedcba987654} 1",
		"resil_source_revisions_rejected_total":     "{ref=main} 1",
		"resil_source_fetch_errors_total":           "{} 1",
		"resil_source_last_fetch_timestamp_seconds": "{} 1000",
	} {
		if got[name] != want {
			t.Errorf("%s: %q, want %q", name, got[name], want)
		}
	}
}

// sourceSeries gathers the resil_source_ metrics: name → its series.
func sourceSeries(t *testing.T, m *metrics) map[string]string {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "resil_source_") {
			continue
		}
		var series []string
		for _, mt := range mf.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
			series = append(series, fmt.Sprintf("{%s} %g", strings.Join(labels, ","), v))
		}
		got[mf.GetName()] = strings.Join(series, " ")
	}
	return got
}

func TestStatusNamesRevision(t *testing.T) {
	now := time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)
	rep := statusReport{
		Revision: &gitsource.Revision{Commit: "0123456789abcdef", Subject: "web v2", AuthorTime: now.Add(-time.Hour), Ref: "main",
			Signer: "alice@example.com", Deployed: now.Add(-3 * time.Minute)},
		LastFetch: &gitsource.Attempt{Time: now.Add(-time.Minute), Outcome: gitsource.OutcomeRejected, Error: "not verified: not signed"},
	}
	var b bytes.Buffer
	if err := printStatus(&b, rep, false, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`revision 0123456789ab "web v2" (2026-12-01T03:00:00Z) of main, signed by alice@example.com, deployed 3m ago`,
		"last fetch 60s ago: rejected: not verified: not signed",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}

// apply without --manifests converges on the git source's deployed
// revision, as the agent does.
func TestApplyUsesDeployedRevision(t *testing.T) {
	e := newProcEnv(t) // its cleanup kills what apply started
	state := e.state
	deployWeb(t, state)
	out, code := runCLI(t, "apply", "--backend", "process", "--owner-check", "off", "--state-dir", state)
	if code != 0 || !strings.Contains(out, "web.service") || e.rows()["web.service"].PID <= 1 {
		t.Fatalf("apply: exit %d, rows %v\n%s", code, e.rows(), out)
	}
}

// The agent config file fills what the flags do not give; %H in a path is
// the host name; unknown keys are errors.
func TestSourceConfigFile(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "source.yaml")
	write := func(body string) {
		if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`source: git
repo: ssh://git@git.example.com/fleet.git
ref: release
paths: [hosts/common, hosts/%H]
fetchInterval: 1m
verifySigners: /etc/resil/allowed_signers
sshKey: /etc/resil/deploy_key
`)
	f := pflag.NewFlagSet("run", pflag.ContinueOnError)
	s := addSourceFlags(f)
	if err := f.Parse([]string{"--source-config", cfg, "--ref", "main"}); err != nil {
		t.Fatal(err)
	}
	opts := desired.Options{OwnerUID: os.Geteuid(), Host: desired.Host{Name: "web-1"}}
	if err := s.loadConfig(f, opts); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s %s %s %v %s %s %s", s.source, s.repo, s.ref, s.paths, s.interval, s.verifySigners, s.sshKey)
	want := "git ssh://git@git.example.com/fleet.git main [hosts/common hosts/web-1] 1m0s /etc/resil/allowed_signers /etc/resil/deploy_key"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	write("source: git\nrepos: typo\n")
	if err := s.loadConfig(f, opts); err == nil || !strings.Contains(err.Error(), "repos") {
		t.Errorf("unknown key: %v", err)
	}
	write("fetchInterval: soon\n")
	if err := s.loadConfig(f, opts); err == nil || !strings.Contains(err.Error(), "fetchInterval") {
		t.Errorf("bad interval: %v", err)
	}
	// It names the repository and the signers: read as a manifest is. A
	// file or folder others may write is refused, naming the file.
	write("source: git\nrepo: file:///home/mallory/repo\nverifySigners: \"\"\n")
	for _, p := range []string{cfg, filepath.Dir(cfg)} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
		err := s.loadConfig(f, opts)
		if err == nil || !strings.Contains(err.Error(), cfg) || !strings.Contains(err.Error(), "writable by group or others") {
			t.Errorf("%s writable by others: %v", p, err)
		}
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The agent fails to start on it (exit 2), naming the file. (A
	// source it would reject when read, so a run that reads it does not
	// start either.)
	write("source: bogus\n")
	if err := os.Chmod(cfg, 0o666); err != nil {
		t.Fatal(err)
	}
	out, code := runCLIErr(t, "run", "--backend", "process", "--owner-check", "on", "--state-dir", t.TempDir(), "--metrics-addr", "",
		"--source-config", cfg)
	if code != 2 || !strings.Contains(out, "--source-config: "+cfg) || !strings.Contains(out, "refused") {
		t.Errorf("run with a writable --source-config: exit %d\n%s", code, out)
	}
}

// install --source-config runs the agent with the config file; without
// it the unit is unchanged.
func TestInstallSourceConfig(t *testing.T) {
	p := agentUnitParams{Version: "v1", Name: AgentUnit, Binary: "/usr/local/bin/reconciler", Manifests: "/etc/resil.d",
		StateDir: "/var/lib/resil", UnitDir: "/etc/systemd/system", ManagerDir: "/etc/systemd/system.conf.d",
		WatchdogSec: "120s", RestartSec: "2s", StartTimeout: "300s", Resync: "5m0s"}
	plain, err := renderAgentUnit(p)
	if err != nil {
		t.Fatal(err)
	}
	p.SourceConfig = "/etc/resil/source.yaml"
	withSource, err := renderAgentUnit(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(plain), "source-config") || strings.Contains(string(plain), "IPAddressAllow=any") ||
		!strings.Contains(string(withSource), "--resync 5m0s --source-config /etc/resil/source.yaml\n") ||
		!strings.Contains(string(withSource), "IPAddressAllow=localhost\n# The git source") || !strings.Contains(string(withSource), "\nIPAddressAllow=any\nPrivateIPC=yes\n") {
		t.Errorf("units:\n%s\n%s", plain, withSource)
	}
	if _, code := runCLI(t, "install", "--dry-run", "--source-config", "/etc/resil/my source.yaml"); code != 2 {
		t.Errorf("a path with a space: exit %d, want 2", code)
	}
}

// prune reads the manifests diff and apply read: without --manifests, the
// git source's deployed revision. An object the deployed revision drops
// is listed (and pruned with --confirm), one it keeps is not; it never
// reads the default --manifests directory, which under a git source may
// hold only local drop-ins (or nothing). A manifests directory that
// cannot be read is an error, not "nothing to prune".
func TestPruneUsesDeployedRevision(t *testing.T) {
	repo, e := t.TempDir(), newProcEnv(t) // its cleanup kills what apply started
	state := e.state
	gitIn(t, repo, "init", "--quiet", "--initial-branch=main")
	db := strings.Replace(good, "name: web", "name: db", 1)
	for name, body := range map[string]string{"web.yaml": good, "db.yaml": db} {
		if err := os.WriteFile(filepath.Join(repo, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitIn(t, repo, "add", "-A")
	gitIn(t, repo, "commit", "--quiet", "-m", "web and db")
	src, err := gitsource.New(gitsource.Config{Repo: "file://" + repo, Dir: gitsource.Dir(state), Load: desired.Options{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := src.Sync(context.Background()); err != nil || a.Outcome != gitsource.OutcomeDeployed {
		t.Fatalf("sync: %+v %v", a, err)
	}
	cli := func(args ...string) (string, int) {
		return runCLIErr(t, append([]string{"--backend", "process", "--owner-check", "off", "--state-dir", state}, args...)...)
	}
	if out, code := cli("apply"); code != 0 || e.rows()["db.service"].PID <= 1 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	if out, code := cli("prune"); code != 0 || !strings.Contains(out, "nothing to prune") {
		t.Fatalf("prune, both deployed: exit %d\n%s", code, out)
	}
	gitIn(t, repo, "rm", "--quiet", "db.yaml")
	gitIn(t, repo, "commit", "--quiet", "-m", "no db")
	if a, err := src.Sync(context.Background()); err != nil || a.Outcome != gitsource.OutcomeDeployed {
		t.Fatalf("sync: %+v %v", a, err)
	}
	if out, code := cli("prune"); code != 1 || !strings.Contains(out, "1 objects to prune:\n  Service/db\n") || strings.Contains(out, "Service/web") {
		t.Fatalf("prune, db dropped: exit %d\n%s", code, out)
	}
	if out, code := cli("prune", "--confirm"); code != 0 || e.rows()["db.service"].PID > 1 || e.rows()["web.service"].PID <= 1 {
		t.Fatalf("prune --confirm: exit %d, rows %v\n%s", code, e.rows(), out)
	}
	// Unreadable (here: missing) manifests: an error naming the cause,
	// although the agent's memory holds the last good objects.
	missing := filepath.Join(t.TempDir(), "none")
	if out, code := cli("prune", "--manifests", missing); code != 2 || !strings.Contains(out, "manifests directory unreadable") || strings.Contains(out, "nothing to prune") {
		t.Fatalf("prune, manifests missing: exit %d\n%s", code, out)
	}
}

// pause, resume and reset read the manifests diff reads: under a git
// source with no --manifests, its deployed revision. pause warned of no
// unknown name there (it read the default directory, which under a git
// source may not exist), and reset refused every unit.
func TestLeasesAndResetUseDeployedRevision(t *testing.T) {
	state := t.TempDir()
	deployWeb(t, state)
	cli := func(args ...string) (string, int) {
		return runCLIErr(t, append([]string{"--backend", "process", "--owner-check", "off", "--state-dir", state,
			"--host-labels", desired.DefaultHostLabelsFile}, args...)...)
	}
	if out, code := cli("pause", "webb", "--for", "1m", "--reason", "typo"); code != 0 || !strings.Contains(out, "warning: no manifest in ") {
		t.Errorf("pause of a name the deployed revision lacks: exit %d, want 0 with a warning\n%s", code, out)
	}
	if out, code := cli("pause", "web", "--for", "1m", "--reason", "hotfix"); code != 0 || strings.Contains(out, "warning") {
		t.Errorf("pause of a deployed name: exit %d, want 0 without a warning\n%s", code, out)
	}
	if out, code := cli("reset", "db"); code != 1 || !strings.Contains(out, "no manifest in "+filepath.Join(gitsource.Dir(state), gitsource.ManifestsLink)) {
		t.Errorf("reset of a name the deployed revision lacks: exit %d, want 1 naming the revision's manifests\n%s", code, out)
	}
}

// deployWeb commits web.yaml (good) to a new repository and deploys it as
// state's git source.
func deployWeb(t *testing.T, state string) {
	t.Helper()
	repo := t.TempDir()
	gitIn(t, repo, "init", "--quiet", "--initial-branch=main")
	if err := os.WriteFile(filepath.Join(repo, "web.yaml"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	gitIn(t, repo, "add", "-A")
	gitIn(t, repo, "commit", "--quiet", "-m", "web")
	src, err := gitsource.New(gitsource.Config{Repo: "file://" + repo, Dir: gitsource.Dir(state), Load: desired.Options{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := src.Sync(context.Background()); err != nil || a.Outcome != gitsource.OutcomeDeployed {
		t.Fatalf("sync: %+v %v", a, err)
	}
}
