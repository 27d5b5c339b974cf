package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 9 item 1: validate names a file with no objects (the agent keeps
// what it held) and a file still open for writing (not read).
func TestValidateEmptyAndBusyFiles(t *testing.T) {
	dir := dirWith(t, map[string]string{"web.yaml": good, "empty.yaml": "", "comment.yaml": "# later\n---\n", "busy.yaml": good})
	w, err := os.OpenFile(filepath.Join(dir, "busy.yaml"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	out, code := runCLI(t, "validate", "--owner-check", "off", dir)
	for _, want := range []string{
		"busy.yaml: open for writing by some process; not read",
		"comment.yaml: holds no objects",
		"empty.yaml: holds no objects",
		"3 errors; 1 objects valid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	// Validating one file reports only that file.
	out, code = runCLI(t, "validate", "--owner-check", "off", filepath.Join(dir, "empty.yaml"))
	if code != 1 || strings.Count(out, "holds no objects") != 1 || strings.Contains(out, "busy.yaml") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// Issue 9 item 6: a FIFO swapped in for a manifest makes validate return
// promptly with an error naming the file (it used to wait for a writer).
func TestValidateFIFOReturns(t *testing.T) {
	dir := dirWith(t, map[string]string{"web.yaml": good})
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "web.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out  string
		code int
	}
	done := make(chan result, 1)
	go func() {
		out, code := runCLI(t, "validate", "--owner-check", "off", dir)
		done <- result{out, code}
	}()
	select {
	case r := <-done:
		if r.code != 1 || !strings.Contains(r.out, filepath.Join(dir, "web.yaml")+": not a regular file") {
			t.Fatalf("exit %d:\n%s", r.code, r.out)
		}
	case <-time.After(time.Minute):
		t.Fatal("validate hangs on a FIFO")
	}
}
