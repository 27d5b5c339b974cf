package gitsource

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"resil.dev/resil/desired"
)

// MaxBackoff caps the wait after failed fetches (unless the interval is
// longer).
const MaxBackoff = 10 * time.Minute

// NextDelay is the wait before the next fetch after failures consecutive
// failed ones: the interval, doubled per failure up to MaxBackoff (or the
// interval, if longer), with jitter j in [0,1) spreading it over ±10 %, so
// a fleet started at once does not fetch in step. It does no I/O.
func NextDelay(interval time.Duration, failures int, j float64) time.Duration {
	d := interval
	limit := max(MaxBackoff, interval)
	for i := 0; i < failures && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return time.Duration(float64(d) * (0.9 + 0.2*j))
}

// Run fetches at start, then every interval (NextDelay) and on every sync
// request, until ctx is done. wake is called after each deployment (the
// manifests watcher sees the swap too; wake must not block). A failed fetch
// keeps the deployed revision and backs off. Run returns nil when ctx is
// done, or an error if the source cannot start (its directory, git).
// It starts no goroutine of its own (fsnotify's reader is closed with it).
func (s *Source) Run(ctx context.Context, wake func()) error {
	if err := s.init(ctx); err != nil {
		return err
	}
	reqDir := filepath.Join(s.cfg.Dir, requestDir)
	var requests <-chan fsnotify.Event
	var watchErrs <-chan error
	var poll <-chan time.Time
	w, err := fsnotify.NewWatcher()
	if err == nil {
		err = w.Add(reqDir)
	}
	if err != nil {
		s.log.Warn("inotify unavailable, polling sync requests every second", zap.Error(err))
		t := time.NewTicker(time.Second)
		defer t.Stop()
		poll = t.C
	} else {
		defer w.Close()
		requests, watchErrs = w.Events, w.Errors
	}
	first := time.Duration(0)
	if s.primed {
		first = NextDelay(s.cfg.Interval, 0, rand.Float64())
	}
	timer := time.NewTimer(first)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-requests:
			if strings.HasPrefix(filepath.Base(ev.Name), ".") || !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Rename) {
				continue
			}
			s.log.Debug("sync requested")
		case err := <-watchErrs:
			// An overflow may have dropped a request: fetch.
			s.log.Warn("sync request watch error", zap.Error(err))
		case <-poll:
			if ents, _ := os.ReadDir(reqDir); !hasRequest(ents) {
				continue
			}
		case <-timer.C:
		}
		takeRequests(s.cfg.Dir)
		a, err := s.attempt(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			failures++
		} else {
			failures = 0
		}
		if a.Outcome == OutcomeDeployed {
			wake()
		}
		delay := NextDelay(s.cfg.Interval, failures, rand.Float64())
		if err != nil {
			s.log.Warn("fetch failed, keeping the deployed revision", zap.Int("failures", failures), zap.Duration("retry_in", delay), zap.Error(err))
		} else {
			s.log.Debug("fetched", zap.String("head", a.Head), zap.String("outcome", string(a.Outcome)))
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(delay)
	}
}

// attempt is Sync, recorded in last.json.
func (s *Source) attempt(ctx context.Context) (Attempt, error) {
	a, err := s.Sync(ctx)
	if err != nil {
		a.Error = err.Error()
	}
	if ctx.Err() == nil {
		if werr := writeJSON(filepath.Join(s.cfg.Dir, lastFile), a); werr != nil {
			s.log.Warn("last attempt not recorded", zap.Error(werr))
		}
	}
	return a, err
}

// Prime deploys the first revision before the loop's first pass, when
// none is deployed yet, so the agent does not start on a missing manifests
// directory: one attempt, bounded by timeout. Its outcome is Run's first
// fetch; a failure is logged and left to Run.
func (s *Source) Prime(ctx context.Context, timeout time.Duration) {
	if err := s.init(ctx); err != nil || s.deployed != nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := s.attempt(pctx); err != nil {
		s.log.Warn("first revision not deployed before the first pass", zap.Error(err))
		return
	}
	s.primed = true
}

func hasRequest(ents []os.DirEntry) bool {
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			return true
		}
	}
	return false
}

// Checkout materialises rev (a commit, a ref or a branch of the recorded
// repository) as the agent would deploy it, into into (which must not
// exist), for `reconciler diff --revision`. It writes nothing in dir: rev
// is looked up in the source's mirror, else fetched into a temporary
// repository beside into that borrows the mirror's objects (git
// alternates). The revision's signature is checked when the record names
// allowed signers, its manifests validated and its descent from the
// deployed commit checked, as the agent does before a deploy: verr says
// why the agent would refuse it (nil: it would not). The local drop-ins,
// the allowed signers and the credential files are read with opts, the
// caller's load options (copyDropIns, privateCopies).
func Checkout(ctx context.Context, dir string, rec *Record, rev, into string, opts desired.Options) (r *Revision, verr error, err error) {
	if rev == "" || strings.HasPrefix(rev, "-") {
		return nil, nil, fmt.Errorf("bad revision %q", rev)
	}
	// git and ssh read checked private copies (privateCopies), here in
	// into's parent, the caller's temp dir.
	priv, err := privateCopies(filepath.Dir(into), rec.VerifySigners,
		Credentials{SSHKey: rec.SSHKey, SSHKnownHosts: rec.SSHKnownHosts, TokenFile: rec.TokenFile}, opts)
	if err != nil {
		return nil, nil, err
	}
	creds := priv.creds
	mirror := filepath.Join(dir, repoDir)
	g := &git{bin: "git", dir: mirror, creds: creds}
	commit, err := resolve(ctx, g, rev)
	if err != nil {
		g = &git{bin: "git", dir: filepath.Join(filepath.Dir(into), "fetch.git"), creds: creds}
		if err := g.ensure(ctx); err != nil {
			return nil, nil, err
		}
		if st, serr := os.Stat(filepath.Join(mirror, "objects")); serr == nil && st.IsDir() {
			if err := os.WriteFile(filepath.Join(g.dir, "objects", "info", "alternates"), []byte(filepath.Join(mirror, "objects")+"\n"), 0o644); err != nil {
				return nil, nil, err
			}
		}
		if _, ferr := g.run(ctx, "fetch", "--quiet", "--no-tags", "--force", "--no-write-fetch-head", "--", rec.Repo, "+"+rev+":refs/resil/diff"); ferr != nil {
			return nil, nil, fmt.Errorf("revision %s: not in the mirror, and %w", rev, ferr)
		}
		if commit, err = resolve(ctx, g, "refs/resil/diff"); err != nil {
			return nil, nil, err
		}
	}
	d, err := describe(ctx, g, commit)
	if err != nil {
		return nil, nil, err
	}
	d.Ref = rev
	if rec.VerifySigners != "" {
		d.Signer, verr = verify(ctx, g, priv.signers, rec.VerifySigners, commit)
	}
	c, err := materialise(ctx, g, commit, rec.Paths, rec.LocalDropIns, into, opts)
	if errors.Is(err, ErrInvalid) {
		// Not a revision the agent would deploy (a symlink, a path
		// missing, over the cap): nothing to diff against.
		return nil, verr, err
	}
	if err != nil {
		return nil, verr, err
	}
	// What else the agent checks before it deploys a head: its manifests
	// all valid (any error refuses the whole revision), and that it
	// descends from the deployed commit.
	if err := validate(into, opts, c, nil); err != nil {
		verr = errors.Join(verr, err)
	}
	if !rec.AllowForcePush {
		if dep, derr := Deployed(dir); derr == nil && dep != nil && dep.Commit != commit {
			_, cerr := g.run(ctx, "cat-file", "-e", dep.Commit+"^{commit}")
			_, aerr := g.run(ctx, "merge-base", "--is-ancestor", dep.Commit, commit)
			switch {
			case cerr != nil || exitCode(aerr) == 1:
				verr = errors.Join(verr, fmt.Errorf("does not descend from the deployed commit %s (history rewritten; the agent's --allow-force-push deploys it)", dep.Short()))
			case aerr != nil:
				return nil, verr, fmt.Errorf("descent from the deployed commit %s: %w", dep.Short(), aerr)
			}
		}
	}
	return &d, verr, nil
}

// resolve finds rev in the mirror; HEAD is the last fetched head.
func resolve(ctx context.Context, g *git, rev string) (string, error) {
	if rev == "HEAD" {
		rev = "refs/resil/head"
	}
	out, err := g.run(ctx, "rev-parse", "--verify", "--quiet", "--end-of-options", rev+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("revision %s: unknown", rev)
	}
	return strings.TrimSpace(string(out)), nil
}
