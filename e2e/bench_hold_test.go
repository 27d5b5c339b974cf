package e2e

// TestBenchHold keeps one converged sandbox up for measuring by hand
// (profiles of `apply`/`diff`, A/B runs of two agent builds in the same
// sandbox). Skipped unless RESIL_BENCH_HOLD names a directory; it writes
// there "pid" (the sandbox's PID 1 on the host) and "host" (the host
// directory bound at /srv/resil: copy binaries there and run them as
// /srv/resil/...), then waits until a file "stop" appears (at most 2 h).
// RESIL_BENCH_HOLD_N sets the number of services (default 1000).
//
//	nsenter -t $(cat DIR/pid) -m -p -u -i -n -C -r -w -- /srv/resil/reconciler apply \
//	    --backend systemd --state-dir /var/lib/resil --manifests /srv/resil/m

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestBenchHold(t *testing.T) {
	dir := os.Getenv("RESIL_BENCH_HOLD")
	if dir == "" {
		t.Skip("by hand: set RESIL_BENCH_HOLD=DIR") // not a prerequisite: opt-in
	}
	n := 1000
	if v := os.Getenv("RESIL_BENCH_HOLD_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	b := newBench(t)
	names := b.writeServices(n)
	if r := b.cli("apply"); r.code != 0 {
		t.Fatalf("cold apply exit %d\n%s", r.code, tail(r.stderr, 20))
	}
	if got := b.activeCount(names); got != n {
		t.Fatalf("cold apply: %d of %d active", got, n)
	}
	for name, v := range map[string]string{"pid": strconv.Itoa(b.sb.PID()), "host": b.host} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stop := filepath.Join(dir, "stop")
	for deadline := time.Now().Add(2 * time.Hour); time.Now().Before(deadline); time.Sleep(time.Second) {
		if _, err := os.Stat(stop); err == nil {
			return
		}
	}
}
