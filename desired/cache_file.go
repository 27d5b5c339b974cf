package desired

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"

	"resil.dev/resil/internal/atomicfile"
	"resil.dev/resil/internal/filestamp"
	"resil.dev/resil/internal/par"
)

// The cache file keeps a FileCache from one command to the next, so a
// one-shot `apply` or `diff` on an unchanged directory decodes the objects
// it parsed before instead of parsing YAML again: with 1000 manifests the
// parse and its strict checks cost about 100 ms, decoding the cache about
// 15 ms. Every manifest is still opened with every check, and answered
// from the cache only when its identity (device, inode, size, modification
// and change time of the open descriptor) is the one cached.
//
// The file is trusted like the manifests are: it must be a regular file
// owned by root or by the caller and not writable by group or other,
// checked on the descriptor read. It is written with a temporary file,
// fsync and rename (renameio); a file that does not decode, or that a
// different executable wrote (its stamp: a new build may parse
// differently), is ignored and replaced on the next save. Objects are
// stored as their documents (the JSON Load decoded them from) and decoded
// again the same way, not as encoding/json would encode the structs,
// which would lose what omitempty drops (wantedBy: [] is not wantedBy
// unset). TestCacheFileRoundTrip checks every example and test manifest
// comes back equal.

// CacheFileName is the cache file's name in the agent's state directory.
const CacheFileName = "manifest-cache.json"

const cacheFileFormat = 2

// cacheFileMaxBytes bounds what is read: a file this large is ignored.
const cacheFileMaxBytes = 256 << 20

// The file is a header line (cacheFileHeader) and then one line per
// manifest file (cacheFileEntry), so the lines decode in parallel. JSON
// never puts a raw newline inside a value.
type cacheFileHeader struct {
	Format int    `json:"format"`
	Stamp  string `json:"stamp"`
	Dir    string `json:"dir"`
}

type cacheFileEntry struct {
	File    string         `json:"file"`
	Dev     uint64         `json:"dev"`
	Ino     uint64         `json:"ino"`
	Size    int64          `json:"size"`
	Mtime   int64          `json:"mtime"`
	Ctime   int64          `json:"ctime"`
	Objects []cachedObject `json:"objects"`
}

// cachedObject is an Object as the cache file holds it: its document
// (the JSON it was decoded from), decoded again as Load's last step does.
type cachedObject struct {
	Doc      int             `json:"doc"`
	Kind     Kind            `json:"kind"`
	Document json.RawMessage `json:"document"`
}

// LoadFileCache returns a cache for Options.Cache holding what the cache
// file at path holds when it was written under stamp (the caller's
// identity of its own executable). It always returns a usable cache; err
// says why the file was not used (missing, refused, unreadable, another
// stamp), for a debug log.
func LoadFileCache(path, stamp string) (*FileCache, error) {
	c := NewFileCache()
	c.stamp = stamp
	data, err := ReadTrusted(path)
	if err != nil {
		return c, err
	}
	head, rest, _ := bytes.Cut(data, []byte("\n"))
	var h cacheFileHeader
	if err := json.Unmarshal(head, &h); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if h.Format != cacheFileFormat || h.Stamp != stamp {
		return c, fmt.Errorf("%s: written by another build (format %d, stamp %q)", path, h.Format, h.Stamp)
	}
	var lines [][]byte
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		if len(line) > 0 {
			lines = append(lines, line)
		}
	}
	// Decoding is JSON and validation, all CPU: the lines are spread over
	// the processors.
	entries := make([]cachedFile, len(lines))
	names := make([]string, len(lines))
	errs := make([]error, len(lines))
	par.For(len(lines), min(runtime.GOMAXPROCS(0), 8), 64, func(i int) {
		names[i], entries[i], errs[i] = decodeCacheLine(lines[i])
	})
	files := make(map[string]cachedFile, len(lines))
	for i := range lines {
		if errs[i] != nil {
			return c, fmt.Errorf("%s: line %d: %w", path, i+2, errs[i])
		}
		if len(entries[i].objs) > 0 {
			files[names[i]] = entries[i]
		}
	}
	c.files, c.dir = files, h.Dir
	return c, nil
}

// decodeCacheLine decodes one manifest file's line.
func decodeCacheLine(line []byte) (string, cachedFile, error) {
	var e cacheFileEntry
	if err := json.Unmarshal(line, &e); err != nil {
		return "", cachedFile{}, err
	}
	objs := make([]*Object, 0, len(e.Objects))
	for _, co := range e.Objects {
		o, err := decodeCached(co.Kind, co.Document, Source{File: e.File, Doc: co.Doc})
		if err != nil {
			return "", cachedFile{}, fmt.Errorf("%s: %w", e.File, err)
		}
		objs = append(objs, o)
	}
	return e.File, cachedFile{id: filestamp.Stamp{Dev: e.Dev, Ino: e.Ino, Size: e.Size, Mtime: e.Mtime, Ctime: e.Ctime}, objs: objs}, nil
}

// ReadTrusted reads a file of the agent's state dir that it acts on (the
// manifest cache, the last good objects): not through a symlink, a regular
// file owned by root or this user and not writable by group or others,
// checked on the open descriptor, at most 256 MiB. A state file anyone
// else could write would otherwise turn into root-run programs past the
// manifests' own checks.
func ReadTrusted(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s: not a regular file", path)
	case !ok || (st.Uid != 0 && int(st.Uid) != os.Geteuid()):
		return nil, fmt.Errorf("%s: refused: not owned by root or by this user", path)
	case fi.Mode().Perm()&0o022 != 0:
		return nil, fmt.Errorf("%s: refused: writable by group or other (mode %04o)", path, fi.Mode().Perm())
	case fi.Size() > cacheFileMaxBytes:
		return nil, fmt.Errorf("%s: %d bytes, more than %d", path, fi.Size(), cacheFileMaxBytes)
	}
	return io.ReadAll(io.LimitReader(f, cacheFileMaxBytes+1))
}

// Save writes the cache to path (temporary file, fsync, rename) when its
// files changed since it was loaded or last saved; a cache no load has
// stored into yet is not written. A killed writer's temporary files
// (".manifest-cache.json" and digits, from renameio) are removed first.
func (c *FileCache) Save(path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dirty || c.dir == "" {
		return nil
	}
	names := make([]string, 0, len(c.files))
	for f := range c.files {
		names = append(names, f)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf) // one value per line
	if err := enc.Encode(cacheFileHeader{Format: cacheFileFormat, Stamp: c.stamp, Dir: c.dir}); err != nil {
		return fmt.Errorf("save manifest cache: %w", err)
	}
	for _, f := range names {
		cached := c.files[f]
		e := cacheFileEntry{File: f, Dev: cached.id.Dev, Ino: cached.id.Ino, Size: cached.id.Size,
			Mtime: cached.id.Mtime, Ctime: cached.id.Ctime, Objects: make([]cachedObject, 0, len(cached.objs))}
		for _, o := range cached.objs {
			if len(o.document) == 0 || len(o.Source.DropIns) > 0 {
				return fmt.Errorf("save manifest cache: %s has no document of its own", o.ID())
			}
			e.Objects = append(e.Objects, cachedObject{Doc: o.Source.Doc, Kind: o.Kind, Document: o.document})
		}
		if err := enc.Encode(e); err != nil {
			return fmt.Errorf("save manifest cache: %w", err)
		}
	}
	dir := filepath.Dir(path)
	atomicfile.RemoveTemps(dir, filepath.Base(path))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save manifest cache: %w", err)
	}
	// 0644 like the last good objects: the manifests it caches are
	// readable, and `diff` run by another user reads it too.
	if err := atomicfile.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("save manifest cache: %w", err)
	}
	c.dirty = false
	return nil
}

// decodeCached rebuilds an object of a cached file from its document the
// way Load's last step (finish) built it: the header, the spec decoded
// into its type (in one pass, the kind being known), the same validation.
// The document passed every check of Load when it was cached; what is
// skipped is the YAML parse and the checks that only serve error
// positions (types, unknown fields). An object that no longer validates,
// or whose document says another kind, makes the file's line unusable.
func decodeCached(kind Kind, doc []byte, src Source) (*Object, error) {
	if len(doc) == 0 {
		return nil, errors.New("an object without its document")
	}
	o := &Object{Source: src, document: doc}
	var err error
	switch kind {
	case KindService:
		o.Service, err = decodeDocument[ServiceSpec](doc, o)
	case KindTimer:
		o.Timer, err = decodeDocument[TimerSpec](doc, o)
	case KindWatchdog:
		o.Watchdog, err = decodeDocument[WatchdogSpec](doc, o)
	default:
		return nil, fmt.Errorf("kind %q", kind)
	}
	if err != nil {
		return nil, err
	}
	if o.Kind != kind {
		return nil, fmt.Errorf("document of kind %q cached as %q", o.Kind, kind)
	}
	if probs := validateObject(o); len(probs) > 0 {
		return nil, fmt.Errorf("%s: %s: %s", o.ID(), probs[0].p, probs[0].detail)
	}
	return o, nil
}

// decodeDocument decodes a whole document with a spec of type T into o's
// header fields and returns the spec.
func decodeDocument[T any](doc []byte, o *Object) (*T, error) {
	var d struct {
		APIVersion string     `json:"apiVersion"`
		Kind       Kind       `json:"kind"`
		Metadata   ObjectMeta `json:"metadata"`
		Spec       *T         `json:"spec"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, err
	}
	if d.Spec == nil {
		return nil, errors.New("a document without its spec")
	}
	o.APIVersion, o.Kind, o.Metadata = d.APIVersion, d.Kind, d.Metadata
	return d.Spec, nil
}
