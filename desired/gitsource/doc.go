// Package gitsource is the agent's GitOps source (`reconciler run --source
// git`): it fetches one ref of a git repository on an interval (with
// jitter) and on request (`reconciler sync`), and deploys each new head
// commit as a whole, or not at all.
//
// A head commit is deployed only when:
//
//   - it is signed by a key of the SSH allowed-signers file, when one is
//     configured (`git verify-commit` with gpg.format=ssh);
//   - it descends from the deployed commit (a force-push that rewrites
//     history is refused unless AllowForcePush);
//   - its manifests, composed from the configured paths into one directory,
//     validate (desired.Load with the agent's load options: no file:line
//     error, no empty file).
//
// Otherwise it is refused (RevisionRejected, RevisionInvalid events) and the
// deployed revision stays in force as one unit. Deploying is crash-only:
//
//	<dir>/repo.git              bare mirror; refs/resil/head = the last fetched head,
//	                            refs/resil/deployed keeps the deployed commit reachable
//	<dir>/revs/.tmp-*           a revision being materialised (removed at start-up)
//	<dir>/revs/KEY/             a materialised revision (fsynced before it gets its name),
//	                            with .resil-revision.json (hidden: Load ignores it)
//	<dir>/manifests -> revs/KEY the directory the loop reads, switched by symlink(tmp)+rename
//	<dir>/source.json           the source's configuration (for diff --revision, status)
//	<dir>/last.json             the outcome of the last attempt (for sync)
//	<dir>/sync/                 request files of `reconciler sync`
//
// A kill -9 at any instant leaves the symlink on the previous or the new
// revision, never on a mix: a revision directory is complete before the
// symlink can name it, and the symlink is replaced by one rename. Old
// revisions are garbage-collected (the current and the previous stay).
//
// Why the git binary: git's own implementation is the one whose fetch,
// pack verification, transports (ssh, https with credential helpers, file)
// and commit signature verification (gpg.format=ssh, ssh-keygen -Y verify)
// are exercised by every git user; the maintained Go library (go-git)
// verifies OpenPGP signatures only, not SSH ones, and differs from git in
// transport and config details. The agent runs git with a fixed
// environment (no system or global config, no terminal prompt, LC_ALL=C)
// and never puts a credential in an argument: an SSH key is named in
// GIT_SSH_COMMAND, a token is read from its file by a credential helper
// that git runs (the file's path is in the environment, its content in no
// argv, environment or log).
//
// OpenPGP keyrings (gpg.format=openpgp) are not supported: only SSH
// allowed-signers files.
//
// Files: source.go (Source, Sync: one fetch and deploy), run.go (Prime:
// the first revision before the loop's first pass; Run: the interval,
// backoff and sync requests; Checkout for diff --revision), git.go
// (running git, credentials),
// materialise.go (git archive of the paths into one directory, validation),
// layout.go (the state layout: swap, garbage collection, records).
package gitsource
