package process

import (
	"os/exec"
	"sync"
	"testing"
	"time"
)

// pollExit (watchExit without pidfd) reports the exit of a child of ours
// with its status, and its goroutine ends when stopped.
func TestPollExit(t *testing.T) {
	var wg sync.WaitGroup
	quick := exec.Command("/bin/sh", "-c", "exit 3")
	if err := quick.Start(); err != nil {
		t.Fatal(err)
	}
	exit := make(chan exitStatus, 1)
	stop := pollExit(&wg, quick.Process.Pid, exit)
	select {
	case es := <-exit:
		if !es.Known || es.Code != 3 {
			t.Fatalf("exit status %+v, want known code 3", es)
		}
	case <-time.After(time.Minute):
		t.Fatal("no exit reported")
	}
	stop()

	long := exec.Command("/bin/sleep", "1000")
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = long.Process.Kill(); _ = long.Wait() }()
	stop = pollExit(&wg, long.Process.Pid, make(chan exitStatus, 1))
	stop()
	wg.Wait()
}
