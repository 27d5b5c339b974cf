package desired

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/hashicorp/go-multierror"
	yaml "go.yaml.in/yaml/v3"
)

// Size caps. A manifest larger than MaxFileBytes is refused; once a directory
// load has read MaxDirBytes, the remaining files are refused.
const (
	DefaultMaxFileBytes int64 = 1 << 20
	DefaultMaxDirBytes  int64 = 16 << 20
	maxDocsPerFile            = 256
)

// Options tune Load.
type Options struct {
	// Host is the host the set is computed for (host selectors).
	Host Host
	// Insecure skips the ownership and permission checks (tests, non-root
	// validate/diff on a GitOps checkout).
	Insecure bool
	// OwnerUID is the owner manifests, drop-ins, the manifests directory
	// and its drop-in folders must have when not Insecure (default 0,
	// root). Other directories on their resolved paths may be owned by
	// root or OwnerUID (see open_unix.go).
	OwnerUID int
	// MaxFileBytes and MaxDirBytes override the size caps (0: defaults).
	MaxFileBytes int64
	MaxDirBytes  int64
}

// Set is the full desired state read from one directory.
type Set struct {
	// Dir is the directory as resolved for this load (symlinks followed once).
	Dir string
	// Objects are the valid objects that select this host, by ID.
	Objects map[string]*Object
	// NotSelected are valid objects whose host selector excludes this host.
	NotSelected map[string]*Object
	// Files are the manifest files considered (relative to Dir), sorted.
	Files []string
	// Broken maps a relative file to its problems. Objects that last came
	// from a broken file must keep their last good desired state.
	Broken map[string]error
	// BrokenNames are object names whose drop-ins or duplicates are broken.
	BrokenNames map[string]bool
	// Busy are files (relative: manifests and drop-ins) that some process
	// held open for writing: they were not read, and are not errors. What
	// they hold must keep its last good version (see IsBroken).
	Busy map[string]bool
	// Empty are files (relative) that hold no document: empty, only
	// comments, only "---". They are not errors to Load, which has no
	// memory; the caller decides (reconcile treats them like broken files,
	// so truncating a file never removes what it held).
	Empty map[string]bool
}

// Sorted returns the objects in ID order.
func (s *Set) Sorted() []*Object {
	out := make([]*Object, 0, len(s.Objects))
	for _, o := range s.Objects {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// IsBroken reports whether o's last good version must be kept because the
// file it came from, or one of its drop-ins, is now invalid, busy or empty.
func (s *Set) IsBroken(o *Object) bool {
	if s.BrokenNames[o.Metadata.Name] {
		return true
	}
	if f, _ := s.Unsettled(o); f != "" {
		return true
	}
	if _, ok := s.Broken[o.Source.File]; ok {
		return true
	}
	for _, d := range o.Source.DropIns {
		if _, ok := s.Broken[d]; ok {
			return true
		}
	}
	return false
}

// IsManifestName reports whether a directory entry is a manifest to load:
// *.yaml or *.yml, not hidden, not an editor or package-manager leftover.
func IsManifestName(name string) bool {
	if name == "" || name[0] == '.' || name[0] == '#' {
		return false
	}
	for _, bad := range []string{"~", ".swp", ".tmp", ".bak", ".orig", "#"} {
		if strings.HasSuffix(name, bad) {
			return false
		}
	}
	if strings.Contains(name, ".dpkg-") || strings.Contains(name, ".rpm") {
		return false
	}
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// doc is one parsed YAML document with its node tree for positions.
type doc struct {
	file string // relative path
	abs  string
	idx  int
	node *yaml.Node // document content (mapping)
	raw  []byte     // JSON
}

type loader struct {
	dir    string
	opts   Options
	budget int64
	errs   map[string][]error // by relative file
	// w opens everything; stack is the manifests directory and its
	// ancestors, subdirs the drop-in folders read so far (by relative name).
	w       *fsWalker
	stack   []*dirNode
	subdirs map[string][]*dirNode
	busy    map[string]bool
	empty   map[string]bool
	// unusable are the names of documents refused before they became
	// objects (bad apiVersion, kind or metadata): their drop-ins are not
	// orphans, and what they name keeps its last good version.
	unusable map[string]bool
}

// Load reads every manifest in dir.
//
// Outcomes:
//   - (set, nil): every file is valid.
//   - (set, err): some files are invalid; err is a multierror of
//     *FieldError naming file:line:col: field; set holds every valid object
//     and set.Broken names the bad files. One bad file never hides the others.
//   - (nil, err) with errors.Is(err, ErrUnreadable): nothing could be read
//     (missing or insecure directory, or swapped during every attempt).
//     Nothing may be pruned on this.
//
// Files open for writing (set.Busy) and files with no document (set.Empty)
// are not errors: Load reports them and the caller keeps what they held.
func Load(dir string, opts Options) (*Set, error) {
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultMaxFileBytes
	}
	if opts.MaxDirBytes <= 0 {
		opts.MaxDirBytes = DefaultMaxDirBytes
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrUnreadable, dir, err)
	}
	// A load that raced a swap of the directory (git-sync replaces the
	// symlink, then deletes the old revision) is done again, so a half
	// deleted revision is never taken for the desired state.
	for attempt := 1; ; attempt++ {
		set, raced, err := loadOnce(abs, dir, opts)
		if !raced {
			return set, err
		}
		if attempt == maxSwapRetries {
			return nil, fmt.Errorf("%w: %q was swapped or removed during %d loads in a row", ErrUnreadable, dir, attempt)
		}
	}
}

// maxSwapRetries bounds the loads done again because the directory was
// swapped during them.
const maxSwapRetries = 5

func loadOnce(dir, orig string, opts Options) (*Set, bool, error) {
	w, err := newWalker(opts)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	defer w.close()
	// Resolve a symlinked directory once, so a git-sync / ConfigMap swap
	// during the load cannot mix two versions: everything below is read
	// relative to the descriptor of the directory resolved here.
	stack, err := resolveDir(w, dir)
	if err != nil {
		// A symlink whose old target was deleted under the walk (git-sync
		// removes the old revision after the swap) is a race, not a loss.
		raced := len(w.links) > 0 && errors.Is(err, fs.ErrNotExist)
		return nil, raced, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	top := stack[len(stack)-1]
	entries, err := listDir(top)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %q: %w", ErrUnreadable, dir, err)
	}
	resolved := top.path
	if !filepath.IsAbs(orig) {
		// Keep a relative directory relative, as filepath.EvalSymlinks would.
		if wd, err := os.Getwd(); err == nil {
			if rel, err := filepath.Rel(wd, resolved); err == nil {
				resolved = rel
			}
		}
	}
	l := &loader{dir: resolved, opts: opts, budget: opts.MaxDirBytes, errs: map[string][]error{},
		w: w, stack: stack, subdirs: map[string][]*dirNode{}, busy: map[string]bool{}, empty: map[string]bool{}}
	set := &Set{
		Dir:         resolved,
		Objects:     map[string]*Object{},
		NotSelected: map[string]*Object{},
		Broken:      map[string]error{},
		BrokenNames: map[string]bool{},
		Busy:        l.busy,
		Empty:       l.empty,
	}
	dropInDirs := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if strings.HasSuffix(name, ".d") {
			if statIsDir(top, name) {
				dropInDirs[strings.TrimSuffix(name, ".d")] = true
			}
			continue
		}
		if IsManifestName(name) {
			set.Files = append(set.Files, name)
		}
	}
	sort.Strings(set.Files)

	var all []*Object
	for _, f := range set.Files {
		docs := l.readDocs(f)
		for _, d := range docs {
			if o := l.decode(d); o != nil {
				all = append(all, o)
			}
		}
	}
	all = l.crossCheck(all, dropInDirs, set)
	for _, o := range all {
		if opts.Host.Selects(o.Hosts()) {
			set.Objects[o.ID()] = o
		} else {
			set.NotSelected[o.ID()] = o
		}
	}
	l.checkSelected(set)

	var merr *multierror.Error
	files := make([]string, 0, len(l.errs))
	for f := range l.errs {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		fe := &multierror.Error{Errors: l.errs[f], ErrorFormat: listFormat}
		set.Broken[f] = fe.ErrorOrNil()
		merr = multierror.Append(merr, l.errs[f]...)
	}
	if merr != nil {
		merr.ErrorFormat = listFormat
	}
	return set, swapped(dir, top), merr.ErrorOrNil()
}

func listFormat(es []error) string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (l *loader) fail(file string, e *FieldError) {
	if e.File == "" {
		e.File = filepath.Join(l.dir, file)
	}
	l.errs[file] = append(l.errs[file], e)
}

var safeFileRE = regexp.MustCompile(`^[A-Za-z0-9_.+@=-]+$`)

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// readDocs parses every YAML document of a file.
func (l *loader) readDocs(rel string) []*doc {
	data, ok := l.readFile(rel)
	if !ok {
		return nil
	}
	docs, fe := parseDocs(data)
	if fe != nil {
		l.fail(rel, fe)
		return nil
	}
	if len(docs) == 0 {
		l.empty[rel] = true
	}
	out := make([]*doc, 0, len(docs))
	for i, n := range docs {
		d := &doc{file: rel, abs: filepath.Join(l.dir, rel), idx: i, node: n}
		if n.Kind != yaml.MappingNode {
			l.fail(rel, &FieldError{Line: n.Line, Column: n.Column, Detail: "document is not a mapping (want apiVersion, kind, metadata, spec)"})
			continue
		}
		raw, err := nodeToJSON(n)
		if err != nil {
			fe := &FieldError{Line: n.Line, Column: n.Column, Detail: err.Error()}
			var ne *nodeError
			if errors.As(err, &ne) {
				fe.Line, fe.Column, fe.Detail = ne.line, ne.column, ne.msg
			}
			l.fail(rel, fe)
			continue
		}
		d.raw = raw
		out = append(out, d)
	}
	return out
}

// parseDocs splits YAML into document nodes, dropping empty documents.
func parseDocs(data []byte) ([]*yaml.Node, *FieldError) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, yamlError(err)
		}
		if len(out) >= maxDocsPerFile {
			return nil, &FieldError{Detail: fmt.Sprintf("more than %d documents", maxDocsPerFile)}
		}
		if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
			c := n.Content[0]
			if c.Kind == yaml.ScalarNode && c.Tag == "!!null" {
				continue
			}
			out = append(out, c)
		}
	}
}

// yamlParserProblems are the messages of yaml.v3's parser (parserc.go), as
// opposed to its scanner. For parser errors yaml.v3 reports a 0-based line
// (decode.go fail() adds one only for scanner errors), and none at all when
// the problem is on the first line.
var yamlParserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"found undefined tag handle":             true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

func yamlError(err error) *FieldError {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if yamlParserProblems[m[2]] {
			line++
		}
		return &FieldError{Line: line, Detail: "invalid YAML: " + m[2]}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if yamlParserProblems[msg] {
		return &FieldError{Line: 1, Detail: "invalid YAML: " + msg}
	}
	return &FieldError{Detail: "invalid YAML: " + msg}
}

// nodeToJSON converts a YAML node to JSON, refusing anchors/aliases that
// would blow up in size, duplicate keys and non-string keys. Its errors are
// *nodeError, with the position of the offending node.
func nodeToJSON(n *yaml.Node) ([]byte, error) {
	v, err := nodeValue(n, 0)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// nodeError is a problem at one node of a YAML document.
type nodeError struct {
	line, column int
	msg          string
}

func (e *nodeError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

func nodeErrorf(n *yaml.Node, format string, args ...any) *nodeError {
	return &nodeError{line: n.Line, column: n.Column, msg: fmt.Sprintf(format, args...)}
}

func nodeValue(n *yaml.Node, depth int) (any, error) {
	if depth > 64 {
		return nil, nodeErrorf(n, "document nested too deeply")
	}
	switch n.Kind {
	case yaml.AliasNode:
		return nil, nodeErrorf(n, "YAML aliases are not supported in manifests")
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		seen := make(map[string]*yaml.Node, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && (k.Tag == "!!merge" || k.Value == "<<") {
				return nil, nodeErrorf(k, "YAML merge keys are not supported in manifests")
			}
			if k.Kind != yaml.ScalarNode || (k.Tag != "!!str" && k.Tag != "!!int" && k.Tag != "!!bool") {
				return nil, nodeErrorf(k, "mapping keys must be strings")
			}
			// yaml.v3 checks duplicate keys only when decoding into Go
			// values, not into a Node: without this the last one would
			// silently win.
			if first, dup := seen[k.Value]; dup {
				return nil, nodeErrorf(k, "mapping key %q already defined at line %d", k.Value, first.Line)
			}
			seen[k.Value] = k
			val, err := nodeValue(v, depth+1)
			if err != nil {
				return nil, err
			}
			m[k.Value] = val
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			// encoding/json would turn a null item into "" (or a zero
			// struct): `command: [/bin/ls, ~]` must not run "ls ''".
			if c.Kind == yaml.ScalarNode && c.Tag == "!!null" {
				if c.Value == "" {
					return nil, nodeErrorf(c, "list item is empty")
				}
				return nil, nodeErrorf(c, "list item is null; quote it (%q) if you mean the text", c.Value)
			}
			val, err := nodeValue(c, depth+1)
			if err != nil {
				return nil, err
			}
			s = append(s, val)
		}
		return s, nil
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, nodeErrorf(n, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		switch x := v.(type) {
		case float64:
			if x != x || x > 1e300 || x < -1e300 { // NaN, Inf: no JSON form
				return nil, nodeErrorf(n, "number out of range")
			}
		case int, int64, uint64, bool, string, nil:
		default:
			// timestamps and other YAML-only types become their text.
			return n.Value, nil
		}
		return v, nil
	}
	return nil, nodeErrorf(n, "unsupported YAML node")
}

// header is what every document must say about itself.
type header struct {
	APIVersion string          `json:"apiVersion"`
	Kind       Kind            `json:"kind"`
	Metadata   ObjectMeta      `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// schema types for the unknown-field walk, by kind.
var specTypes = map[Kind]reflect.Type{
	KindService:  reflect.TypeOf(ServiceSpec{}),
	KindTimer:    reflect.TypeOf(TimerSpec{}),
	KindWatchdog: reflect.TypeOf(WatchdogSpec{}),
}

// positioned is a field problem before it has a file position.
type positioned struct {
	p      path
	detail string
}

// decode turns one document (plus its drop-ins, merged later in crossCheck)
// into an Object, or records why not.
func (l *loader) decode(d *doc) *Object {
	// A type error in apiVersion, kind or metadata makes the document
	// unusable. Report every type error of it then, not only the first that
	// encoding/json stops at: the spec's too, when the kind is known. (Spec
	// type errors alone are reported after the drop-ins are merged.)
	if len(checkTypes(d.raw, nil)) > 0 {
		l.failSorted([]*doc{d}, checkTypes(d.raw, specTypes[headerKind(d.raw)]))
		l.markUnusable(d)
		return nil
	}
	var h header
	if err := json.Unmarshal(d.raw, &h); err != nil {
		l.fail(d.file, l.position([]*doc{d}, typeErrorPath(err, nil), typeErrorDetail(err)))
		return nil
	}
	o := &Object{APIVersion: h.APIVersion, Kind: h.Kind, Metadata: h.Metadata,
		Source: Source{File: d.file, Doc: d.idx}}
	if bad := l.checkHeader(d, &h); bad {
		l.markUnusable(d)
		return nil
	}
	o.Source = Source{File: d.file, Doc: d.idx}
	o.docs = []*doc{d}
	return o
}

// markUnusable records the name of a document that cannot become an
// object, when it has one.
func (l *loader) markUnusable(d *doc) {
	var h struct {
		Metadata struct {
			Name any `json:"name"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(d.raw, &h)
	if n, ok := h.Metadata.Name.(string); ok && n != "" {
		if l.unusable == nil {
			l.unusable = map[string]bool{}
		}
		l.unusable[n] = true
	}
}

// checkHeader validates apiVersion, kind and name; true when the document is unusable.
func (l *loader) checkHeader(d *doc, h *header) bool {
	var probs []positioned
	if h.APIVersion != APIVersion {
		if h.APIVersion == "" {
			probs = append(probs, positioned{path{"apiVersion"}, fmt.Sprintf("required; want %q", APIVersion)})
		} else {
			probs = append(probs, positioned{path{"apiVersion"}, fmt.Sprintf("unsupported version %q; want %q", h.APIVersion, APIVersion)})
		}
	}
	if _, ok := specTypes[h.Kind]; !ok {
		if h.Kind == "" {
			probs = append(probs, positioned{path{"kind"}, "required; one of Service, Timer, Watchdog"})
		} else {
			probs = append(probs, positioned{path{"kind"}, fmt.Sprintf("unknown kind %q; one of Service, Timer, Watchdog", h.Kind)})
		}
	}
	if detail := checkName(h.Metadata.Name); detail != "" {
		probs = append(probs, positioned{path{"metadata", "name"}, detail})
	}
	for _, p := range probs {
		l.fail(d.file, l.position([]*doc{d}, p.p, p.detail))
	}
	return len(probs) > 0
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// checkName enforces unit-name rules and refuses anything that could escape a path.
func checkName(n string) string {
	switch {
	case n == "":
		return "required"
	case len(n) > 200:
		return fmt.Sprintf("name is %d characters, longer than 200", len(n))
	case strings.ContainsAny(n, "/\\"):
		return fmt.Sprintf("invalid name %q: must not contain a path separator", n)
	case strings.Contains(n, ".."):
		return fmt.Sprintf("invalid name %q: must not contain \"..\"", n)
	case !nameRE.MatchString(n):
		return fmt.Sprintf("invalid name %q: use letters, digits, '-', '_' and '.', starting with a letter or digit", n)
	case strings.HasSuffix(n, ".service") || strings.HasSuffix(n, ".timer") || strings.HasSuffix(n, ".d"):
		return fmt.Sprintf("invalid name %q: give the name without a unit suffix", n)
	}
	return ""
}

// typeErrorPath turns an encoding/json error into a field path under prefix.
func typeErrorPath(err error, prefix path) path {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return append(append(path{}, prefix...), parsePath(te.Field)...)
	}
	return prefix
}

func typeErrorDetail(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := te.Type.String()
		switch te.Type.Kind() {
		case reflect.Slice:
			want = "a list"
		case reflect.Map, reflect.Struct:
			want = "a mapping"
		case reflect.Int, reflect.Int64:
			want = "an integer"
		case reflect.Bool:
			want = "true or false"
		case reflect.String:
			want = "a string"
		case reflect.Ptr:
			want = "a mapping"
			if te.Type.Elem().Kind() == reflect.Bool {
				want = "true or false"
			}
		}
		return fmt.Sprintf("expected %s, got %s", want, te.Value)
	}
	return err.Error()
}

// position finds where p is set: in the last document (drop-in) that sets
// it, else the nearest parent that exists. docs are base first, drop-ins after.
func (l *loader) position(docs []*doc, p path, detail string) *FieldError {
	fe := &FieldError{Field: p.String(), Detail: detail}
	for i := len(docs) - 1; i >= 0; i-- {
		if n, exact := lookup(docs[i].node, p); n != nil && (exact || i == 0) {
			fe.File, fe.Line, fe.Column = docs[i].abs, n.Line, n.Column
			return fe
		}
	}
	if len(docs) > 0 {
		fe.File = docs[0].abs
	}
	return fe
}

// lookup walks p from n; it returns the deepest node reached and whether p
// was found whole. Keys point at their key node (where an operator looks).
func lookup(n *yaml.Node, p path) (*yaml.Node, bool) {
	cur := n
	for i, seg := range p {
		switch {
		case strings.HasPrefix(seg, "[") && cur.Kind == yaml.SequenceNode:
			idx, err := strconv.Atoi(strings.Trim(seg, "[]"))
			if err != nil || idx < 0 || idx >= len(cur.Content) {
				return cur, false
			}
			cur = cur.Content[idx]
		case cur.Kind == yaml.MappingNode:
			found := false
			for j := 0; j+1 < len(cur.Content); j += 2 {
				if cur.Content[j].Value == seg {
					if i == len(p)-1 {
						return cur.Content[j], true
					}
					cur = cur.Content[j+1]
					found = true
					break
				}
			}
			if !found {
				return cur, false
			}
		default:
			return cur, false
		}
	}
	return cur, true
}

// unknownFields walks a node tree against a Go type and reports keys that
// the type does not have (case-sensitive, unlike encoding/json).
func unknownFields(n *yaml.Node, t reflect.Type, p path, out *[]positioned) {
	for t.Kind() == reflect.Ptr {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // type errors are reported by the decoder
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("json"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = f.Type
		}
		for j := 0; j+1 < len(n.Content); j += 2 {
			k := n.Content[j].Value
			ft, ok := fields[k]
			if !ok {
				*out = append(*out, positioned{p.key(k), "unknown field" + suggest(k, fields)})
				continue
			}
			unknownFields(n.Content[j+1], ft, p.key(k), out)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for j := 0; j+1 < len(n.Content); j += 2 {
			unknownFields(n.Content[j+1], t.Elem(), p.key(n.Content[j].Value), out)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode || t.Elem().Kind() == reflect.Uint8 {
			return
		}
		for i, c := range n.Content {
			unknownFields(c, t.Elem(), p.index(i), out)
		}
	}
}

// suggest names a known field that differs only in case, the usual typo.
func suggest(k string, fields map[string]reflect.Type) string {
	for f := range fields {
		if strings.EqualFold(f, k) {
			return fmt.Sprintf(" (did you mean %q?)", f)
		}
	}
	return ""
}

var topType = reflect.TypeOf(struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   ObjectMeta      `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}{})

// finish merges drop-ins onto o, decodes the spec strictly and validates it.
// It returns false when the object is invalid.
func (l *loader) finish(o *Object, dropIns []*doc) bool {
	docs := append(o.docs[:1:1], dropIns...)
	merged := o.docs[0].raw
	ok := true
	name := o.Metadata.Name
	for _, d := range dropIns {
		// A drop-in that says anything else about the object's identity is
		// refused whole: merged, it would rename the object (an empty name
		// made an object "Service/"), change its kind or delete its name.
		if probs := dropInIdentity(d.raw, o); len(probs) > 0 {
			for _, p := range probs {
				l.fail(d.file, l.position([]*doc{d}, p.p, p.detail))
			}
			ok = false
			continue
		}
		m, err := jsonpatch.MergePatch(merged, d.raw)
		if err != nil {
			l.fail(d.file, &FieldError{File: d.abs, Detail: fmt.Sprintf("cannot merge drop-in: %v", err)})
			ok = false
			continue
		}
		merged = m
		o.Source.DropIns = append(o.Source.DropIns, d.file)
	}
	// Unknown fields, reported in the file that wrote them, then removed so
	// encoding/json's case-insensitive matching cannot apply "Command" to
	// "command" behind the operator's back.
	var unknown []path
	for _, d := range docs {
		var probs []positioned
		unknownFields(d.node, topType, nil, &probs)
		if specNode, found := lookup(d.node, path{"spec"}); found && specNode != nil {
			if v := valueOf(d.node, "spec"); v != nil {
				unknownFields(v, specTypes[o.Kind], path{"spec"}, &probs)
			}
		}
		for _, p := range probs {
			l.fail(d.file, l.position([]*doc{d}, p.p, p.detail))
			unknown = append(unknown, p.p)
			ok = false
		}
	}
	if len(unknown) > 0 {
		merged = dropPaths(merged, unknown)
	}
	// Go on decoding after unknown fields, so one run reports every problem,
	// and report every type error (encoding/json stops at the first).
	if probs := checkTypes(merged, specTypes[o.Kind]); len(probs) > 0 {
		l.failSorted(docs, probs)
		return false
	}
	var h header
	if err := json.Unmarshal(merged, &h); err != nil {
		l.failAt(docs, typeErrorPath(err, nil), typeErrorDetail(err))
		return false
	}
	if h.Metadata.Name != name || h.Kind != o.Kind {
		// dropInIdentity keeps this from happening; never rename an object.
		l.failAt(docs, path{"metadata", "name"}, fmt.Sprintf("drop-ins changed the object's identity to %s/%s", h.Kind, h.Metadata.Name))
		return false
	}
	o.Metadata = h.Metadata
	if len(h.Spec) == 0 || string(h.Spec) == "null" {
		l.failAt(docs, path{"spec"}, "required")
		return false
	}
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
	}
	if err := json.Unmarshal(h.Spec, target); err != nil {
		l.failAt(docs, typeErrorPath(err, path{"spec"}), typeErrorDetail(err))
		return false
	}
	o.docs = docs
	o.document = merged
	probs := validateObject(o)
	for _, p := range probs {
		l.failAt(docs, p.p, p.detail)
	}
	return ok && len(probs) == 0
}

// failAt records a problem at the position of p, in whichever of docs sets it.
func (l *loader) failAt(docs []*doc, p path, detail string) {
	fe := l.position(docs, p, detail)
	rel := docs[0].file
	for _, d := range docs {
		if d.abs == fe.File {
			rel = d.file
		}
	}
	l.fail(rel, fe)
}

// dropInIdentity checks what a drop-in of o says about o's identity. A
// drop-in may omit apiVersion, kind, metadata and metadata.name; what it
// gives must be exactly o's (README: "if it gives them they must match"):
// an empty or other name, another kind, or null (which a merge patch
// deletes) would rename, retype or unname the object.
func dropInIdentity(raw []byte, o *Object) []positioned {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	var probs []positioned
	removed := func(p path) { probs = append(probs, positioned{p, "a drop-in must not remove " + p.String()}) }
	if v, set := m["kind"]; set {
		switch k, isString := v.(string); {
		case v == nil:
			removed(path{"kind"})
		case !isString || Kind(k) != o.Kind:
			probs = append(probs, positioned{path{"kind"}, fmt.Sprintf("drop-in for %s says kind %s; omit kind or give %q", o.ID(), jsonText(v), o.Kind)})
		}
	}
	if v, set := m["metadata"]; set {
		md, isMap := v.(map[string]any)
		switch {
		case v == nil:
			removed(path{"metadata"})
		case !isMap:
			probs = append(probs, positioned{path{"metadata"}, fmt.Sprintf("expected a mapping, got %s", jsonText(v))})
		default:
			if n, set := md["name"]; set {
				switch s, isString := n.(string); {
				case n == nil:
					removed(path{"metadata", "name"})
				case !isString || s != o.Metadata.Name:
					probs = append(probs, positioned{path{"metadata", "name"}, fmt.Sprintf("drop-in in %s.d names %s; omit metadata.name or give %q", o.Metadata.Name, jsonText(n), o.Metadata.Name)})
				}
			}
		}
	}
	if v, set := m["apiVersion"]; set {
		switch a, isString := v.(string); {
		case v == nil:
			removed(path{"apiVersion"})
		case !isString || a != APIVersion:
			probs = append(probs, positioned{path{"apiVersion"}, fmt.Sprintf("unsupported version %s; want %q", jsonText(v), APIVersion)})
		}
	}
	return probs
}

// jsonText shows a decoded JSON value as the manifest wrote it: strings
// quoted, other scalars as they are, lists and mappings by kind.
func jsonText(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	case nil:
		return "null"
	}
	return fmt.Sprint(v)
}

func valueOf(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for j := 0; j+1 < len(m.Content); j += 2 {
		if m.Content[j].Value == key {
			return m.Content[j+1]
		}
	}
	return nil
}

// crossCheck merges drop-ins, validates each object and then checks what
// only the whole set can tell: duplicate names and unit collisions,
// timer→service references, drop-in folders without an object.
func (l *loader) crossCheck(all []*Object, dropInDirs map[string]bool, set *Set) []*Object {
	byName := map[string][]*Object{}
	for _, o := range all {
		byName[o.Metadata.Name] = append(byName[o.Metadata.Name], o)
	}
	dropIns := map[string][]*doc{}
	names := make([]string, 0, len(dropInDirs))
	for n := range dropInDirs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sub := n + ".d"
		files, fe := l.dropInFiles(sub)
		if fe != nil {
			l.fail(sub, fe)
			set.BrokenNames[n] = true
			continue
		}
		if len(files) == 0 {
			continue
		}
		if len(byName[n]) == 0 {
			if l.unusable[n] {
				// Its manifest is invalid (reported there): keep what it
				// had, and check the drop-ins once it is fixed.
				set.BrokenNames[n] = true
				continue
			}
			l.fail(files[0], &FieldError{Detail: fmt.Sprintf("drop-in for %q, but no manifest defines an object named %q", n, n)})
			continue
		}
		for _, f := range files {
			before := len(l.errs[f])
			docs := l.readDocs(f)
			if len(l.errs[f]) > before {
				set.BrokenNames[n] = true
			}
			dropIns[n] = append(dropIns[n], docs...)
		}
	}

	var valid []*Object
	for _, o := range all {
		// The name from the base file: a broken drop-in must protect the
		// object it was meant for, whatever it says.
		name := o.Metadata.Name
		if l.finish(o, dropIns[name]) {
			valid = append(valid, o)
		} else if len(dropIns[name]) > 0 {
			set.BrokenNames[name] = true
		}
	}

	// Duplicates: the same ID, or two objects rendering the same unit.
	units := map[string][]*Object{}
	for _, o := range valid {
		for _, u := range unitsOf(o) {
			units[u] = append(units[u], o)
		}
	}
	dup := map[*Object]bool{}
	unitNames := make([]string, 0, len(units))
	for u := range units {
		unitNames = append(unitNames, u)
	}
	sort.Strings(unitNames)
	for _, u := range unitNames {
		os := units[u]
		if len(os) < 2 {
			continue
		}
		for i, o := range os {
			other := os[(i+1)%len(os)]
			if dup[o] {
				continue // one error per object, even when it collides on several units
			}
			dup[o] = true
			l.failAt(o.docs, path{"metadata", "name"}, fmt.Sprintf("%s is also defined by %s (%s); neither is applied", u, other.ID(), other.where()))
			set.BrokenNames[o.Metadata.Name] = true
		}
	}
	var out []*Object
	byID := map[string]*Object{}
	for _, o := range valid {
		if !dup[o] {
			out = append(out, o)
			byID[o.ID()] = o
		}
	}
	// References.
	var final []*Object
	for _, o := range out {
		if o.Timer != nil && o.Timer.Service != "" {
			if _, ok := byID["Service/"+o.Timer.Service]; !ok {
				l.failAt(o.docs, path{"spec", "service"}, fmt.Sprintf("no Service named %q", o.Timer.Service))
				continue
			}
		}
		final = append(final, o)
	}
	return final
}

// checkSelected enforces rules about what this host ends up with.
func (l *loader) checkSelected(set *Set) {
	var wds []*Object
	for _, o := range set.Sorted() {
		if o.Kind == KindWatchdog {
			wds = append(wds, o)
		}
		if o.Timer != nil && o.Timer.Service != "" {
			if _, ok := set.Objects["Service/"+o.Timer.Service]; !ok {
				l.failAt(o.docs, path{"spec", "service"}, fmt.Sprintf("Service %q does not select this host", o.Timer.Service))
				delete(set.Objects, o.ID())
			}
		}
	}
	if len(wds) > 1 {
		sort.Slice(wds, func(i, j int) bool { return wds[i].ID() < wds[j].ID() })
		for _, o := range wds {
			l.failAt(o.docs, path{"kind"}, fmt.Sprintf("%d Watchdog objects select this host; at most one may", len(wds)))
			delete(set.Objects, o.ID())
			set.BrokenNames[o.Metadata.Name] = true
		}
	}
}

func (o *Object) where() string {
	if len(o.docs) > 0 {
		n, _ := lookup(o.docs[0].node, path{"metadata", "name"})
		if n != nil {
			return fmt.Sprintf("%s:%d", o.docs[0].abs, n.Line)
		}
	}
	return o.Source.File
}

// unitsOf lists the unit names (or files) an object owns.
func unitsOf(o *Object) []string {
	switch o.Kind {
	case KindService:
		return []string{o.Metadata.Name + ".service"}
	case KindTimer:
		if o.Timer != nil && o.Timer.Service == "" {
			return []string{o.Metadata.Name + ".timer", o.Metadata.Name + ".service"}
		}
		return []string{o.Metadata.Name + ".timer"}
	}
	return []string{"Watchdog/" + o.Metadata.Name}
}

// dropPaths removes the given key paths from a JSON object.
func dropPaths(raw []byte, paths []path) []byte {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return raw
	}
	for _, p := range paths {
		cur := v
		for i, seg := range p {
			switch c := cur.(type) {
			case map[string]any:
				if i == len(p)-1 {
					delete(c, seg)
					break
				}
				cur = c[seg]
			case []any:
				idx, err := strconv.Atoi(strings.Trim(seg, "[]"))
				if err != nil || idx < 0 || idx >= len(c) {
					cur = nil
					break
				}
				cur = c[idx]
			default:
				cur = nil
			}
		}
	}
	out, err := json.Marshal(v)
	if err != nil {
		return raw
	}
	return out
}
