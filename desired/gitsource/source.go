package gitsource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile"
)

// Outcome is what one fetch attempt did.
type Outcome string

// Outcomes of Sync.
const (
	// OutcomeUnchanged: the head is the deployed revision.
	OutcomeUnchanged Outcome = "unchanged"
	// OutcomeDeployed: the head was deployed (the manifests link switched).
	OutcomeDeployed Outcome = "deployed"
	// OutcomeRejected: the head is unsigned, badly signed, or does not
	// descend from the deployed revision.
	OutcomeRejected Outcome = "rejected"
	// OutcomeInvalid: the head's manifests do not validate.
	OutcomeInvalid Outcome = "invalid"
	// OutcomeError: the fetch (or a local step) failed; nothing changed.
	OutcomeError Outcome = "error"
)

// Metrics receives what the source's Prometheus metrics show. Its methods
// must not block.
type Metrics interface {
	// Fetched is called after every attempt (Sync) with its error: a
	// failed fetch, or a local step that failed after it (a refused local
	// drop-in, allowed-signers or credential file); nil when the head was
	// deployed, unchanged or refused. An attempt ended by its context
	// (the agent stopping) is not reported.
	Fetched(at time.Time, err error)
	// Deployed is called when a revision is deployed, and at start for the
	// revision found deployed.
	Deployed(ref string, r Revision)
	// Rejected is called once per refused head (rejected or invalid).
	Rejected(ref string)
}

// Config configures a Source.
type Config struct {
	// Repo is the repository URL (file://, ssh, https, or a path).
	Repo string
	// Ref is the branch (or full ref) followed.
	Ref string
	// Paths are the directories of the repository composed into the
	// manifests directory, in order; a file name given by two is an error.
	Paths []string
	// Dir is the source's directory (Dir(stateDir)).
	Dir string
	// VerifySigners is an SSH allowed-signers file; when set, only commits
	// signed by a key it lists are deployed.
	VerifySigners string
	// AllowForcePush deploys a head that does not descend from the
	// deployed commit.
	AllowForcePush bool
	// LocalDropIns is a directory whose NAME.d/ folders are copied into
	// every composed revision (local edits on top of the repository).
	LocalDropIns string
	Credentials  Credentials
	// Interval between fetches (default 30 s), with ±10 % jitter.
	Interval time.Duration
	// Load are the agent's load options, used to validate a revision.
	Load desired.Options
	// Render, if set, is the backend's renderer: a revision with an
	// object it refuses (e.g. a setting the process backend cannot
	// apply: actuators.ErrUnsupported) is invalid on this host, so a
	// commit is never deployed in part.
	Render func(*desired.Object) ([]desired.UnitFile, error)
	// Events receives RevisionDeployed, RevisionRejected, RevisionInvalid.
	Events  reconcile.Recorder
	Metrics Metrics
	Log     *zap.Logger
	// Git is the git binary (default: "git" on PATH).
	Git string
	// BeforeSwap, if set, runs after a revision is materialised and
	// before the manifests link is switched to it (a test hook).
	BeforeSwap func()
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultInterval is the default time between fetches.
const DefaultInterval = 30 * time.Second

// Source fetches and deploys one ref. Sync and Run must not be called
// concurrently.
type Source struct {
	cfg Config
	git *git
	log *zap.Logger

	ready    bool
	primed   bool // Prime fetched: Run waits an interval first
	deployed *Revision
	curKey   string
	// refused is the head (with the local drop-ins' and the allowed
	// signers' hashes) last refused, so a refused head is reported once
	// (an event, the metric), not on every fetch; refusedErr is why, given
	// to every attempt that finds it again.
	refused        string
	refusedOutcome Outcome
	refusedErr     string
	// failed is the error of the FetchFailed event last recorded ("" after
	// a successful attempt): a failure is recorded when it starts or its
	// message changes, not on every retry.
	failed string
}

// New checks cfg and returns a Source. It does no I/O.
func New(cfg Config) (*Source, error) {
	if cfg.Repo == "" {
		return nil, errors.New("git source: --repo is required")
	}
	if cfg.Ref == "" {
		cfg.Ref = "main"
	}
	if strings.HasPrefix(cfg.Ref, "-") || strings.ContainsAny(cfg.Ref, " :\x00") {
		return nil, fmt.Errorf("git source: bad ref %q", cfg.Ref)
	}
	if len(cfg.Paths) == 0 {
		cfg.Paths = []string{"."}
	}
	for _, p := range cfg.Paths {
		if c := cleanRepoPath(p); c != "." && !filepath.IsLocal(c) {
			return nil, fmt.Errorf("git source: path %q leaves the repository", p)
		}
	}
	if cfg.Dir == "" {
		return nil, errors.New("git source: no directory")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Git == "" {
		cfg.Git = "git"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Source{cfg: cfg, log: cfg.Log.Named("source"),
		git: &git{bin: cfg.Git, dir: filepath.Join(cfg.Dir, repoDir), creds: cfg.Credentials}}, nil
}

// Ref is the ref followed (Config.Ref, "main" when not given).
func (s *Source) Ref() string { return s.cfg.Ref }

// ManifestsDir is the directory the loop reads (a symlink, switched on
// every deployment).
func (s *Source) ManifestsDir() string { return filepath.Join(s.cfg.Dir, ManifestsLink) }

// Deployed returns the deployed revision (nil before the first).
func (s *Source) Deployed() *Revision { return s.deployed }

// init creates the layout, records the configuration, finds the deployed
// revision and clears what an interrupted deployment left.
func (s *Source) init(ctx context.Context) error {
	if s.ready {
		return nil
	}
	if _, err := exec.LookPath(s.cfg.Git); err != nil {
		return fmt.Errorf("git source: %w", err)
	}
	for _, d := range []string{s.cfg.Dir, filepath.Join(s.cfg.Dir, revsDir), filepath.Join(s.cfg.Dir, requestDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("git source: %w", err)
		}
	}
	if err := s.git.ensure(ctx); err != nil {
		return err
	}
	rec := Record{Repo: s.cfg.Repo, Ref: s.cfg.Ref, Paths: s.cfg.Paths, VerifySigners: s.cfg.VerifySigners,
		AllowForcePush: s.cfg.AllowForcePush, LocalDropIns: s.cfg.LocalDropIns,
		SSHKey: s.cfg.Credentials.SSHKey, SSHKnownHosts: s.cfg.Credentials.SSHKnownHosts, TokenFile: s.cfg.Credentials.TokenFile}
	if err := writeJSON(filepath.Join(s.cfg.Dir, RecordFile), rec); err != nil {
		return fmt.Errorf("git source: %w", err)
	}
	_ = os.Remove(filepath.Join(s.cfg.Dir, tmpPrefix+ManifestsLink))
	rev, err := Deployed(s.cfg.Dir)
	if err != nil {
		// A link to a revision without its record cannot be: the record is
		// written before the directory gets its name. Deploy again.
		s.log.Warn("deployed revision unreadable", zap.Error(err))
		rev = nil
	}
	s.deployed = rev
	s.curKey = ""
	if rev != nil {
		s.curKey = current(s.cfg.Dir)
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.Deployed(s.cfg.Ref, *rev)
		}
		s.log.Info("deployed revision", zap.String("revision", rev.String()), zap.String("ref", rev.Ref))
	}
	if err := gc(s.cfg.Dir, s.curKey, previous(s.cfg.Dir, s.curKey)); err != nil {
		s.log.Warn("old revisions not removed", zap.Error(err))
	}
	s.ready = true
	return nil
}

// fetch fetches the ref and returns the head commit.
func (s *Source) fetch(ctx context.Context) (string, error) {
	if _, err := s.git.run(ctx, "fetch", "--quiet", "--no-tags", "--force", "--no-write-fetch-head", "--",
		s.cfg.Repo, "+"+s.cfg.Ref+":refs/resil/head"); err != nil {
		return "", err
	}
	out, err := s.git.run(ctx, "rev-parse", "--verify", "--quiet", "refs/resil/head^{commit}")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// describe reads a commit's subject, author and author time.
func describe(ctx context.Context, g *git, commit string) (Revision, error) {
	out, err := g.run(ctx, "log", "-1", "--no-show-signature", "--format=%H%x00%s%x00%an%x00%at", commit, "--")
	if err != nil {
		return Revision{}, err
	}
	f := strings.Split(strings.TrimRight(string(out), "\n"), "\x00")
	if len(f) != 4 {
		return Revision{}, fmt.Errorf("git log %s: unexpected output %q", commit, out)
	}
	sec, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return Revision{}, fmt.Errorf("git log %s: author time %q", commit, f[3])
	}
	return Revision{Commit: f[0], Subject: f[1], Author: f[2], AuthorTime: time.Unix(sec, 0).UTC()}, nil
}

var goodSig = regexp.MustCompile(`Good "git" signature for (\S+) with`)

// verify checks commit's signature against the allowed-signers file
// signers (the agent's private copy, see privateCopies) and returns the
// signer's principal. Its error says why not, naming the file as name
// (the configured one).
func verify(ctx context.Context, g *git, signers, name, commit string) (string, error) {
	out, stderr, err := g.run2(ctx, "-c", "gpg.format=ssh", "-c", "gpg.ssh.allowedSignersFile="+signers, "verify-commit", commit)
	var ge *gitError
	if err != nil && !errors.As(err, &ge) {
		return "", err
	}
	text := string(out) + stderr
	if err == nil {
		if m := goodSig.FindStringSubmatch(text); m != nil {
			return m[1], nil
		}
		return "", errors.New("signature accepted but no principal named")
	}
	msg := strings.TrimSpace(text)
	switch {
	case msg == "":
		return "", errors.New("not signed")
	case strings.Contains(msg, "No principal matched"):
		return "", fmt.Errorf("signed by a key not in %s", name)
	}
	if i := strings.IndexByte(msg, '\n'); i > 0 {
		msg = msg[:i]
	}
	return "", fmt.Errorf("bad signature: %s", msg)
}

// localHash hashes the local drop-in folders (names and contents), so a
// local edit composes the revision again. "" when none are configured.
func (s *Source) localHash() (string, error) {
	if s.cfg.LocalDropIns == "" {
		return "", nil
	}
	h := sha256.New()
	dirs, err := filepath.Glob(filepath.Join(s.cfg.LocalDropIns, "*.d"))
	if err != nil {
		return "", err
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			// Only a change detector (the copy is read checked, see
			// copyDropIns), but never blocked by a FIFO swapped in.
			f, err := os.OpenFile(filepath.Join(d, e.Name()), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
			if err != nil {
				return "", fmt.Errorf("local drop-ins: %w", err)
			}
			if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
				f.Close()
				return "", fmt.Errorf("local drop-ins: %s: not a regular file", f.Name())
			}
			fmt.Fprintf(h, "%s/%s\x00", filepath.Base(d), e.Name())
			_, err = io.Copy(h, io.LimitReader(f, desired.DefaultMaxFileBytes+1))
			f.Close()
			if err != nil {
				return "", fmt.Errorf("local drop-ins: %w", err)
			}
			h.Write([]byte{0})
		}
	}
	return "local-" + hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Sync fetches the ref once and deploys its head if it passes every check.
//
// Outcomes:
//   - (OutcomeUnchanged, nil): the head is deployed already.
//   - (OutcomeDeployed, nil): the manifests link now names the head.
//   - (OutcomeRejected or OutcomeInvalid, nil): the head was refused (an
//     event and the metric, once per head, local drop-ins and allowed
//     signers); the deployed revision stays. Attempt.Error says why, on
//     every attempt that finds the same head refused.
//   - (OutcomeError, err): the fetch or a local step failed (a refused
//     allowed-signers, credential or local drop-in file among them);
//     nothing changed. It is counted (Metrics.Fetched) and recorded as a
//     FetchFailed event when the failure starts or its message changes.
//     The caller backs off.
func (s *Source) Sync(ctx context.Context) (Attempt, error) {
	a, err := s.sync(ctx)
	if err != nil && ctx.Err() != nil {
		return a, err
	}
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Fetched(s.cfg.Now(), err)
	}
	if err == nil {
		s.failed = ""
		return a, nil
	}
	if msg := err.Error(); msg != s.failed {
		s.failed = msg
		s.record(reconcile.Warning, reconcile.ReasonFetchFailed,
			fmt.Sprintf("fetch of %s failed (%s): %v", s.cfg.Ref, s.keeps(), err))
	}
	return a, err
}

// sync is one attempt of Sync, before it is counted.
func (s *Source) sync(ctx context.Context) (Attempt, error) {
	now := s.cfg.Now()
	a := Attempt{Time: now, Outcome: OutcomeError}
	if err := s.init(ctx); err != nil {
		return a, err
	}
	// git and ssh read the agent's checked copies, never the configured
	// files (privateCopies says why).
	priv, err := privateCopies(s.cfg.Dir, s.cfg.VerifySigners, s.cfg.Credentials, s.cfg.Load)
	if err != nil {
		return a, err
	}
	s.git.creds = priv.creds
	head, err := s.fetch(ctx)
	if err != nil {
		return a, fmt.Errorf("fetch %s %s: %w", s.cfg.Repo, s.cfg.Ref, err)
	}
	a.Head = head
	local, err := s.localHash()
	if err != nil {
		return a, err
	}
	if s.deployed != nil && s.deployed.Commit == head && s.deployed.LocalDropIns == local {
		a.Outcome = OutcomeUnchanged
		return a, nil
	}
	refusedKey := head + local + priv.signersHash
	if s.refused == refusedKey {
		a.Outcome, a.Error = s.refusedOutcome, s.refusedErr
		return a, nil
	}
	rev, err := describe(ctx, s.git, head)
	if err != nil {
		return a, err
	}
	rev.Ref, rev.LocalDropIns = s.cfg.Ref, local
	if s.cfg.VerifySigners != "" {
		// A missing, unreadable or refused signers file is this host's
		// fault, not the revision's: an error (retried) from
		// privateCopies above, not a refusal.
		signer, err := verify(ctx, s.git, priv.signers, s.cfg.VerifySigners, head)
		if err != nil {
			return s.refuse(a, rev, refusedKey, OutcomeRejected, fmt.Errorf("not verified: %w", err)), nil
		}
		rev.Signer = signer
	}
	if s.deployed != nil && s.deployed.Commit != head && !s.cfg.AllowForcePush {
		ok, err := s.descends(ctx, head, s.deployed.Commit)
		if err != nil {
			return a, err
		}
		if !ok {
			return s.refuse(a, rev, refusedKey, OutcomeRejected,
				fmt.Errorf("does not descend from the deployed commit %s (history rewritten; --allow-force-push deploys it)", s.deployed.Short())), nil
		}
	}
	key := head[:12] + "-" + strconv.FormatInt(now.UnixNano(), 36)
	tmp := filepath.Join(s.cfg.Dir, revsDir, tmpPrefix+key)
	c, err := materialise(ctx, s.git, head, s.cfg.Paths, s.cfg.LocalDropIns, tmp, s.cfg.Load)
	if err == nil {
		err = validate(tmp, s.cfg.Load, c, s.cfg.Render)
	}
	if err != nil {
		os.RemoveAll(tmp)
		if errors.Is(err, ErrInvalid) {
			return s.refuse(a, rev, refusedKey, OutcomeInvalid, err), nil
		}
		return a, fmt.Errorf("materialise %s: %w", rev.Short(), err)
	}
	rev.Deployed = s.cfg.Now()
	if err := s.commitRevision(tmp, key, rev); err != nil {
		os.RemoveAll(tmp)
		return a, err
	}
	if s.cfg.BeforeSwap != nil {
		s.cfg.BeforeSwap()
	}
	if err := swap(s.cfg.Dir, key); err != nil {
		return a, err
	}
	// The old revisions go first: a local removal, while update-ref forks
	// git and is cut short when the agent stops.
	prevKey := s.curKey
	if err := gc(s.cfg.Dir, key, prevKey); err != nil {
		s.log.Warn("old revisions not removed", zap.Error(err))
	}
	if _, err := s.git.run(ctx, "update-ref", "refs/resil/deployed", head); err != nil {
		s.log.Warn("deployed ref not updated", zap.Error(err))
	}
	prev := s.deployed
	s.deployed, s.curKey, s.refused = &rev, key, ""
	msg := fmt.Sprintf("revision %s of %s deployed", rev, rev.Ref)
	if rev.Signer != "" {
		msg += ", signed by " + rev.Signer
	}
	if prev != nil {
		msg += ", was " + prev.Short()
	}
	s.record(reconcile.Normal, reconcile.ReasonRevisionDeployed, msg)
	s.log.Info("revision deployed", zap.String("revision", rev.String()), zap.String("ref", rev.Ref), zap.String("signer", rev.Signer))
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Deployed(s.cfg.Ref, rev)
	}
	a.Outcome = OutcomeDeployed
	return a, nil
}

// commitRevision writes the revision record into tmp, then gives tmp its
// final name and fsyncs the revisions directory.
func (s *Source) commitRevision(tmp, key string, rev Revision) error {
	if err := writeJSON(filepath.Join(tmp, revisionFile), rev); err != nil {
		return fmt.Errorf("revision record: %w", err)
	}
	if err := syncPath(tmp); err != nil {
		return err
	}
	revs := filepath.Join(s.cfg.Dir, revsDir)
	if err := os.Rename(tmp, filepath.Join(revs, key)); err != nil {
		return fmt.Errorf("revision directory: %w", err)
	}
	return syncPath(revs)
}

// descends says whether head has ancestor in its history. A deployed
// commit the mirror no longer has cannot be an ancestor.
func (s *Source) descends(ctx context.Context, head, ancestor string) (bool, error) {
	if _, err := s.git.run(ctx, "cat-file", "-e", ancestor+"^{commit}"); err != nil {
		return false, nil
	}
	_, err := s.git.run(ctx, "merge-base", "--is-ancestor", ancestor, head)
	switch {
	case err == nil:
		return true, nil
	case exitCode(err) == 1:
		return false, nil
	}
	return false, err
}

// refuse records a refused head (key: refusedKey of Sync): once, an event
// and the metric; every later attempt that finds the same key gets the
// same outcome and reason.
func (s *Source) refuse(a Attempt, rev Revision, key string, out Outcome, why error) Attempt {
	s.refused, s.refusedOutcome, s.refusedErr = key, out, why.Error()
	a.Outcome, a.Error = out, why.Error()
	keeps := s.keeps()
	if out == OutcomeInvalid {
		s.record(reconcile.Warning, reconcile.ReasonRevisionInvalid,
			fmt.Sprintf("revision %s of %s not deployed (%s): %v", rev, s.cfg.Ref, keeps, why))
	} else {
		s.record(reconcile.Warning, reconcile.ReasonRevisionRejected,
			fmt.Sprintf("revision %s of %s refused (%s): %v", rev, s.cfg.Ref, keeps, why))
	}
	s.log.Warn("revision refused", zap.String("revision", rev.String()), zap.String("outcome", string(out)), zap.Error(why))
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Rejected(s.cfg.Ref)
	}
	return a
}

// keeps says what stays in force after a refusal or a failure.
func (s *Source) keeps() string {
	if s.deployed == nil {
		return "no revision deployed yet"
	}
	return "deployed revision " + s.deployed.Short() + " stays"
}

func (s *Source) record(t reconcile.EventType, r reconcile.Reason, msg string) {
	if s.cfg.Events != nil {
		s.cfg.Events.Record(reconcile.Event{Time: s.cfg.Now(), Type: t, Reason: r, Object: "Source/git", Message: msg})
	}
}
