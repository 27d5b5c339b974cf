package process

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

func TestStopOnExitReverseOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{StopOnExit: true})
	order := filepath.Join(h.dir, "order")
	h.run()
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		// The service reports when its TERM trap is set: a start returns
		// once the process runs, before the shell ran a line, and a SIGTERM
		// before the trap kills it without a trace (the old flake: "b,a").
		ready := filepath.Join(h.dir, n+".ready")
		h.install(service(n, desired.ServiceSpec{
			Command:     sh(`trap 'echo ` + n + ` >> ` + order + `; exit 0' TERM; : > ` + ready + `; while :; do sleep 0.05; done`),
			StopTimeout: "5s"}), true)
		if _, err := h.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: n + ".service"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, n+" trap set", func() bool { _, err := os.Stat(ready); return err == nil })
	}
	var pids []int
	for _, n := range []string{"a", "b", "c"} {
		pids = append(pids, int(h.unit(n+".service").MainPID))
	}
	h.abandon() // with StopOnExit, Run stops everything before returning
	if got := strings.Join(lines(t, order), ","); got != "c,b,a" {
		t.Fatalf("stop order %q, want c,b,a", got)
	}
	for _, p := range pids {
		if alive(p) {
			t.Fatalf("pid %d alive after Run returned", p)
		}
	}
	b, _ := os.ReadFile(filepath.Join(h.dir, "processes.json"))
	var tab processTable
	json.Unmarshal(b, &tab)
	if len(tab.Processes) != 0 {
		t.Fatalf("process table not empty: %s", b)
	}
}
