package reconcile

import "resil.dev/resil/internal/atomicfile"

// writeStateFile writes a state dir file atomically (atomicfile: temporary
// file beside it, fsync, rename); the agent's next start removes a killed
// write's leftover (removeStateTemps) for the files only it writes.
func writeStateFile(path string, data []byte) error { return atomicfile.WriteFile(path, data, 0o644) }

// removeStateTemps deletes the temporary files of writes of dir/name
// interrupted by a kill -9 (atomicfile.RemoveTemps).
func removeStateTemps(dir string, names ...string) { atomicfile.RemoveTemps(dir, names...) }
