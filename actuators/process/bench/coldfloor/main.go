// Command coldfloor is the floor of the process backend's cold start
// figure (scripts/bench-process-agent.sh): it starts N copies of a script
// at once, with no supervisor, and prints how long until each has appended
// its stamp to a file. What the agent adds on top of it (loading, unit
// files, enablement, the process table, output pipes) is the agent's cost.
//
// Usage: coldfloor SCRIPT N STAMPS
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: coldfloor SCRIPT N STAMPS")
		os.Exit(2)
	}
	script, stamps := os.Args[1], os.Args[3]
	n, err := strconv.Atoi(os.Args[2])
	if err != nil || n <= 0 {
		fmt.Fprintln(os.Stderr, "coldfloor: N must be a positive number")
		os.Exit(2)
	}
	t0 := time.Now()
	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			_ = c.Wait()
		}
	}()
	for i := 0; i < n; i++ {
		c := exec.Command(script)
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "coldfloor:", err)
			return
		}
		cmds = append(cmds, c)
	}
	deadline := t0.Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(stamps)
		if f := strings.Fields(string(b)); len(f) >= n {
			first, last := 1e18, 0.0
			for _, l := range f {
				v, _ := strconv.ParseFloat(l, 64)
				first, last = min(first, v), max(last, v)
			}
			t := float64(t0.UnixMicro()) / 1e6
			fmt.Printf("%.0f ms (first after %.0f ms)\n", (last-t)*1000, (first-t)*1000)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "coldfloor: timeout")
}
