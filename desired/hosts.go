package desired

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	pathpkg "path"

	yaml "go.yaml.in/yaml/v3"
)

// Host is what host selectors are matched against.
type Host struct {
	Name   string
	Labels map[string]string
}

// Selects reports whether the selector picks this host. A nil selector
// selects every host; names are globs (path.Match), any may match; every
// label must be equal.
func (h Host) Selects(sel *HostSelector) bool {
	if sel == nil {
		return true
	}
	if len(sel.Names) > 0 {
		ok := false
		for _, g := range sel.Names {
			if m, _ := pathpkg.Match(g, h.Name); m {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for k, v := range sel.Labels {
		if got, ok := h.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// DefaultHostLabelsFile is where the host's own labels are kept.
const DefaultHostLabelsFile = "/etc/resil/host-labels.yaml"

// LoadHostLabels reads a flat YAML map of labels. A missing file is no labels.
// The labels choose which objects run here (and which are pruned), so the
// file is read as a manifest is (ReadChecked with opts: owner and mode of
// the file, its folder and the path, on the descriptors read), and parsed
// as strictly: one document, a mapping of label keys (the rule of
// spec.hosts.labels) to scalar values, no aliases, merge keys or duplicate
// keys. A file with no document (empty, only comments or only `---`, such as
// one caught at the first instant of `cat > labels.yaml`) is an error, as an
// empty manifest is: read as no labels, it would deselect (and prune) every
// object that selects this host by label. `{}` says "no labels".
//
// Outcomes: (labels, nil) when read (an empty, non-nil map for `{}`);
// (nil, nil) when the file does not exist; (nil, err) when it exists but
// is refused, unreadable, empty or invalid. Problems in the file's content
// are *FieldError values naming the file with line and column (several are
// joined with errors.Join; FieldErrors lists them).
func LoadHostLabels(file string, opts Options) (map[string]string, error) {
	data, err := ReadChecked(file, opts)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read host labels: %w", err)
	}
	m, err := parseHostLabels(file, data)
	if err != nil {
		return nil, fmt.Errorf("host labels: %w", err)
	}
	return m, nil
}

// parseHostLabels parses the content of a labels file; see LoadHostLabels.
func parseHostLabels(file string, data []byte) (map[string]string, error) {
	docs, fe := parseDocNodes(data, true)
	if fe != nil {
		fe.File = file
		return nil, fe
	}
	var nonEmpty []*yaml.Node
	for _, n := range docs {
		if !isNullDoc(n) {
			nonEmpty = append(nonEmpty, n)
		}
	}
	if len(nonEmpty) == 0 {
		return nil, &FieldError{File: file, Detail: "no document (the file is empty or holds only comments); write {} for no labels"}
	}
	if len(docs) > 1 {
		n := docs[1]
		if n.Line < 1 && len(nonEmpty) > 1 {
			n = nonEmpty[1]
		}
		return nil, &FieldError{File: file, Line: n.Line, Column: n.Column, Detail: "a second YAML document: a labels file is one mapping of labels"}
	}
	root := docs[0]
	if root.Kind != yaml.MappingNode {
		return nil, &FieldError{File: file, Line: root.Line, Column: root.Column, Detail: "not a mapping of labels (want key: value lines)"}
	}
	var errs []error
	failAt := func(n *yaml.Node, field, format string, args ...any) {
		errs = append(errs, &FieldError{File: file, Line: n.Line, Column: n.Column, Field: field, Detail: fmt.Sprintf(format, args...)})
	}
	m := make(map[string]string, len(root.Content)/2)
	seen := make(map[string]*yaml.Node, len(root.Content)/2)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch {
		case k.Kind == yaml.ScalarNode && (k.Tag == "!!merge" || k.Value == "<<"):
			failAt(k, "", "YAML merge keys are not supported in a labels file")
			continue
		case k.Kind == yaml.AliasNode || v.Kind == yaml.AliasNode:
			failAt(k, "", "YAML aliases are not supported in a labels file")
			continue
		case k.Kind != yaml.ScalarNode || (k.Tag != "!!str" && k.Tag != "!!int" && k.Tag != "!!bool"):
			failAt(k, "", "label keys must be strings")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			failAt(k, k.Value, "label already defined at line %d", first.Line)
			continue
		}
		seen[k.Value] = k
		if !validLabelKey(k.Value) {
			failAt(k, "", "invalid label key %q", k.Value)
			continue
		}
		if v.Kind != yaml.ScalarNode {
			failAt(v, k.Value, "label value must be a string")
			continue
		}
		val := v.Value
		if v.Tag == "!!null" {
			val = ""
		}
		tv := &validator{}
		if !tv.text(nil, val) {
			failAt(v, k.Value, "%s", tv.probs[0].detail)
			continue
		}
		m[k.Value] = val
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return m, nil
}

// ThisHost returns the hostname and labels of the machine.
// The labels file is read with opts (LoadHostLabels).
func ThisHost(labelsFile string, opts Options) (Host, error) {
	name, err := os.Hostname()
	if err != nil {
		return Host{}, fmt.Errorf("hostname: %w", err)
	}
	labels, err := LoadHostLabels(labelsFile, opts)
	return Host{Name: name, Labels: labels}, err
}
