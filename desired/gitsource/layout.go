package gitsource

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Names in the source's directory.
const (
	// ManifestsLink is the symlink the loop reads (--manifests).
	ManifestsLink = "manifests"
	revsDir       = "revs"
	repoDir       = "repo.git"
	// RecordFile is the source's configuration as run last wrote it.
	RecordFile = "source.json"
	lastFile   = "last.json"
	requestDir = "sync"
	// revisionFile, inside a revision directory, records its revision.
	// Hidden, so Load never reads it.
	revisionFile = ".resil-revision.json"
	tmpPrefix    = ".tmp-"
)

// Dir is the source's directory under an agent's state directory.
func Dir(stateDir string) string { return filepath.Join(stateDir, "git") }

// Revision is a deployed (or inspected) commit.
type Revision struct {
	Commit     string    `json:"commit"`
	Subject    string    `json:"subject"`
	Author     string    `json:"author"`
	AuthorTime time.Time `json:"authorTime"`
	Ref        string    `json:"ref,omitempty"`
	// Signer is the principal whose key signed the commit, when verified.
	Signer string `json:"signer,omitempty"`
	// LocalDropIns is the hash of the local drop-ins composed in.
	LocalDropIns string `json:"localDropIns,omitempty"`
	// Deployed is when the manifests directory was switched to it.
	Deployed time.Time `json:"deployed,omitzero"`
}

// Short is the commit's abbreviated hash.
func (r Revision) Short() string {
	if len(r.Commit) > 12 {
		return r.Commit[:12]
	}
	return r.Commit
}

// String is how status, diff and events name a revision:
// `0123456789ab "subject" (2026-12-01T03:00:00Z)`.
func (r Revision) String() string {
	return fmt.Sprintf("%s %q (%s)", r.Short(), r.Subject, r.AuthorTime.UTC().Format(time.RFC3339))
}

// Deployed returns the revision the manifests link of the source directory
// dir names: (nil, nil) when none was deployed yet.
func Deployed(dir string) (*Revision, error) {
	target, err := os.Readlink(filepath.Join(dir, ManifestsLink))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(dir, target)
	}
	var r Revision
	if err := readJSON(filepath.Join(target, revisionFile), &r); err != nil {
		return nil, fmt.Errorf("deployed revision: %w", err)
	}
	return &r, nil
}

// Record is the source's configuration as run last wrote it (source.json),
// so diff --revision composes a commit the way the agent does.
type Record struct {
	Repo           string   `json:"repo"`
	Ref            string   `json:"ref"`
	Paths          []string `json:"paths"`
	VerifySigners  string   `json:"verifySigners,omitempty"`
	AllowForcePush bool     `json:"allowForcePush,omitempty"`
	LocalDropIns   string   `json:"localDropIns,omitempty"`
	SSHKey         string   `json:"sshKey,omitempty"`
	SSHKnownHosts  string   `json:"sshKnownHosts,omitempty"`
	TokenFile      string   `json:"tokenFile,omitempty"`
}

// ReadRecord reads source.json of the source directory dir: (nil, nil)
// when the agent never ran with a git source there.
func ReadRecord(dir string) (*Record, error) {
	var r Record
	err := readJSON(filepath.Join(dir, RecordFile), &r)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Attempt is the outcome of the last fetch (last.json).
type Attempt struct {
	Time    time.Time `json:"time"`
	Outcome Outcome   `json:"outcome"`
	Head    string    `json:"head,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// LastAttempt reads last.json: (nil, nil) when there is none.
func LastAttempt(dir string) (*Attempt, error) {
	var a Attempt
	err := readJSON(filepath.Join(dir, lastFile), &a)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// RequestSync asks the source running on dir to fetch now (`reconciler
// sync`). It drops a request file and returns its path; the source removes
// it when it starts the fetch, then writes last.json.
func RequestSync(dir string) (string, error) {
	rd := filepath.Join(dir, requestDir)
	if err := os.MkdirAll(rd, 0o700); err != nil {
		return "", fmt.Errorf("sync request: %w", err)
	}
	name := filepath.Join(rd, strconv.FormatInt(time.Now().UnixNano(), 10)+"-"+strconv.Itoa(os.Getpid()))
	if err := writeFileAtomic(name, nil); err != nil {
		return "", fmt.Errorf("sync request: %w", err)
	}
	return name, nil
}

// takeRequests removes every pending request and says whether there was one.
func takeRequests(dir string) bool {
	ents, err := os.ReadDir(filepath.Join(dir, requestDir))
	if err != nil {
		return false
	}
	any := false
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		_ = os.Remove(filepath.Join(dir, requestDir, e.Name()))
		any = true
	}
	return any
}

func readJSON(name string, v any) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(name, append(b, '\n'))
}

// writeFileAtomic writes data to a temp file in name's directory, fsyncs
// it, renames it to name and fsyncs the directory.
func writeFileAtomic(name string, data []byte) error { return writeFileAtomicMode(name, data, 0o644) }

// writeFileAtomicMode is writeFileAtomic giving the file mode perm (the
// temp file is created 0600, so the data is never readable by others
// before the chmod).
func writeFileAtomicMode(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncPath(filepath.Dir(name))
}

// swap points dir/manifests at revs/key: a symlink under a temp name, then
// one rename over the old link, then an fsync of dir. A crash leaves the
// old or the new link, and at worst a stray temp link.
func swap(dir, key string) error {
	tmp := filepath.Join(dir, tmpPrefix+ManifestsLink)
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Join(revsDir, key), tmp); err != nil {
		return fmt.Errorf("switch manifests: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, ManifestsLink)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switch manifests: %w", err)
	}
	if err := syncPath(dir); err != nil {
		return fmt.Errorf("switch manifests: %w", err)
	}
	return nil
}

// current is the revision key the manifests link names ("" if none).
func current(dir string) string {
	target, err := os.Readlink(filepath.Join(dir, ManifestsLink))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

// gc removes every revision directory but keep (the current and the
// previous key), and leftovers of interrupted materialisations.
func gc(dir string, keep ...string) error {
	revs := filepath.Join(dir, revsDir)
	ents, err := os.ReadDir(revs)
	if err != nil {
		return err
	}
	k := map[string]bool{}
	for _, n := range keep {
		if n != "" {
			k[n] = true
		}
	}
	var errs []error
	for _, e := range ents {
		if k[e.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(revs, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// previous is the newest revision directory other than cur (by the time
// it was deployed), for the garbage collection at start-up.
func previous(dir, cur string) string {
	ents, err := os.ReadDir(filepath.Join(dir, revsDir))
	if err != nil {
		return ""
	}
	type rv struct {
		key string
		t   time.Time
	}
	var list []rv
	for _, e := range ents {
		if e.Name() == cur || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		var r Revision
		if readJSON(filepath.Join(dir, revsDir, e.Name(), revisionFile), &r) == nil {
			list = append(list, rv{e.Name(), r.Deployed})
		}
	}
	if len(list) == 0 {
		return ""
	}
	sort.Slice(list, func(i, j int) bool { return list[i].t.After(list[j].t) })
	return list[0].key
}
