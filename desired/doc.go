// Package desired turns a directory of resil.dev/v1 manifests into the
// desired state of a host: it loads YAML files (several documents per file),
// merges operator drop-ins (NAME.d/*.yaml, JSON merge patch, lexical order),
// validates strictly with file:line:column: field errors (every problem of
// every object; each error one line, control characters escaped), selects
// the objects meant for this host, and renders each object into systemd unit
// files. Validation refuses what systemd or the kernel would refuse at start
// (see MaxArgStrlen, MaxUnitLine, ExecArgMax), and any value that could
// inject a line, a '%' specifier or a '$' expansion into a unit file.
//
// The package is level-triggered in the kubelet sense: Load always reads the
// whole directory and returns the full Set; Watch (see watch.go) only says
// "read again" and then sends a full Set. A bad file never hides the good
// ones, and the caller learns which files were bad (Set.Broken) so that the
// objects they used to hold keep their last good desired state instead of
// being pruned.
//
// Rendering uses go-systemd's unit.Serialize for deterministic bytes. The
// quoting of command lines and environment assignments is written here
// because go-systemd's unit package serialises values verbatim: it neither
// quotes arguments nor escapes '$', '%', '"' or '\', which is exactly where
// unit-file injection happens.
package desired
