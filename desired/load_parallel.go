package desired

import (
	"runtime"

	"resil.dev/resil/internal/par"
)

// readManifests reads the manifest files (relative names, in order) and
// returns their objects in file order, as reading, parsing and decoding
// each in turn would. Reading stays in order on this goroutine: the openat
// walk, the owner and size checks, the directory's byte budget, the read
// lease and the cache. Parsing and decoding (YAML, the type checks: the
// CPU of a load) run on up to GOMAXPROCS goroutines, each file in a loader
// of its own whose problems are merged back in file order, so the errors
// come out as before. All of them have returned when it returns.
func (l *loader) readManifests(files []string, dropInDirs map[string]bool) []*Object {
	type work struct {
		rel  string
		data []byte // nil: nothing to parse (unreadable, busy, or cached)
		objs []*Object
		sub  *loader
	}
	works := make([]work, len(files))
	for i, f := range files {
		works[i].rel = f
		if l.cache != nil {
			objs, data, hit, ok := l.readCached(f, dropInDirs)
			switch {
			case hit:
				works[i].objs = objs
			case ok:
				works[i].data = data
			}
			continue
		}
		if data, ok := l.readFile(f); ok {
			works[i].data = data
		}
	}
	parse := func(w *work) {
		if w.data == nil {
			return
		}
		w.sub = &loader{dir: l.dir, opts: l.opts, errs: map[string][]error{}, empty: map[string]bool{}}
		for _, d := range w.sub.parseFile(w.rel, w.data) {
			if o := w.sub.decode(d); o != nil {
				w.objs = append(w.objs, o)
			}
		}
		w.data = nil
	}
	par.For(len(works), runtime.GOMAXPROCS(0), parallelParseMin, func(i int) { parse(&works[i]) })
	var all []*Object
	for _, w := range works {
		if w.sub != nil {
			l.errs[w.rel] = append(l.errs[w.rel], w.sub.errs[w.rel]...)
			if len(l.errs[w.rel]) == 0 {
				delete(l.errs, w.rel)
			}
			for f := range w.sub.empty {
				l.empty[f] = true
			}
			for name := range w.sub.unusable {
				if l.unusable == nil {
					l.unusable = map[string]bool{}
				}
				l.unusable[name] = true
			}
		}
		all = append(all, w.objs...)
	}
	return all
}

// parallelParseMin is the number of files per parsing goroutine below
// which a load parses on its own goroutine (a variable for tests).
var parallelParseMin = 16
