package reconcile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"resil.dev/resil/desired"
	"resil.dev/resil/internal/atomicfile"
)

// LastGoodStore keeps the last good desired objects across agent restarts,
// so a restarted agent keeps in force exactly what it kept before it was
// killed (see desiredObjects). Declared here, by its consumer.
type LastGoodStore interface {
	// Load returns the persisted objects by ID, or none. Entries that
	// cannot be rebuilt are left out; the error says which (a warning,
	// never fatal: what it returns is still usable).
	Load() (map[string]*desired.Object, error)
	// Save persists objs (the effective desired objects of a pass) crash
	// safely; it writes nothing when they did not change.
	Save(objs []*desired.Object) error
}

// LastGoodFileName is the file, in the agent's state dir, that holds the
// last good desired objects.
const LastGoodFileName = "lastgood.json"

// lastGoodVersion is the format of lastgood.json.
const lastGoodVersion = 1

type lastGoodFile struct {
	Version int             `json:"version"`
	Objects []lastGoodEntry `json:"objects"`
}

// lastGoodEntry is what rebuilds one object exactly: the merged document
// (base and drop-ins) it was decoded from and where it came from.
type lastGoodEntry struct {
	ID       string          `json:"id"`
	Source   lastGoodSource  `json:"source"`
	Document json.RawMessage `json:"document"`
}

type lastGoodSource struct {
	File    string   `json:"file"`
	Doc     int      `json:"doc"`
	DropIns []string `json:"dropIns,omitempty"`
}

// LastGoodFile is a LastGoodStore in <dir>/lastgood.json. The file is
// replaced atomically (a temporary file in the same directory, fsync,
// rename), so a kill -9 at any instant leaves the old or the new version.
type LastGoodFile struct {
	dir      string
	readOnly bool
	// written is what the file holds (as loaded or last saved).
	written []byte
}

// NewLastGoodFile returns the store in dir. A read-only store (diff) loads
// and never writes, nor creates dir.
func NewLastGoodFile(dir string, readOnly bool) *LastGoodFile {
	return &LastGoodFile{dir: dir, readOnly: readOnly}
}

// Path is the file's path.
func (f *LastGoodFile) Path() string { return filepath.Join(f.dir, LastGoodFileName) }

// Load implements LastGoodStore. A missing file is no error; a file that
// does not parse, or an object that fails the strict decode and
// validation of desired.DecodeObject, is left out with an error. A
// writable store first removes the temporary files a killed agent left
// (".lastgood.json<digits>" from renameio).
func (f *LastGoodFile) Load() (map[string]*desired.Object, error) {
	if !f.readOnly {
		f.removeTemp()
	}
	data, err := desired.ReadTrusted(f.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read last good objects: %w", err)
	}
	f.written = data
	var lf lastGoodFile
	if err := json.Unmarshal(data, &lf); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path(), err)
	}
	if lf.Version != lastGoodVersion {
		return nil, fmt.Errorf("%s: version %d, want %d", f.Path(), lf.Version, lastGoodVersion)
	}
	out := map[string]*desired.Object{}
	var errs []error
	for _, e := range lf.Objects {
		o, err := desired.DecodeObject(e.Document, desired.Source{File: e.Source.File, Doc: e.Source.Doc, DropIns: e.Source.DropIns})
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %s: %w", f.Path(), e.ID, err))
		case o.ID() != e.ID:
			errs = append(errs, fmt.Errorf("%s: %s: the document is %s", f.Path(), e.ID, o.ID()))
		case out[e.ID] != nil:
			errs = append(errs, fmt.Errorf("%s: %s: listed twice", f.Path(), e.ID))
		default:
			out[e.ID] = o
		}
	}
	return out, errors.Join(errs...)
}

// Save implements LastGoodStore. Objects without a document (not loaded
// from manifests) cannot be rebuilt and are left out.
func (f *LastGoodFile) Save(objs []*desired.Object) error {
	if f.readOnly {
		return nil
	}
	data, n, err := encodeLastGood(objs)
	if err != nil {
		return fmt.Errorf("encode last good objects: %w", err)
	}
	if f.written == nil {
		// Not loaded (the reconciler loads only when it needs to): compare
		// with the file as it is.
		f.written, _ = os.ReadFile(f.Path())
	}
	if bytes.Equal(data, f.written) {
		return nil
	}
	if n == 0 && f.written == nil {
		if _, err := os.Stat(f.Path()); errors.Is(err, fs.ErrNotExist) {
			return nil // nothing to remember, nothing remembered
		}
	}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return fmt.Errorf("save last good objects: %w", err)
	}
	// 0644 like the unit files it renders to (the manifests are readable
	// too), so `diff` run by a non-root user plans from the same memory.
	// The temporary file goes beside the target (same file system, and a
	// kill -9 leaves it where the agent cleans up), never in $TMPDIR.
	if err := writeStateFile(f.Path(), data); err != nil {
		return fmt.Errorf("save last good objects: %w", err)
	}
	f.written = data
	return nil
}

// removeTemp deletes the temporary files of a Save interrupted by a kill -9.
func (f *LastGoodFile) removeTemp() { atomicfile.RemoveTemps(f.dir, LastGoodFileName) }

// encodeLastGood encodes the objects that have a document as lastgood.json,
// one object per line, and returns how many. It writes the documents as
// they are instead of through encoding/json, which validates, compacts
// and (indented) re-indents every one of them: 6 ms with 1000 objects, on
// every pass. A document is always JSON: desired's YAML-to-JSON output, or
// taken from its cache file, which encoding/json validated whole.
func encodeLastGood(objs []*desired.Object) ([]byte, int, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "{\"version\":%d,\"objects\":[", lastGoodVersion)
	n := 0
	for _, o := range objs {
		doc := o.Document()
		if len(doc) == 0 {
			continue
		}
		src, err := json.Marshal(lastGoodSource{File: o.Source.File, Doc: o.Source.Doc, DropIns: o.Source.DropIns})
		if err != nil {
			return nil, 0, err
		}
		id, err := json.Marshal(o.ID())
		if err != nil {
			return nil, 0, err
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n{\"id\":")
		b.Write(id)
		b.WriteString(",\"source\":")
		b.Write(src)
		b.WriteString(",\"document\":")
		b.Write(bytes.TrimSpace(doc))
		b.WriteByte('}')
		n++
	}
	b.WriteString("\n]}\n")
	return b.Bytes(), n, nil
}
