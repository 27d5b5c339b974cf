package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Under run, a multi-document manifest rewritten in steps (a script that
// truncates it, writes the first document, and appends the second a
// moment later) never has its second object pruned and started again:
// the agent waits for the file to be quiet (--prune-quiet) before pruning
// what it no longer declares. Once a document is really gone, its object
// is pruned after that wait. (QA half-write case b.)
func TestRunWaitsForFileWrittenInSteps(t *testing.T) {
	e := newProcEnv(t)
	a := strings.Replace(procWeb, "name: web", "name: a", 1)
	b := strings.Replace(procWeb, "name: web", "name: b", 1)
	e.write("ab.yaml", a+"---\n"+b)
	stop := e.startAgent("--resync", "1h", "--prune-quiet", "2s", "--max-prune", "0")
	waitFor(t, "a and b running", func() bool { return e.pid("a.service") != 0 && e.pid("b.service") != 0 })
	pid := e.pid("b.service")

	path := filepath.Join(e.manifests, "ab.yaml")
	if err := os.WriteFile(path, []byte(a), 0o644); err != nil { // truncated: only a, for a moment
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // several settle periods: passes read the file as it is
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("---\n" + b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // past the quiet period
	if now := e.pid("b.service"); now != pid {
		t.Fatalf("b was pruned or restarted while its file was written (pid %d, was %d)\nagent log:\n%s", now, pid, stop())
	}

	// b removed for good: pruned once the file has been quiet.
	if err := os.WriteFile(path, []byte(a), 0o644); err != nil {
		t.Fatal(err)
	}
	// Meanwhile status shows it waiting for its prune, not converged.
	waitFor(t, "status: b PrunePending", func() bool {
		out, _ := e.cli("status", "-o", "json")
		var rep statusReport
		if json.Unmarshal([]byte(out), &rep) != nil {
			return false
		}
		for _, o := range rep.Objects {
			if o.Object == "Service/b" {
				return o.State == StatePrunePending && strings.Contains(o.Message, "--prune-quiet")
			}
		}
		return false
	})
	waitFor(t, "b pruned", func() bool { return e.pid("b.service") == 0 })
	if e.pid("a.service") == 0 {
		t.Fatal("a stopped")
	}
}
