package desired

import (
	"os"
	"path/filepath"

	yaml "go.yaml.in/yaml/v3"
)

// Locate returns a FieldError naming where field (e.g. "spec.requires")
// of o is set: in the last of its drop-ins that sets it, else its
// manifest, else the nearest parent that exists. It is for problems found
// after loading, a backend's refusal of a valid object: it reads the files
// again from dir (the manifests directory), only for their positions, and
// leaves the line and column out where they cannot be read.
func Locate(dir string, o *Object, field, detail string) *FieldError {
	var docs []*doc
	add := func(rel string, idx int) {
		data, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			return
		}
		nodes, fe := parseDocs(data)
		if fe != nil || idx >= len(nodes) || nodes[idx].Kind != yaml.MappingNode {
			return
		}
		docs = append(docs, &doc{file: rel, abs: filepath.Join(dir, rel), idx: idx, node: nodes[idx]})
	}
	add(o.Source.File, o.Source.Doc)
	for _, d := range o.Source.DropIns {
		add(d, 0)
	}
	if len(docs) == 0 {
		return &FieldError{File: filepath.Join(dir, o.Source.File), Field: field, Detail: detail}
	}
	return (&loader{}).position(docs, parsePath(field), detail)
}
