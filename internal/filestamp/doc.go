// Package filestamp identifies a file's content by its metadata, without
// reading it: device, inode, size, modification and change times. The
// manifest loader's cache (desired), the observer's unit-directory and
// dependency-directory scans (observed/systemd) and the pause-lease poll
// (reconcile) keep what they read of a file or directory while its stamp
// is unchanged. Read reads a file and the stat of the same open file,
// with a size cap (the unit-file readers of both backends).
//
// The racy-file rule: file times come from the kernel's coarse clock (one
// tick; whole seconds on some file systems), so a second change within the
// tick of a read leaves the stamp as it was. A stamp proves a file
// unchanged only when its change time was older than the read by more
// than RacyWindow (git's "racily clean" index entries). Written here, not
// taken from a library: none offers the stamp with the rule.
package filestamp
