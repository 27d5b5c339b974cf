//go:build unix && !linux

package desired

// Without Linux leases, whether a writer holds a file open cannot be told:
// files are read as they are, and Watch waits for a quiet period instead.

func takeReadLease(int) (leased, busy bool) { return false, false }

func releaseLease(int) {}

// WriterOpen cannot tell on this system: known is always false.
func WriterOpen(string, Options) (busy, known bool) { return false, false }

// writersOf cannot tell on this system.
func writersOf(path string, dev, ino uint64) string { return "" }
