package desired

// Strict decoding of the agent's own YAML configuration files (not
// manifests): the same positions as a manifest's errors.

import (
	"encoding/json"
	"errors"
	"reflect"

	"github.com/hashicorp/go-multierror"
)

// DecodeConfig decodes data, the one YAML document of the configuration
// file file (--source-config), strictly into v, a pointer to a struct with
// json tags. Its problems come back as *FieldError (file:line:col: field:
// detail, errors.Join'ed): a syntax error, more than one document, every
// unknown field (with the field it is a typo of named) and a type error. An empty
// file sets nothing.
func DecodeConfig(file string, data []byte, v any) error {
	docs, fe := parseDocs(data)
	if fe != nil {
		fe.File = file
		return fe
	}
	switch len(docs) {
	case 0:
		return nil
	case 1:
	default:
		return &FieldError{File: file, Line: docs[1].Line, Column: docs[1].Column, Detail: "want one YAML document, found a second"}
	}
	root := docs[0]
	at := func(p path, detail string) *FieldError {
		fe := &FieldError{File: file, Field: p.String(), Detail: detail}
		if n, _, _ := lookup(root, p); n != nil {
			fe.Line, fe.Column = n.Line, n.Column
		}
		return fe
	}
	raw, err := nodeToJSON(root)
	if err != nil {
		var ne *nodeError
		if errors.As(err, &ne) {
			return &FieldError{File: file, Line: ne.line, Column: ne.column, Field: ne.field(), Detail: ne.msg}
		}
		return &FieldError{File: file, Detail: err.Error()}
	}
	var probs []positioned
	unknownFields(root, reflect.TypeOf(v), nil, &probs)
	if err := json.Unmarshal(raw, v); err != nil {
		probs = append(probs, positioned{typeErrorPath(err, nil), typeErrorDetail(err)})
	}
	var all *multierror.Error
	for _, p := range probs {
		all = multierror.Append(all, at(p.p, p.detail))
	}
	if all == nil {
		return nil
	}
	all.ErrorFormat = listFormat
	return all
}
