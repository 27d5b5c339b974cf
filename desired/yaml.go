package desired

// YAML to JSON with positions: a file's documents as yaml.Node trees (kept
// for file:line:column) and their JSON (what is decoded), and where in those
// trees a field path is set.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
)

// doc is one parsed YAML document with its node tree for positions.
type doc struct {
	file string // relative path
	abs  string
	idx  int
	node *yaml.Node // document content (mapping)
	raw  []byte     // JSON
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// readDocs parses every YAML document of a file.
func (l *loader) readDocs(rel string) []*doc {
	data, ok := l.readFile(rel)
	if !ok {
		return nil
	}
	return l.parseFile(rel, data)
}

// parseFile parses the YAML documents of a file read whole.
func (l *loader) parseFile(rel string, data []byte) []*doc {
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
				fe.Line, fe.Column, fe.Field, fe.Detail = ne.line, ne.column, ne.field(), ne.msg
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
	return parseDocNodes(data, false)
}

// parseDocNodes splits YAML into document nodes; keepEmpty keeps empty
// documents (a null scalar, see isNullDoc) where parseDocs drops them.
func parseDocNodes(data []byte, keepEmpty bool) ([]*yaml.Node, *FieldError) {
	if fe := oddLineBreak(data); fe != nil {
		return nil, fe
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*yaml.Node
	var last *yaml.Node // the last document decoded
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			if !keepEmpty {
				if fe := trailingSeparator(data, last, len(out) > 0); fe != nil {
					return nil, fe
				}
			}
			return out, nil
		}
		if err != nil {
			fe := yamlError(err)
			fe.Line = problemLine(data, fe)
			atEnd(data, fe)
			if fe.Line < 1 && fe.Detail == yamlControlDetail {
				// yaml.v3's reader gives no position for this one: the
				// first such character's.
				if i := bytes.IndexFunc(data, yamlRefusedControl); i >= 0 {
					fe.Line = bytes.Count(data[:i], []byte("\n")) + 1
					fe.Column = utf8.RuneCount(data[bytes.LastIndexByte(data[:i], '\n')+1:i]) + 1
				}
			}
			return nil, fe
		}
		if len(out) >= maxDocsPerFile {
			return nil, &FieldError{Detail: fmt.Sprintf("more than %d documents", maxDocsPerFile)}
		}
		last = &n
		if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
			c := n.Content[0]
			if isNullDoc(c) && !keepEmpty {
				continue
			}
			out = append(out, c)
		}
	}
}

// oddLineBreak refuses the line breaks other than LF and CRLF that
// yaml.v3 honours (a CR alone, NEL, U+2028, U+2029): editors and grep do
// not break lines there, so every position after one would name the wrong
// line, and inside a quoted value yaml.v3 folds one into a space. The
// position is counted in LF lines, as the editor shows it.
func oddLineBreak(data []byte) *FieldError {
	if bytes.IndexByte(data, '\r') < 0 && !bytes.Contains(data, []byte("\u0085")) && !bytes.Contains(data, []byte("\u2028")) && !bytes.Contains(data, []byte("\u2029")) {
		return nil
	}
	for i, r := range string(data) {
		var what string
		switch {
		case r == '\r' && (i+1 >= len(data) || data[i+1] != '\n'):
			what = "a carriage return (CR) not followed by a newline"
		case r == 0x85:
			what = "the line break U+0085 (NEL)"
		case r == 0x2028 || r == 0x2029:
			what = fmt.Sprintf("the line break U+%04X", r)
		default:
			continue
		}
		return &FieldError{Line: bytes.Count(data[:i], []byte("\n")) + 1, Column: utf8.RuneCount(data[bytes.LastIndexByte(data[:i], '\n')+1:i]) + 1,
			Detail: "invalid YAML: " + what + ": only LF and CRLF end lines here (write it as an escape in a double-quoted string: \\r, \\u0085, \\u2028)"}
	}
	return nil
}

// isNullDoc reports whether a document's content is empty (or null).
func isNullDoc(c *yaml.Node) bool {
	return c.Kind == yaml.ScalarNode && c.Tag == "!!null"
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

// problemLine returns the line of fe's parser problem. yaml.v3 names the
// line where the enclosing block (a mapping under spec:, a document)
// began, not the line it could not parse: the problem is on the first
// line from there whose prefix of the file fails the same way, looked for
// within problemLineMax lines (each look is a parse of the prefix: an error
// path only, bounded).
func problemLine(data []byte, fe *FieldError) int {
	if fe.Line < 1 || !strings.HasPrefix(fe.Detail, "invalid YAML: ") {
		return fe.Line
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	prefixLen := 0
	for i := 0; i < fe.Line-1 && i < len(lines); i++ {
		prefixLen += len(lines[i])
	}
	for k := fe.Line; k <= len(lines) && k < fe.Line+problemLineMax; k++ {
		prefixLen += len(lines[k-1])
		if parseFails(data[:prefixLen], fe.Detail) {
			return k
		}
	}
	return fe.Line
}

const problemLineMax = 200

// atEnd moves a problem yaml.v3 places past the last line of data (a file
// cut short: it names the line after the end, line 7 of a 6-line file) to
// the end of the last line, and says so.
func atEnd(data []byte, fe *FieldError) {
	n := bytes.Count(data, []byte("\n"))
	if len(data) > 0 && data[len(data)-1] != '\n' {
		n++
	}
	if n == 0 || fe.Line <= n || !strings.HasPrefix(fe.Detail, "invalid YAML: ") {
		return
	}
	last := strings.TrimSuffix(string(data), "\n")
	last = strings.TrimSuffix(last[strings.LastIndexByte(last, '\n')+1:], "\r")
	fe.Line, fe.Column = n, utf8.RuneCountInString(last)+1
	fe.Detail += " at the end of the file (is it cut short?)"
}

// trailingSeparator refuses a file whose last document is empty after a
// "---" separator that follows another document (only blank lines or
// comments after it): the sign of a file cut short, or of a writer that
// appends the next document in a second write (printf '...---\n' >f;
// printf '...' >>f). Acting on it would prune the objects still to come.
// The position is the separator's line. A file of only "---" stays an
// empty file (Set.Empty), as before. Host label files (keepEmpty) keep
// their own rule: one mapping.
//
// hasDocs: a document came before the last one (the empty documents are
// not among those decoded).
func trailingSeparator(data []byte, last *yaml.Node, hasDocs bool) *FieldError {
	if !hasDocs || last == nil || last.Kind != yaml.DocumentNode || len(last.Content) != 1 || !isNullDoc(last.Content[0]) || last.Line < 2 {
		return nil
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if last.Line > len(lines) || !bytes.HasPrefix(lines[last.Line-1], []byte("---")) {
		return nil
	}
	return &FieldError{Line: last.Line, Column: 1, Detail: "invalid YAML: the file ends with a document separator and nothing after it (is it cut short?)"}
}

const yamlControlDetail = "invalid YAML: control characters are not allowed"

// yamlRefusedControl: the characters yaml.v3's reader refuses (YAML 1.2's
// printable set leaves out C0 controls but tab, LF and CR, DEL, C1
// controls but NEL, surrogates and U+FFFE/U+FFFF).
func yamlRefusedControl(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r' || r == 0x85:
		return false
	case r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f):
		return true
	case r >= 0xd800 && r <= 0xdfff || r == 0xfffe || r == 0xffff:
		return true
	}
	return false
}

// parseFails reports whether data fails to parse with detail.
func parseFails(data []byte, detail string) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if err == nil {
			continue
		}
		return !errors.Is(err, io.EOF) && yamlError(err).Detail == detail
	}
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

// nodeError is a problem at one node of a YAML document. rpath is the
// node's field path, innermost segment first (each level adds its own as
// the error goes up: nothing is built while nothing fails).
type nodeError struct {
	line, column int
	msg          string
	rpath        []string
	nopath       bool // too deep to name
}

// field is the node's field path ("spec.command[1]"; "" at the top).
func (e *nodeError) field() string {
	p := make(path, len(e.rpath))
	for i, s := range e.rpath {
		p[len(p)-1-i] = s
	}
	return p.String()
}

// nodeUnder adds seg to the path of err when it is a *nodeError.
func nodeUnder(err error, seg string) error {
	if ne, ok := err.(*nodeError); ok && !ne.nopath {
		ne.rpath = append(ne.rpath, seg)
	}
	return err
}

func (e *nodeError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

func nodeErrorf(n *yaml.Node, format string, args ...any) *nodeError {
	return &nodeError{line: n.Line, column: n.Column, msg: fmt.Sprintf(format, args...)}
}

func nodeValue(n *yaml.Node, depth int) (any, error) {
	if depth > 64 {
		ne := nodeErrorf(n, "document nested too deeply")
		ne.nopath = true
		return nil, ne
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
				return nil, nodeUnder(nodeErrorf(k, "mapping key %q already defined at line %d", k.Value, first.Line), k.Value)
			}
			seen[k.Value] = k
			val, err := nodeValue(v, depth+1)
			if err != nil {
				return nil, nodeUnder(err, k.Value)
			}
			m[k.Value] = val
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			// encoding/json would turn a null item into "" (or a zero
			// struct): `command: [/bin/ls, ~]` must not run "ls ''".
			if c.Kind == yaml.ScalarNode && c.Tag == "!!null" {
				if c.Value == "" {
					return nil, nodeUnder(nodeErrorf(c, "list item is empty"), "["+strconv.Itoa(i)+"]")
				}
				return nil, nodeUnder(nodeErrorf(c, "list item is null; quote it (%q) if you mean the text", c.Value), "["+strconv.Itoa(i)+"]")
			}
			val, err := nodeValue(c, depth+1)
			if err != nil {
				return nil, nodeUnder(err, "["+strconv.Itoa(i)+"]")
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
			if x != x || x > 1e300 || x < -1e300 {
				// NaN, Inf (.inf, .nan) have no JSON form: their text, as
				// for timestamps, so a text field takes it as written and
				// a number field says which field wants a number.
				return n.Value, nil
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

// position finds where p is set: in the last document (drop-in) that sets
// it, else the nearest parent that exists, in the document that goes
// deepest (a field required under a parent only a drop-in sets is that
// drop-in's; the base file wins a tie). docs are base first, drop-ins after.
func (l *loader) position(docs []*doc, p path, detail string) *FieldError {
	fe := &FieldError{Field: p.String(), Detail: detail}
	var best *yaml.Node
	bestDepth, bestDoc := -1, 0
	for i := len(docs) - 1; i >= 0; i-- {
		n, depth, exact := lookup(docs[i].node, p)
		if n == nil {
			continue
		}
		if exact {
			fe.File, fe.Line, fe.Column = docs[i].abs, n.Line, n.Column
			return fe
		}
		if depth >= bestDepth {
			best, bestDepth, bestDoc = n, depth, i
		}
	}
	if best != nil {
		fe.File, fe.Line, fe.Column = docs[bestDoc].abs, best.Line, best.Column
	} else if len(docs) > 0 {
		fe.File = docs[0].abs
	}
	return fe
}

// lookup walks p from n; it returns the deepest node reached, how many
// segments of p it took, and whether p was found whole. Keys point at
// their key node (where an operator looks).
func lookup(n *yaml.Node, p path) (*yaml.Node, int, bool) {
	cur := n
	for i, seg := range p {
		switch {
		case strings.HasPrefix(seg, "[") && cur.Kind == yaml.SequenceNode:
			idx, err := strconv.Atoi(strings.Trim(seg, "[]"))
			if err != nil || idx < 0 || idx >= len(cur.Content) {
				return cur, i, false
			}
			cur = cur.Content[idx]
		case cur.Kind == yaml.MappingNode:
			found := false
			for j := 0; j+1 < len(cur.Content); j += 2 {
				if cur.Content[j].Value == seg {
					if i == len(p)-1 {
						return cur.Content[j], i + 1, true
					}
					cur = cur.Content[j+1]
					found = true
					break
				}
			}
			if !found {
				return cur, i, false
			}
		default:
			return cur, i, false
		}
	}
	return cur, len(p), true
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
