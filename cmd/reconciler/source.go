package main

// The git source's wiring (issue 15): run's --source flags, the sync
// command, the deployed revision in status and diff, diff --revision, and
// the source's metrics. The source itself is desired/gitsource.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"resil.dev/resil/desired"
	"resil.dev/resil/desired/gitsource"
	"resil.dev/resil/reconcile"
)

// sourceFlags are run's flags for the manifests source.
type sourceFlags struct {
	source         string
	repo, ref      string
	paths          []string
	interval       time.Duration
	verifySigners  string
	allowForcePush bool
	sshKey         string
	knownHosts     string
	tokenFile      string
	localDropIns   string
	configFile     string
	flags          *pflag.FlagSet
}

// sourceConfig is the agent config file's git source (--source-config):
// the same settings as the flags, which override it when given.
type sourceConfig struct {
	Source         string   `json:"source"`
	Repo           string   `json:"repo"`
	Ref            string   `json:"ref"`
	Paths          []string `json:"paths"`
	FetchInterval  string   `json:"fetchInterval"`
	VerifySigners  string   `json:"verifySigners"`
	AllowForcePush bool     `json:"allowForcePush"`
	SSHKey         string   `json:"sshKey"`
	SSHKnownHosts  string   `json:"sshKnownHosts"`
	TokenFile      string   `json:"tokenFile"`
	LocalDropIns   string   `json:"localDropIns"`
}

// loadConfig fills the flags not given on the command line from the
// config file; "%H" in a path is the host name (as in a systemd unit),
// opts.Host.Name. The file names the repository, the allowed signers and
// whether force-pushes deploy, so it is read as a manifest is
// (desired.ReadChecked with opts, the --owner-check options: owner and
// mode of the file, its folder and the path, on the descriptor read): one
// that group or others may write fails the agent's start.
func (s *sourceFlags) loadConfig(f *pflag.FlagSet, opts desired.Options) error {
	if s.configFile == "" {
		return nil
	}
	host := opts.Host.Name
	data, err := desired.ReadChecked(s.configFile, opts)
	if err != nil {
		return fmt.Errorf("--source-config: %w", err)
	}
	var c sourceConfig
	if err := desired.DecodeConfig(s.configFile, data, &c); err != nil {
		return fmt.Errorf("--source-config:\n%w", err)
	}
	set := func(name string, apply func()) {
		if !f.Changed(name) {
			apply()
		}
	}
	if c.Source != "" {
		set("source", func() { s.source = c.Source })
	}
	if c.Repo != "" {
		set("repo", func() { s.repo = c.Repo })
	}
	if c.Ref != "" {
		set("ref", func() { s.ref = c.Ref })
	}
	if len(c.Paths) > 0 {
		set("path", func() { s.paths = c.Paths })
	}
	if c.FetchInterval != "" {
		d, err := time.ParseDuration(c.FetchInterval)
		if err != nil || d <= 0 {
			return fmt.Errorf("--source-config %s: fetchInterval %q: want a positive duration", s.configFile, c.FetchInterval)
		}
		set("fetch-interval", func() { s.interval = d })
	}
	set("verify-signers", func() { s.verifySigners = c.VerifySigners })
	set("allow-force-push", func() { s.allowForcePush = c.AllowForcePush })
	set("ssh-key", func() { s.sshKey = c.SSHKey })
	set("ssh-known-hosts", func() { s.knownHosts = c.SSHKnownHosts })
	set("token-file", func() { s.tokenFile = c.TokenFile })
	set("local-dropins", func() { s.localDropIns = c.LocalDropIns })
	for i, p := range s.paths {
		s.paths[i] = strings.ReplaceAll(p, "%H", host)
	}
	return nil
}

func addSourceFlags(f *pflag.FlagSet) *sourceFlags {
	s := &sourceFlags{}
	f.StringVar(&s.source, "source", "dir", "where manifests come from: dir (the --manifests directory) or git (--repo; the agent deploys verified revisions into <state-dir>/git/manifests and reads them from there)")
	f.StringVar(&s.repo, "repo", "", "git source: repository URL (ssh, https, file://)")
	f.StringVar(&s.ref, "ref", "main", "git source: branch (or full ref) to follow")
	f.StringArrayVar(&s.paths, "path", nil, "git source: repository directory composed into the manifests (repeatable; same file name from two paths is an error; default: the whole tree)")
	f.DurationVar(&s.interval, "fetch-interval", gitsource.DefaultInterval, "git source: time between fetches (±10 % jitter; doubled per failed fetch up to 10m)")
	f.StringVar(&s.verifySigners, "verify-signers", "", "git source: SSH allowed-signers file; only commits signed by a key it lists are deployed")
	f.BoolVar(&s.allowForcePush, "allow-force-push", false, "git source: deploy a head that does not descend from the deployed commit")
	f.StringVar(&s.sshKey, "ssh-key", "", "git source: private key file for ssh URLs (deploy key)")
	f.StringVar(&s.knownHosts, "ssh-known-hosts", "", "git source: known_hosts file for ssh URLs (strict checking)")
	f.StringVar(&s.tokenFile, "token-file", "", "git source: file holding a token (or USER:TOKEN) for https URLs, read by a credential helper")
	f.StringVar(&s.localDropIns, "local-dropins", "", "git source: directory whose NAME.d/ drop-in folders are composed into every revision (local edits on top)")
	f.StringVar(&s.configFile, "source-config", "", "YAML file with the source settings (source, repo, ref, paths, fetchInterval, verifySigners, allowForcePush, sshKey, sshKnownHosts, tokenFile, localDropIns); flags override it; %H in a path is the host name")
	s.flags = f
	return s
}

// safeUnitPath is a path install may put in the agent unit's ExecStart=
// unquoted (no space, specifier or quote).
var safeUnitPath = regexp.MustCompile(`^/[A-Za-z0-9._/-]+$`)

// crashBeforeSwapEnv names the test hook of the git source e2e tests: set
// to 1, the agent SIGKILLs itself after materialising a revision and
// before switching the manifests link to it. Not for production use.
const crashBeforeSwapEnv = "RESIL_TEST_GIT_CRASH_BEFORE_SWAP"

// open returns the git source (nil for --source dir) and points
// g.manifests at its manifests link.
// render is the backend's renderer: a revision with an object it cannot
// honour is invalid on this host (gitsource.Config.Render).
func (s *sourceFlags) open(g *globals, log *zap.Logger, events reconcile.Recorder, m *metrics, render func(*desired.Object) ([]desired.UnitFile, error)) (*gitsource.Source, error) {
	opts, err := g.loadOptions()
	if err != nil {
		return nil, exitCode(2, err)
	}
	if err := s.loadConfig(s.flags, opts); err != nil {
		return nil, exitCode(2, err)
	}
	switch s.source {
	case "dir", "":
		// A git source used before on this state dir is not in use now:
		// diff and status must not read its manifests link.
		rec := filepath.Join(gitsource.Dir(g.stateDir), gitsource.RecordFile)
		if err := os.Remove(rec); err == nil {
			log.Info("git source no longer in use", zap.String("removed", rec))
		}
		return nil, nil
	case "git":
	default:
		return nil, exitCode(2, fmt.Errorf("--source must be dir or git, got %q", s.source))
	}
	stateDir, err := filepath.Abs(g.stateDir)
	if err != nil {
		return nil, exitCode(2, err)
	}
	cfg := gitsource.Config{
		Repo: s.repo, Ref: s.ref, Paths: s.paths, Dir: gitsource.Dir(stateDir), Interval: s.interval,
		VerifySigners: s.verifySigners, AllowForcePush: s.allowForcePush, LocalDropIns: s.localDropIns,
		Credentials: gitsource.Credentials{SSHKey: s.sshKey, SSHKnownHosts: s.knownHosts, TokenFile: s.tokenFile},
		Load:        opts, Events: events, Log: log, Render: render,
	}
	if m != nil {
		cfg.Metrics = m
	}
	if v := os.Getenv(crashBeforeSwapEnv); v != "" {
		if v != "1" {
			return nil, exitCode(2, fmt.Errorf("%s=%q: want 1", crashBeforeSwapEnv, v))
		}
		cfg.BeforeSwap = func() {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	src, err := gitsource.New(cfg)
	if err != nil {
		return nil, exitCode(2, err)
	}
	if m != nil {
		m.enableSource(src.Ref())
	}
	g.manifests = src.ManifestsDir()
	return src, nil
}

// enableSource registers the git source's metrics, its counters at 0
// for ref, the ref followed: a counter that first appears at 1 has no
// increase() in Prometheus, so the first rejection after each start
// would not fire ResilRevisionRejected (deploy/prometheus).
func (m *metrics) enableSource(ref string) {
	m.reg.MustRegister(m.sourceRevision, m.sourceLastFetch, m.sourceFetchErrors, m.sourceRejected)
	m.sourceRejected.WithLabelValues(ref)
}

// Fetched implements gitsource.Metrics.
func (m *metrics) Fetched(at time.Time, err error) {
	if err != nil {
		m.sourceFetchErrors.Inc()
		return
	}
	m.sourceLastFetch.Set(float64(at.UnixNano()) / 1e9)
}

// Deployed implements gitsource.Metrics: one series, for the deployed revision.
func (m *metrics) Deployed(ref string, r gitsource.Revision) {
	m.sourceRevision.Reset()
	m.sourceRevision.With(prometheus.Labels{"revision": r.Short(), "ref": ref}).Set(1)
}

// Rejected implements gitsource.Metrics.
func (m *metrics) Rejected(ref string) { m.sourceRejected.WithLabelValues(ref).Inc() }

var _ gitsource.Metrics = (*metrics)(nil)

// deployedRevision is the revision the git source in the state dir
// deployed, or nil (no git source there, or nothing deployed yet).
func deployedRevision(g *globals) *gitsource.Revision {
	if rec, err := gitsource.ReadRecord(gitsource.Dir(g.stateDir)); err != nil || rec == nil {
		return nil
	}
	r, err := gitsource.Deployed(gitsource.Dir(g.stateDir))
	if err != nil {
		return nil
	}
	return r
}

// revisionLine is how status and diff name a revision.
func revisionLine(r *gitsource.Revision, now time.Time) string {
	line := fmt.Sprintf("revision %s of %s", r, r.Ref)
	if r.Signer != "" {
		line += ", signed by " + r.Signer
	}
	if !r.Deployed.IsZero() {
		line += ", deployed " + shortAge(now.Sub(r.Deployed)) + " ago"
	}
	return line
}

// diffSource picks the manifests diff (and apply, without revision) reads: with --revision, that
// revision composed into a temp dir as the agent would (cleanup removes
// it); else, when the state dir holds a git source and --manifests is not
// given, its manifests link. It returns the revision to name (or nil).
func diffSource(ctx context.Context, cmd *cobra.Command, g *globals, revision string) (rev *gitsource.Revision, cleanup func(), err error) {
	cleanup = func() {}
	dir := gitsource.Dir(g.stateDir)
	if revision == "" {
		if f := cmd.Flag("manifests"); f != nil && f.Changed {
			return nil, cleanup, nil
		}
		rec, err := gitsource.ReadRecord(dir)
		if err != nil || rec == nil {
			return nil, cleanup, nil
		}
		g.manifests = filepath.Join(dir, gitsource.ManifestsLink)
		return deployedRevision(g), cleanup, nil
	}
	rec, err := gitsource.ReadRecord(dir)
	if err != nil {
		return nil, cleanup, err
	}
	if rec == nil {
		return nil, cleanup, fmt.Errorf("--revision: no git source in %s (run the agent with --source git first)", g.stateDir)
	}
	tmp, err := os.MkdirTemp("", "resil-revision-")
	if err != nil {
		return nil, cleanup, err
	}
	cleanup = func() { os.RemoveAll(tmp) }
	into := filepath.Join(tmp, "manifests")
	opts, err := g.loadOptions()
	if err != nil {
		cleanup()
		return nil, func() {}, err
	}
	r, verr, err := gitsource.Checkout(ctx, dir, rec, revision, into, opts)
	if err != nil {
		cleanup()
		return nil, func() {}, err
	}
	if verr != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: the agent would refuse this revision: %v\n", verr)
	}
	g.manifests = into
	return r, cleanup, nil
}

func newSyncCmd(g *globals) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Ask the running agent's git source to fetch now, and wait for the outcome",
		Long: "Drops a request file in <state-dir>/git/sync/; the agent's git source fetches at once, deploys the\n" +
			"head if it passes every check, and records the outcome. Exit status: 0 deployed or unchanged,\n" +
			"1 refused (rejected, invalid) or the fetch failed, 2 no answer within --wait or no git source.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := gitsource.Dir(g.stateDir)
			if rec, err := gitsource.ReadRecord(dir); err != nil || rec == nil {
				return exitCode(2, fmt.Errorf("no git source in %s (the agent runs with --source git): %w", g.stateDir, errors.Join(err, errors.New("no source.json"))))
			}
			if !agentRunning(g.stateDir) {
				return exitCode(2, fmt.Errorf("no agent is running on %s (its lock is free): nothing would answer", g.stateDir))
			}
			start := time.Now()
			req, err := gitsource.RequestSync(dir)
			if err != nil {
				return exitCode(2, err)
			}
			deadline := start.Add(wait)
			for {
				if _, err := os.Stat(req); os.IsNotExist(err) {
					if a, _ := gitsource.LastAttempt(dir); a != nil && !a.Time.Before(start) {
						return printAttempt(cmd.OutOrStdout(), g, a)
					}
				}
				if time.Now().After(deadline) {
					os.Remove(req)
					return exitCode(2, fmt.Errorf("no answer from the agent's git source within %s (is the agent running with --source git?)", wait))
				}
				select {
				case <-cmd.Context().Done():
					os.Remove(req)
					return exitCode(2, cmd.Context().Err())
				case <-time.After(50 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for the agent")
	return cmd
}

func printAttempt(out io.Writer, g *globals, a *gitsource.Attempt) error {
	head := a.Head
	if len(head) > 12 {
		head = head[:12]
	}
	fmt.Fprintf(out, "fetch: %s (head %s)\n", a.Outcome, orDash(head))
	if a.Error != "" {
		fmt.Fprintf(out, "  %s\n", strings.ReplaceAll(a.Error, "\n", "\n  "))
	}
	if r := deployedRevision(g); r != nil {
		fmt.Fprintln(out, revisionLine(r, time.Now()))
	}
	switch a.Outcome {
	case gitsource.OutcomeDeployed, gitsource.OutcomeUnchanged:
		return nil
	}
	return exitCode(1, nil)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
