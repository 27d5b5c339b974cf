package desired

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	pathpkg "path"

	"sigs.k8s.io/yaml"
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
// the file, its folder and the path, on the descriptors read).
//
// Outcomes: (labels, nil) when read; (nil, nil) when the file does not
// exist; (nil, err) when it exists but is refused, unreadable or not a
// string map.
func LoadHostLabels(file string, opts Options) (map[string]string, error) {
	data, err := ReadChecked(file, opts)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read host labels: %w", err)
	}
	var m map[string]string
	if err := yaml.UnmarshalStrict(data, &m); err != nil {
		return nil, fmt.Errorf("host labels %s: %w", file, err)
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
