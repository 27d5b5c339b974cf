package ledger

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"resil.dev/resil/reconcile"
)

// TestHookTimeout: a hook that outlives its timeout is killed with
// everything it started (its process group), and the failure is reported
// at the timeout, not after exec's WaitDelay; a hook that ends by itself
// reports its own result.
func TestHookTimeout(t *testing.T) {
	dir := t.TempDir()
	shellPID, bgPID := filepath.Join(dir, "F"), filepath.Join(dir, "G")
	for _, tc := range []struct {
		name    string
		command []string
		timeout time.Duration
		want    string   // error text, "" for none
		gone    []string // files naming PIDs that must be gone afterwards
	}{
		{"timeout kills the group", []string{"/bin/sh", "-c", "echo $$ > " + shellPID + "; sleep 300 & echo $! > " + bgPID + "; wait"},
			300 * time.Millisecond, "timed out after 300ms", []string{shellPID, bgPID}},
		{"timeout of a direct sleep", []string{"/bin/sh", "-c", "sleep 301"}, 200 * time.Millisecond, "timed out after 200ms", nil},
		{"exit status", []string{"/bin/sh", "-c", "echo nope >&2; exit 7"}, 5 * time.Second, "exit status 7: nope", nil},
		{"success", []string{"/bin/true"}, 5 * time.Second, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range tc.gone {
				os.Remove(f)
			}
			j := hookJob{command: tc.command, event: reconcile.Event{Object: "Service/web", Reason: reconcile.ReasonRestartStorm}}
			start := time.Now()
			err := runHook(context.Background(), j, tc.timeout)
			took := time.Since(start)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("runHook: %v, want %q", err, tc.want)
			}
			if tc.want != "" && strings.HasPrefix(tc.want, "timed out") && took > tc.timeout+time.Second {
				t.Errorf("reported after %s, want at the timeout (%s)", took, tc.timeout)
			}
			for _, f := range tc.gone {
				pid := readPID(t, f)
				t.Cleanup(func() {
					if alive(pid) {
						_ = syscall.Kill(pid, syscall.SIGKILL) // the test's own child, left by a broken runHook
					}
				})
				deadline := time.Now().Add(2 * time.Second)
				for alive(pid) && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if alive(pid) {
					t.Errorf("pid %d (%s) still runs after the hook returned", pid, filepath.Base(f))
				}
			}
		})
	}
}

func readPID(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the hook did not write its pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("pid file %s: %q", file, b)
	}
	return pid
}

// alive reports whether pid runs: it exists and is not a zombie (a killed
// orphan waits for its new parent to reap it).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}
