package desired

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/google/renameio/v2"
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

const cacheFileFormat = 1

// cacheFileMaxBytes bounds what is read: a file this large is ignored.
const cacheFileMaxBytes = 256 << 20

type cacheFile struct {
	Format int              `json:"format"`
	Stamp  string           `json:"stamp"`
	Dir    string           `json:"dir"`
	Files  []cacheFileEntry `json:"files"`
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
	data, err := readTrusted(path)
	if err != nil {
		return c, err
	}
	var cf cacheFile
	if err := json.Unmarshal(data, &cf); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if cf.Format != cacheFileFormat || cf.Stamp != stamp {
		return c, fmt.Errorf("%s: written by another build (format %d, stamp %q)", path, cf.Format, cf.Stamp)
	}
	files := make(map[string]cachedFile, len(cf.Files))
	for _, e := range cf.Files {
		objs := make([]*Object, 0, len(e.Objects))
		for _, co := range e.Objects {
			o, err := decodeCached(co.Document, Source{File: e.File, Doc: co.Doc})
			if err != nil {
				return c, fmt.Errorf("%s: %s: %w", path, e.File, err)
			}
			objs = append(objs, o)
		}
		if len(objs) == 0 {
			continue
		}
		files[e.File] = cachedFile{id: fileID{dev: e.Dev, ino: e.Ino, size: e.Size, mtime: e.Mtime, ctime: e.Ctime}, objs: objs}
	}
	c.files, c.dir = files, cf.Dir
	return c, nil
}

// readTrusted reads path when it is a regular file owned by root or the
// caller, not writable by group or other, checked on the open descriptor.
func readTrusted(path string) ([]byte, error) {
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
	cf := cacheFile{Format: cacheFileFormat, Stamp: c.stamp, Dir: c.dir, Files: make([]cacheFileEntry, 0, len(c.files))}
	for f, cached := range c.files {
		e := cacheFileEntry{File: f, Dev: cached.id.dev, Ino: cached.id.ino, Size: cached.id.size,
			Mtime: cached.id.mtime, Ctime: cached.id.ctime, Objects: make([]cachedObject, 0, len(cached.objs))}
		for _, o := range cached.objs {
			if len(o.document) == 0 || len(o.Source.DropIns) > 0 {
				return fmt.Errorf("save manifest cache: %s has no document of its own", o.ID())
			}
			e.Objects = append(e.Objects, cachedObject{Doc: o.Source.Doc, Document: o.document})
		}
		cf.Files = append(cf.Files, e)
	}
	sort.Slice(cf.Files, func(i, j int) bool { return cf.Files[i].File < cf.Files[j].File })
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(cf); err != nil {
		return fmt.Errorf("save manifest cache: %w", err)
	}
	dir := filepath.Dir(path)
	removeCacheTemps(dir, filepath.Base(path))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save manifest cache: %w", err)
	}
	// 0644 like the last good objects: the manifests it caches are
	// readable, and `diff` run by another user reads it too.
	if err := renameio.WriteFile(path, buf.Bytes(), 0o644, renameio.WithTempDir(dir)); err != nil {
		return fmt.Errorf("save manifest cache: %w", err)
	}
	c.dirty = false
	return nil
}

// removeCacheTemps deletes renameio's temporary files for name in dir.
func removeCacheTemps(dir, name string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := "." + name
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(n, prefix) || len(n) == len(prefix) || strings.Trim(n[len(prefix):], "0123456789") != "" {
			continue
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return
		}
	}
}

// decodeCached rebuilds an object of a cached file from its document the
// way Load's last step (finish) built it: the header, the spec decoded
// into its type, the same validation. The document passed every check of
// Load when it was cached; what is skipped is the YAML parse and the
// checks that only serve error positions (types, unknown fields). An
// object that no longer validates makes the whole file unusable.
func decodeCached(doc []byte, src Source) (*Object, error) {
	if len(doc) == 0 {
		return nil, errors.New("an object without its document")
	}
	var h header
	if err := json.Unmarshal(doc, &h); err != nil {
		return nil, err
	}
	o := &Object{APIVersion: h.APIVersion, Kind: h.Kind, Metadata: h.Metadata, Source: src, document: doc}
	var target any
	switch o.Kind {
	case KindService:
		o.Service = &ServiceSpec{}
		target = o.Service
	case KindTimer:
		o.Timer = &TimerSpec{}
		target = o.Timer
	case KindWatchdog:
		o.Watchdog = &WatchdogSpec{}
		target = o.Watchdog
	default:
		return nil, fmt.Errorf("kind %q", o.Kind)
	}
	if err := json.Unmarshal(h.Spec, target); err != nil {
		return nil, err
	}
	if probs := validateObject(o); len(probs) > 0 {
		return nil, fmt.Errorf("%s: %s: %s", o.ID(), probs[0].p, probs[0].detail)
	}
	return o, nil
}
