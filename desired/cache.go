package desired

import (
	"errors"
	"path/filepath"
	"slices"
	"sync"

	"go.yaml.in/yaml/v3"

	"resil.dev/resil/internal/filestamp"
)

// FileCache remembers, from one Load to the next, the objects of each
// manifest file that loaded cleanly: no problem reported in it, every
// document an object, none with drop-ins. A later Load still opens such a
// file with every check (the openat walk, owner and mode on the
// descriptor, the size caps, the read lease that finds a writer) and then,
// when the file is the same — device, inode, size, modification and
// change time of the open descriptor — and no drop-in folder for its
// objects has appeared, takes its objects as they were instead of reading
// and parsing it again. Any write to a file changes its ctime, whatever it
// does to the size and mtime, and a file renamed into place is another
// inode, so an edit is never missed.
//
// The whole-set checks (duplicates, references, host selection) run on
// every Load. A problem they find in a file the cache answered for makes
// Load start again without the cache, so the problem is reported with its
// position as always.
//
// A file changed within filestamp.RacyWindow before a load began is read
// and parsed, not cached: file times come from a coarse clock.
//
// The cache can be kept in a file from one command to the next
// (LoadFileCache, Save; cache_file.go): `apply` and `diff` then parse
// only what changed since the last command, as the agent does between
// passes.
//
// Objects are shared between the Sets of successive loads; they are not
// modified after Load returns. Safe for one Load at a time.
type FileCache struct {
	mu    sync.Mutex
	files map[string]cachedFile
	// dir is the resolved manifests directory the files are relative to
	// ("" before the first store); a load of another directory misses.
	dir string
	// stamp and dirty are for the cache file (cache_file.go): who wrote
	// it, and whether files changed since it was read or written.
	stamp string
	dirty bool
}

// NewFileCache returns an empty cache.
func NewFileCache() *FileCache { return &FileCache{files: map[string]cachedFile{}} }

type cachedFile struct {
	id   filestamp.Stamp
	objs []*Object
}

// errCacheRetry makes Load start again without its cache.
var errCacheRetry = errors.New("load again without the cache")

// readCached opens rel with every check; when the cache holds it unchanged
// (and no drop-in folder names one of its objects), it returns its objects
// (hit), else its bytes (ok false: it could not be read).
func (l *loader) readCached(rel string, dropInDirs map[string]bool) (objs []*Object, data []byte, hit, ok bool) {
	of, ok := l.openFile(rel)
	if !ok {
		return nil, nil, false, false
	}
	id := of.id()
	l.ids[rel] = id
	l.cache.mu.Lock()
	c, found := l.cache.files[rel]
	if l.cache.dir != l.dir {
		found = false
	}
	l.cache.mu.Unlock()
	if found && c.id == id {
		hit = true
		for _, o := range c.objs {
			if dropInDirs[o.Metadata.Name] {
				hit = false
			}
		}
	}
	if hit {
		of.close()
		l.budget -= id.Size
		l.served[rel] = true
		for _, o := range c.objs {
			l.cached[o] = true
		}
		return c.objs, nil, true, true
	}
	data, ok = l.readOpen(rel, of)
	return nil, data, false, ok
}

// docsOf is o's documents for an error's position; an object the cache
// answered for has none, so it gets its file without a position (Load
// then starts again without the cache: errCacheRetry).
func (l *loader) docsOf(o *Object) []*doc {
	if len(o.docs) > 0 {
		return o.docs
	}
	return []*doc{{file: o.Source.File, abs: filepath.Join(l.dir, o.Source.File), idx: o.Source.Doc, node: &yaml.Node{Kind: yaml.MappingNode}}}
}

// forget drops files from the cache.
func (c *FileCache) forget(files []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range files {
		if _, ok := c.files[f]; ok {
			delete(c.files, f)
			c.dirty = true
		}
	}
}

// store replaces the cache with the files of this load that loaded
// cleanly (see FileCache), with the objects they gave.
func (c *FileCache) store(l *loader, set *Set, all []*Object) {
	byFile := map[string][]*Object{}
	bad := map[string]bool{}
	for _, o := range all {
		if len(o.Source.DropIns) > 0 {
			bad[o.Source.File] = true
		}
		byFile[o.Source.File] = append(byFile[o.Source.File], o)
	}
	files := make(map[string]cachedFile, len(byFile))
	for _, f := range set.Files {
		id, opened := l.ids[f]
		objs := byFile[f]
		if !opened || bad[f] || len(objs) == 0 || len(l.errs[f]) > 0 || l.busy[f] || l.empty[f] {
			continue
		}
		// A file changed within filestamp.RacyWindow before the load
		// began may change again and keep its stamp: it is read again.
		if !id.Settled(l.started, filestamp.RacyWindow) {
			continue
		}
		files[f] = cachedFile{id: id, objs: objs}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir != l.dir || len(files) != len(c.files) {
		c.dirty = true
	} else {
		for f, n := range files {
			if o, ok := c.files[f]; !ok || o.id != n.id || !slices.Equal(o.objs, n.objs) {
				c.dirty = true
				break
			}
		}
	}
	c.files, c.dir = files, l.dir
}
