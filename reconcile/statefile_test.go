package reconcile

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.uber.org/zap/zaptest"
)

// An agent's Reconciler removes the temporary files a killed agent left
// beside the state files only it writes, and nothing else; a read-only
// one (diff) removes nothing. State files are written with their
// temporary file beside them, never in $TMPDIR.
func TestStateTempFiles(t *testing.T) {
	left := []string{".restart-pending.json2539384133", ".rollout.json77", ".prune-pending.json-12", ".prune-held.json5"}
	kept := []string{"restart-pending.json", ".rollout-resume.json123", ".prune-confirm.json9", ".restart-pending.jsonx1", "notes.txt"}
	for _, readOnly := range []bool{true, false} {
		dir := t.TempDir()
		for _, n := range append(slices.Clone(left), kept...) {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("{}"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		New(Config{Log: zaptest.NewLogger(t), RestartJournal: true, Safety: Safety{StateDir: dir, ReadOnly: readOnly}})
		for _, n := range left {
			if _, err := os.Stat(filepath.Join(dir, n)); (err == nil) != readOnly {
				t.Errorf("read-only %v: %s stat %v", readOnly, n, err)
			}
		}
		for _, n := range kept {
			if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
				t.Errorf("read-only %v: %s removed: %v", readOnly, n, err)
			}
		}
	}

	tmp, dir := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	if err := writeStateFile(filepath.Join(dir, RestartJournalFileName), []byte("{}\n")); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("TMPDIR used: %v", ents)
	}
}
