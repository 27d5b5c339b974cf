// Package atomicfile writes the agent's files the crash-only way: a
// temporary file beside the target, fsync, rename (google/renameio), and
// sweeps the temporary files a kill -9 left. renameio alone would put the
// temporary file in $TMPDIR when that is on the same filesystem, where a
// kill -9 between create and rename leaves it for good; beside the target
// its writer finds and removes it (RemoveTemps). Written here, as a thin
// layer over renameio: renameio has no sweep of its own leftovers.
package atomicfile
