package desired

import (
	"path/filepath"
	"sort"
	"strings"
)

// Only complete files are acted on. Two kinds of file are not taken as a
// new version of what they held, and are reported in the Set instead:
//
//   - Busy: some process holds the file open for writing (a `cat > f`,
//     `rsync --inplace` or editor still at work). It is not read at all.
//   - Empty: the file holds no document (`: > f`, only comments, only
//     "---"). Load has no memory, so it cannot tell a new empty file from
//     a file that lost its objects; the caller treats it like a broken file.
//
// Either way, the objects the file (or drop-in) held keep their last good
// version. An object disappears only when its file is removed, or when it
// is removed from a file that still holds other objects.

// Unsettled returns a busy or empty file that o depends on in this load —
// its manifest, one of its drop-ins, or a drop-in now in its NAME.d folder —
// and whether that file is busy; "" when there is none.
func (s *Set) Unsettled(o *Object) (file string, busy bool) {
	if f, b := s.unsettledFile(o.Source.File); f != "" {
		return f, b
	}
	for _, d := range o.Source.DropIns {
		if f, b := s.unsettledFile(d); f != "" {
			return f, b
		}
	}
	return s.UnsettledName(o.Metadata.Name)
}

// UnsettledName returns a busy or empty drop-in in the NAME.d folder of
// name, and whether it is busy; "" when there is none.
func (s *Set) UnsettledName(name string) (file string, busy bool) {
	for _, f := range sortedFiles(s.Busy) {
		if DropInName(f) == name {
			return f, true
		}
	}
	for _, f := range sortedFiles(s.Empty) {
		if DropInName(f) == name {
			return f, false
		}
	}
	return "", false
}

func (s *Set) unsettledFile(f string) (string, bool) {
	switch {
	case f == "":
		return "", false
	case s.Busy[f]:
		return f, true
	case s.Empty[f]:
		return f, false
	}
	return "", false
}

// DropInName returns NAME for a drop-in path "NAME.d/FILE" (relative to the
// manifests directory), or "" when rel is not a drop-in.
func DropInName(rel string) string {
	dir, _ := filepath.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" || strings.Contains(dir, "/") || !strings.HasSuffix(dir, ".d") {
		return ""
	}
	return strings.TrimSuffix(dir, ".d")
}

func sortedFiles(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for f := range m {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}
