package desired

// File discovery: which directory entries are manifests, and which file
// names are safe to read. Opening them safely is open_unix.go.

import (
	"regexp"
	"strings"
)

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

var safeFileRE = regexp.MustCompile(`^[A-Za-z0-9_.+@=-]+$`)
