package desired

import (
	"errors"
	"fmt"

	yaml "go.yaml.in/yaml/v3"
)

// Document returns the merged JSON document the object was decoded from:
// its base document with every drop-in merged onto it. Together with
// Source it is all DecodeObject needs to rebuild the object exactly. It is
// nil for an object that was not loaded (built in code). The caller must
// not modify it.
func (o *Object) Document() []byte { return o.document }

// DecodeObject rebuilds an object from a document returned by
// Object.Document and its Source, through the same strict decode and
// validation as Load (unknown fields, types, header, spec rules). It checks
// only what one object can tell: not the cross-object rules (duplicates,
// timer references, host selection) that Load applies to a whole set.
// The error lists every problem found; positions refer to src.File.
func DecodeObject(raw []byte, src Source) (*Object, error) {
	nodes, fe := parseDocs(raw)
	if fe != nil {
		fe.File = src.File
		return nil, fe
	}
	if len(nodes) != 1 || nodes[0].Kind != yaml.MappingNode {
		return nil, &FieldError{File: src.File, Detail: fmt.Sprintf("want exactly one mapping document, got %d documents", len(nodes))}
	}
	norm, err := nodeToJSON(nodes[0])
	if err != nil {
		return nil, &FieldError{File: src.File, Detail: err.Error()}
	}
	l := &loader{dir: "", errs: map[string][]error{}, busy: map[string]bool{}, busyBy: map[string]string{}, empty: map[string]bool{}}
	d := &doc{file: src.File, abs: src.File, idx: src.Doc, node: nodes[0], raw: norm}
	o := l.decode(d)
	if o != nil && l.finish(o, nil) && len(l.errs) == 0 {
		o.Source = Source{File: src.File, Doc: src.Doc, DropIns: append([]string(nil), src.DropIns...)}
		return o, nil
	}
	var errs []error
	for _, es := range l.errs {
		errs = append(errs, es...)
	}
	if len(errs) == 0 {
		errs = append(errs, &FieldError{File: src.File, Detail: "invalid object"})
	}
	return nil, errors.Join(errs...)
}
