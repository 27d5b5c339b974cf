// Command driver runs the resil process supervisor over N identical
// services, for the peer benchmarks in ../peers.sh. It renders the units
// itself (restart always, no delay, no start limit), enables them, and runs
// until SIGTERM/SIGINT, then stops every service (StopOnExit) and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/actuators/process"
	"resil.dev/resil/desired"
)

func main() {
	state := flag.String("state", "", "state directory")
	n := flag.Int("n", 1, "number of services")
	cmd := flag.String("cmd", "exec sleep 100000", "shell command of every service (run by bash -c); $I is the index")
	flag.Parse()
	if *state == "" {
		log.Fatal("driver: -state is required")
	}
	s, err := process.New(*state, zap.NewNop(), process.Options{StopOnExit: true, Output: io.Discard})
	if err != nil {
		log.Fatal(err)
	}
	a := process.NewApplier(s)
	for i := 0; i < *n; i++ {
		name := fmt.Sprintf("s%03d", i)
		o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: name},
			Service: &desired.ServiceSpec{
				Command:     []string{"/bin/bash", "-c", *cmd},
				Environment: map[string]string{"I": fmt.Sprint(i)},
				Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "0s",
					Limit: &desired.StartLimit{Burst: 0, Interval: "1s"}},
			}}
		files, err := process.Render(o)
		if err != nil {
			log.Fatal(err)
		}
		for _, f := range files {
			ctx := context.Background()
			if _, err := a.Apply(ctx, actuators.Step{Op: actuators.OpWriteFile, Path: filepath.Join(s.UnitDir(), f.Name), Data: f.Data}); err != nil {
				log.Fatal(err)
			}
			if _, err := a.Apply(ctx, actuators.Step{Op: actuators.OpEnable, Unit: f.Name}); err != nil {
				log.Fatal(err)
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Fprintln(os.Stderr, "driver: running", *n, "services")
	if err := s.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
