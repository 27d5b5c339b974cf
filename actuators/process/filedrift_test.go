package process

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

// runningApp is a running supervisor with app.service started, and the
// path of its unit file.
func runningApp(t *testing.T) (*harness, string) {
	t.Helper()
	h := newHarness(t, "", Options{})
	h.run()
	h.install(service("app", desired.ServiceSpec{Command: sh(`exec sleep 1000`)}), true)
	if _, err := h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "app.service"}); err != nil {
		t.Fatal(err)
	}
	return h, filepath.Join(h.s.UnitDir(), "app.service")
}

// The supervisor reports what the planner needs to judge a hand edit or a
// deletion of a unit file as systemd's observer does: the file's
// modification time (FileModTime, against the process's start), and
// FileDeleted for a unit still loaded from a file that is gone.
func TestObserveFileTimeAndDeletion(t *testing.T) {
	t.Parallel()
	h, path := runningApp(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	u := h.unit("app.service")
	if u.FileModTime != uint64(fi.ModTime().UnixMicro()) || u.FileDeleted {
		t.Fatalf("file there: FileModTime %d (want %d), FileDeleted %v", u.FileModTime, fi.ModTime().UnixMicro(), u.FileDeleted)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	u = h.unit("app.service")
	if !u.FileDeleted || u.FileModTime != 0 || u.File != nil || !isActive(u) {
		t.Fatalf("file deleted: FileDeleted %v, FileModTime %d, file %q, active %s", u.FileDeleted, u.FileModTime, u.File, u.ActiveState)
	}
}

// A unit file that is there but cannot be read (here: over the observer's
// cap, as a hand edit could make it) fails the observation, naming the
// file: read as missing, the live unit's file would be FileDeleted and the
// pass would write over it whatever its drift policy.
func TestObserveUnreadableFileIsAnError(t *testing.T) {
	t.Parallel()
	h, path := runningApp(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	big := append(data, make([]byte, maxUnitFile)...)
	if err := os.WriteFile(path, big, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := h.s.Observe(context.Background(), []string{"app.service"})
	if err == nil || !strings.Contains(err.Error(), "app.service") {
		t.Fatalf("Observe = %v, %v; want an error naming app.service", st, err)
	}
}
