package reconcile

import (
	"encoding/json"
	"os"
	"path/filepath"

	"resil.dev/resil/internal/atomicfile"
)

// writeStateFile writes a state dir file atomically (atomicfile: temporary
// file beside it, fsync, rename), 0644; the agent's next start removes a
// killed write's leftover (atomicfile.RemoveTemps) for the files only it
// writes.
func writeStateFile(path string, data []byte) error { return atomicfile.WriteFile(path, data, 0o644) }

// writeStateJSON writes v as JSON to the state dir file name, creating
// the dir (writeStateFile: temp file, fsync, rename).
func writeStateJSON(dir, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeStateFile(filepath.Join(dir, name), append(b, '\n'))
}
