package reconcile

import "resil.dev/resil/internal/atomicfile"

// writeStateFile writes a state dir file atomically (atomicfile: temporary
// file beside it, fsync, rename), 0644; the agent's next start removes a
// killed write's leftover (atomicfile.RemoveTemps) for the files only it
// writes.
func writeStateFile(path string, data []byte) error { return atomicfile.WriteFile(path, data, 0o644) }
