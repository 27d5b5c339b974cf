// Package bench holds the peer benchmarks of the process supervisor: the Go
// benchmarks here run it in-process; peers.sh compares it with supervisord
// and runit using driver/.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/actuators/process"
	"resil.dev/resil/desired"
)

func install(b *testing.B, s *process.Supervisor, name string, spec desired.ServiceSpec, enable bool) {
	b.Helper()
	a := process.NewApplier(s)
	files, err := process.Render(&desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService,
		Metadata: desired.ObjectMeta{Name: name}, Service: &spec})
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range files {
		if _, err := a.Apply(context.Background(), actuators.Step{Op: actuators.OpWriteFile, Path: filepath.Join(s.UnitDir(), f.Name), Data: f.Data}); err != nil {
			b.Fatal(err)
		}
		if enable {
			a.Apply(context.Background(), actuators.Step{Op: actuators.OpEnable, Unit: f.Name})
		}
	}
}

func run(b *testing.B, s *process.Supervisor) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
}

// BenchmarkCrashRestart measures crash -> restarted latency with zero
// restart delay: one op is one crash and restart of a bash child that
// stamps $EPOCHREALTIME and exits 1. p50-ms and p99-ms are the stamp gaps.
func BenchmarkCrashRestart(b *testing.B) {
	dir := b.TempDir()
	stamps := filepath.Join(dir, "stamps")
	s, err := process.New(filepath.Join(dir, "state"), zap.NewNop(), process.Options{StopOnExit: true, Output: os.Stderr})
	if err != nil {
		b.Fatal(err)
	}
	install(b, s, "crash", desired.ServiceSpec{Command: []string{"/bin/bash", "-c", "echo $EPOCHREALTIME >> " + stamps + "; exit 1"},
		Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "0s", Limit: &desired.StartLimit{Burst: 0, Interval: "1s"}}}, true)
	b.ResetTimer()
	stop := run(b, s)
	for count(stamps) < b.N+1 {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	stop()
	reportGaps(b, stamps)
}

// BenchmarkCrashRestartFloor is BenchmarkCrashRestart's floor on this
// host, for its ratio: the same bash child run again at once by a bare Go
// loop (fork, exec, wait), with no supervisor, table or status.
func BenchmarkCrashRestartFloor(b *testing.B) {
	stamps := filepath.Join(b.TempDir(), "stamps")
	b.ResetTimer()
	for i := 0; i <= b.N; i++ {
		_ = exec.Command("/bin/bash", "-c", "echo $EPOCHREALTIME >> "+stamps+"; exit 1").Run()
	}
	b.StopTimer()
	reportGaps(b, stamps)
}

// reportGaps reports the p50 and p99 of the gaps between the stamps.
func reportGaps(b *testing.B, stamps string) {
	var ts []float64
	for _, l := range strings.Fields(readFile(stamps)) {
		v, _ := strconv.ParseFloat(l, 64)
		ts = append(ts, v)
	}
	var gaps []float64
	for i := 1; i < len(ts) && i <= b.N; i++ {
		gaps = append(gaps, (ts[i]-ts[i-1])*1000)
	}
	sort.Float64s(gaps)
	if len(gaps) > 0 {
		b.ReportMetric(gaps[len(gaps)/2], "p50-ms")
		b.ReportMetric(gaps[(len(gaps)-1)*99/100], "p99-ms")
	}
}

// BenchmarkStartStop100 starts and stops 100 sleep services: one op is a
// full start of all of them (each start returns once its process runs)
// followed by a full stop.
func BenchmarkStartStop100(b *testing.B) {
	dir := b.TempDir()
	s, err := process.New(filepath.Join(dir, "state"), zap.NewNop(), process.Options{StopOnExit: true, Output: os.Stderr})
	if err != nil {
		b.Fatal(err)
	}
	const n = 100
	for i := 0; i < n; i++ {
		install(b, s, fmt.Sprintf("s%03d", i), desired.ServiceSpec{Command: []string{"sleep", "100000"},
			Restart: &desired.RestartSpec{Limit: &desired.StartLimit{Burst: 0, Interval: "1s"}}}, false) // like systemd, manual starts count toward the limit
	}
	stop := run(b, s)
	defer stop()
	a := process.NewApplier(s)
	ctx := context.Background()
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for _, op := range []actuators.Op{actuators.OpStart, actuators.OpStop} {
			for i := 0; i < n; i++ {
				if _, err := a.Apply(ctx, actuators.Step{Op: op, Unit: fmt.Sprintf("s%03d.service", i)}); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func count(p string) int { return strings.Count(readFile(p), "\n") }
