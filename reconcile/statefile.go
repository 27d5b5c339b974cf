package reconcile

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
)

// writeStateFile writes a state dir file atomically (renameio: temp file,
// fsync, rename) with its temporary file beside it. renameio would
// otherwise put it in $TMPDIR when that is on the same filesystem, where a
// kill -9 between create and rename leaves it for good (found by the
// torture suite for the restart journal); beside the target, the agent's
// next start removes it (removeStateTemps) for the files only it writes.
func writeStateFile(path string, data []byte) error {
	return renameio.WriteFile(path, data, 0o644, renameio.WithTempDir(filepath.Dir(path)))
}

// removeStateTemps deletes the temporary files of writes of dir/name
// interrupted by a kill -9 (".NAME<digits>", renameio's names). Only for
// files one writer at a time writes (the agent, holding its lock): another
// writer's temporary file could be in use.
func removeStateTemps(dir string, names ...string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		for _, name := range names {
			prefix := "." + name
			if len(n) > len(prefix) && strings.HasPrefix(n, prefix) && strings.Trim(strings.TrimPrefix(n[len(prefix):], "-"), "0123456789") == "" {
				_ = os.Remove(filepath.Join(dir, n))
			}
		}
	}
}
