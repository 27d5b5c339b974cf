package reconcile

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"resil.dev/resil/desired"
	"resil.dev/resil/internal/filestamp"
)

// Lease is an operator's pause of one object (`reconciler pause`): until
// Until, the planner corrects no drift of it and applies no manifest change
// to it (nor prunes it); it reports what it would do instead. A lease ends
// at Until (LeaseExpired) or when removed (`reconciler resume`).
//
//	             pause NAME --for D                 Until passes
//	(converging) ──────────────────▶ (paused) ─────────────────▶ (converging)
//	      ▲                              │      LeaseExpired event,
//	      └──────────────────────────────┘      lease file removed
//	             resume NAME (Resumed)
type Lease struct {
	// Object is an object name ("web": every kind of that name) or ID
	// ("Service/web").
	Object string    `json:"object"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until"`
	// UID is the user who paused (the login uid behind sudo when known)
	// and User its login name.
	UID  int    `json:"uid"`
	User string `json:"user"`
}

// Covers reports whether the lease pauses the object with this ID.
func (l Lease) Covers(id string) bool {
	if l.Object == id {
		return true
	}
	_, name, ok := strings.Cut(id, "/")
	return ok && l.Object == name
}

// Active reports whether the lease is in force at now.
func (l Lease) Active(now time.Time) bool { return now.Before(l.Until) }

// Describe is the lease as diff and the events say it:
// "paused until 14:32 by alice: hotfix INC-123" (local time; the date too
// when Until is not on now's day).
func (l Lease) Describe(now time.Time) string {
	u := l.Until.In(now.Location())
	layout := "15:04"
	if y, m, d := u.Date(); y != now.Year() || m != now.Month() || d != now.Day() {
		layout = "2006-01-02 15:04"
	}
	who := l.User
	if who == "" {
		who = fmt.Sprintf("uid %d", l.UID)
	}
	return fmt.Sprintf("paused until %s by %s: %s", u.Format(layout), who, l.Reason)
}

var leaseObjectRE = regexp.MustCompile(`^([A-Z][A-Za-z]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// CheckLeaseObject says what is wrong with a lease's object name ("" if
// nothing): an object name (web) or ID (Service/web).
func CheckLeaseObject(s string) string {
	if !leaseObjectRE.MatchString(s) || len(s) > 255 {
		return fmt.Sprintf("%q is not an object name (web) or ID (Service/web)", s)
	}
	return ""
}

// LeaseDirName is the folder of the state dir that holds the leases.
const LeaseDirName = "leases"

// LeaseDir keeps one JSON file per lease in a folder of the state dir.
// Writes are crash-safe (temp file, fsync, rename); a file that does not
// parse is ignored by List (reported in its error), never fatal.
type LeaseDir struct{ Dir string }

// NewLeaseDir returns the lease folder of stateDir.
func NewLeaseDir(stateDir string) LeaseDir {
	return LeaseDir{Dir: filepath.Join(stateDir, LeaseDirName)}
}

func (d LeaseDir) path(object string) string {
	return filepath.Join(d.Dir, url.PathEscape(object)+".json")
}

// Put writes (or replaces) the lease of l.Object.
func (d LeaseDir) Put(l Lease) error {
	if msg := CheckLeaseObject(l.Object); msg != "" {
		return errors.New(msg)
	}
	if err := os.MkdirAll(d.Dir, 0o755); err != nil {
		return fmt.Errorf("lease dir: %w", err)
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lease %s: %w", l.Object, err)
	}
	if err := writeStateFile(d.path(l.Object), append(b, '\n')); err != nil {
		return fmt.Errorf("write lease %s: %w", l.Object, err)
	}
	return nil
}

// Get returns the lease of object; (Lease{}, false, nil) when there is none.
func (d LeaseDir) Get(object string) (Lease, bool, error) {
	// Trusted: a lease written by anyone but root would let them hold
	// back every change and drift correction of an object.
	b, err := desired.ReadTrusted(d.path(object))
	if errors.Is(err, os.ErrNotExist) {
		return Lease{}, false, nil
	}
	if err != nil {
		return Lease{}, false, fmt.Errorf("read lease %s: %w", object, err)
	}
	var l Lease
	if err := json.Unmarshal(b, &l); err != nil {
		return Lease{}, false, fmt.Errorf("lease %s: %w", d.path(object), err)
	}
	return l, true, nil
}

// Remove deletes the lease of object; false when there was none.
func (d LeaseDir) Remove(object string) (bool, error) {
	err := os.Remove(d.path(object))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove lease %s: %w", object, err)
	}
	return true, nil
}

// RemoveIf deletes the lease of l.Object only if it is still l (a new
// pause written meanwhile stays).
func (d LeaseDir) RemoveIf(l Lease) error {
	cur, ok, err := d.Get(l.Object)
	if err != nil || !ok || !cur.Until.Equal(l.Until) || !cur.Since.Equal(l.Since) {
		return err
	}
	_, err = d.Remove(l.Object)
	return err
}

// List returns every readable lease, sorted by object. A missing folder
// is no leases; unreadable files are skipped and joined into the error.
func (d LeaseDir) List() ([]Lease, error) {
	ents, err := os.ReadDir(d.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lease dir: %w", err)
	}
	var out []Lease
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		obj, err := url.PathUnescape(strings.TrimSuffix(name, ".json"))
		if err != nil {
			continue
		}
		l, ok, err := d.Get(obj)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			l.Object = obj // the file name is authoritative
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Object < out[j].Object })
	return out, errors.Join(errs...)
}

// Signature changes whenever a lease file is written or removed; the agent
// polls it to notice pause and resume without waiting for a resync.
func (d LeaseDir) Signature() string {
	// The directory's own times change with every lease added or removed:
	// a pause and a resume between two polls leave the same files (none)
	// but not the same directory.
	var b strings.Builder
	if fi, err := os.Stat(d.Dir); err == nil {
		fmt.Fprintf(&b, ". %+v\n", filestamp.Of(fi))
	}
	ents, err := os.ReadDir(d.Dir)
	if err != nil {
		return b.String()
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s %d %d\n", e.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String()
}
