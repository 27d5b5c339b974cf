package desired

import (
	"bytes"
	"encoding/json"
	"reflect"
	"sort"
	"strconv"
	"sync"
)

// headerTypes is the document as a whole, for the type check: the spec is
// checked against the kind's spec type separately.
var headerTypes = reflect.TypeOf(header{})

var (
	rawMessageType = reflect.TypeOf(json.RawMessage{})
	httpStatusType = reflect.TypeOf(HTTPStatus(""))
)

// checkTypes reports every value of a document (JSON) whose type does not
// fit the Go type it decodes into, with its field path, in the words of
// typeErrorDetail. encoding/json reports only the first; an operator fixing
// a manifest wants them all at once. The spec is checked against specType
// when it is not nil. Values the types do not know (unknown fields) are
// left to unknownFields.
func checkTypes(raw []byte, specType reflect.Type) []positioned {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil // not JSON at all: the decoder's own error is reported
	}
	var out []positioned
	walkTypes(v, headerTypes, nil, &out)
	if m, ok := v.(map[string]any); ok && specType != nil {
		walkTypes(m["spec"], specType, path{"spec"}, &out)
	}
	return out
}

// headerKind returns the kind a document names ("" when it names none, or
// not as a string).
func headerKind(raw []byte) Kind {
	var h struct {
		Kind any `json:"kind"`
	}
	_ = json.Unmarshal(raw, &h)
	k, _ := h.Kind.(string)
	return Kind(k)
}

// walkTypes follows encoding/json's decoding rules: null fits anything
// (the zero value), a number must fit the integer type, mappings and lists
// must be mappings and lists.
func walkTypes(v any, t reflect.Type, p path, out *[]positioned) {
	if v == nil || t == rawMessageType {
		return
	}
	for t.Kind() == reflect.Ptr {
		t = t.Elem()
	}
	bad := func(got string) {
		*out = append(*out, positioned{p, typeErrorDetail(&json.UnmarshalTypeError{Value: got, Type: t})})
	}
	if t == httpStatusType {
		// A string, or an integer code (HTTPStatus.UnmarshalJSON).
		if n, ok := v.(json.Number); ok {
			if _, err := strconv.ParseInt(string(n), 10, 64); err == nil {
				return
			}
		}
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			bad(jsonKindOf(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			bad(jsonKindOf(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			bad(jsonKindOf(v))
			return
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || reflect.Zero(t).OverflowInt(i) {
			bad("number " + string(n))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			bad(jsonKindOf(v))
			return
		}
		i, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil || reflect.Zero(t).OverflowUint(i) {
			bad("number " + string(n))
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			bad(jsonKindOf(v))
		}
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			bad(jsonKindOf(v))
			return
		}
		for i, x := range list {
			walkTypes(x, t.Elem(), p.index(i), out)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			bad(jsonKindOf(v))
			return
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			walkTypes(m[k], t.Elem(), p.key(k), out)
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			bad(jsonKindOf(v))
			return
		}
		for _, f := range jsonFields(t) {
			if x, set := m[f.name]; set {
				walkTypes(x, f.typ, p.key(f.name), out)
			}
		}
	}
}

// jsonField is a struct field that decodes from a JSON key.
type jsonField struct {
	name string
	typ  reflect.Type
}

// jsonFields lists the fields of struct type t that decode from a key, in
// field order, computed once per type.
func jsonFields(t reflect.Type) []jsonField {
	if fs, ok := jsonFieldsCache.Load(t); ok {
		return fs.([]jsonField)
	}
	var fs []jsonField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name := jsonName(f); name != "" {
			fs = append(fs, jsonField{name: name, typ: f.Type})
		}
	}
	jsonFieldsCache.Store(t, fs)
	return fs
}

var jsonFieldsCache sync.Map // reflect.Type → []jsonField; read-only once stored

// jsonName is the key a struct field decodes from ("" for none).
func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return ""
	}
	if i := bytes.IndexByte([]byte(tag), ','); i >= 0 {
		tag = tag[:i]
	}
	if tag == "" {
		return f.Name
	}
	return tag
}

// jsonKindOf names a JSON value's kind as encoding/json's type errors do.
func jsonKindOf(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case json.Number, float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "null"
}

// failSorted records problems found in docs (base first, then drop-ins) in
// file and position order, so a list of type errors reads top to bottom.
func (l *loader) failSorted(docs []*doc, probs []positioned) {
	fes := make([]*FieldError, len(probs))
	for i, p := range probs {
		fes[i] = l.position(docs, p.p, p.detail)
	}
	order := map[string]int{}
	for i, d := range docs {
		if _, seen := order[d.abs]; !seen {
			order[d.abs] = i
		}
	}
	sort.SliceStable(fes, func(i, j int) bool {
		a, b := fes[i], fes[j]
		if order[a.File] != order[b.File] {
			return order[a.File] < order[b.File]
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	for _, fe := range fes {
		rel := docs[0].file
		for _, d := range docs {
			if d.abs == fe.File {
				rel = d.file
			}
		}
		l.fail(rel, fe)
	}
}
