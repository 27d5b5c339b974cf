package atomicfile

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
)

// WriteFile writes path atomically with its temporary file beside it.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return renameio.WriteFile(path, data, perm, renameio.WithTempDir(filepath.Dir(path)))
}

// RemoveTemps deletes the temporary files of WriteFile calls for dir/name
// (each name given) that a kill -9 interrupted: ".NAME<digits>",
// renameio's names. Only for files one writer at a time writes (holding
// a lock): another writer's temporary file could be in use.
func RemoveTemps(dir string, names ...string) {
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
