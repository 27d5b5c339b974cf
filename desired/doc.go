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
// Only complete files are acted on (settle.go). A file some process holds
// open for writing is not read (Set.Busy: a read lease fails while a writer
// has it open); a file with no document — empty, only comments, only "---" —
// is reported in Set.Empty. Load has no memory and fails on neither; the
// reconciler treats both like broken files: what they held (objects, or a
// drop-in's settings) keeps its last good version, and owned units whose
// X-Resil-Source names them are not pruned. An object disappears only when
// its file is removed, or it is removed from a file that still holds other
// objects. Where no lease can be taken (EACCES when neither root nor the
// file's owner, EINVAL on filesystems without leases), a file is read
// without that protection.
//
// Files are opened only by open_unix.go: each path is walked component by
// component with openat(O_NOFOLLOW|O_NONBLOCK) from "/", every directory on
// the way (and on the way to any symlink target) must be owned by root or
// the manifests owner and not writable by group or others (a sticky one is
// allowed when the entry in it is owned by root or the owner), and a file's
// type, owner and mode are checked with fstat on the descriptor it is read
// from, so nothing can be swapped between check and read and a FIFO never
// blocks. Symlinks are followed only through that walk (git-sync's
// directory symlink, a ConfigMap's "..data" and files into it); the
// manifests directory is resolved once per load, and a load that raced a
// swap or the removal of the old revision is done again.
//
// Watch (watch.go) wakes on a manifest's close rather than on each write,
// on chmod/chown, and in the parent folders on the path only for the
// watched names.
//
// Rendering uses go-systemd's unit.Serialize for deterministic bytes. The
// quoting of command lines and environment assignments is written here
// because go-systemd's unit package serialises values verbatim: it neither
// quotes arguments nor escapes '$', '%', '"' or '\', which is exactly where
// unit-file injection happens.
package desired
