// Command watchcost measures what a watch's connection costs one edit's
// daemon-reload and restart (scripts/bench-watch-cost.sh runs it inside a
// TestBenchHold sandbox, where systemd's private socket can be used).
//
// For each round and mode it writes a drop-in with a new Environment= for
// the next service, then times Reload and a RestartUnit job until its
// JobRemoved, and reads PID 1's and dbus-daemon's CPU around them. A client
// subscribed on the bus runs throughout, as in the bench's own figure (with
// a subscriber PID 1 sends every signal to the bus). Modes:
//
//   - private-watch: a Conn on the private socket running a watch; the
//     reload and the job go on the watch's connection (the agent under
//     `run`). PID 1 builds each signal for the bus and again for it.
//   - bus-command: a Conn on the private socket without a watch; the
//     reload and the job go through the bus daemon (busreload.go: a
//     command's path, and the bench's "own" figure's).
//   - bus-watch: a Conn on the bus running a watch through go-systemd; the
//     reload and the job on the bus.
//
// The drop-ins are removed (and systemd reloaded) at the end. Usage:
// watchcost MODES ROUNDS FIRST, MODES comma-separated, services named
// b%04d (TestBenchHold's) from FIRST on, wrapping at 100.
//
// Not a test: it has no verdict; its figures are in the README's scale
// follow-ups.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"resil.dev/resil/internal/sdbus"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: watchcost MODES ROUNDS FIRST")
		os.Exit(2)
	}
	rounds, err1 := strconv.Atoi(os.Args[2])
	first, err2 := strconv.Atoi(os.Args[3])
	if err1 != nil || err2 != nil || rounds <= 0 || first <= 0 {
		fmt.Fprintln(os.Stderr, "watchcost: ROUNDS and FIRST must be positive numbers")
		os.Exit(2)
	}
	if err := run(strings.Split(os.Args[1], ","), rounds, first); err != nil {
		fmt.Fprintln(os.Stderr, "watchcost:", err)
		os.Exit(1)
	}
}

type sample struct{ reload, restart, pid1, bus time.Duration }

func run(modes []string, rounds, first int) (err error) {
	ctx := context.Background()
	out, err := exec.Command("pidof", "dbus-daemon").Output()
	if err != nil || len(strings.Fields(string(out))) == 0 {
		return fmt.Errorf("no dbus-daemon: %v", err)
	}
	busPID := strings.Fields(string(out))[0]

	var wg sync.WaitGroup
	defer wg.Wait()
	// drain reads a watch's channel until the func it returns is called
	// (after the watch's stop) or the channel closes: it is not closed
	// here, a watch whose connection fails closes it itself.
	drain := func(ch <-chan *godbus.Signal) (end func()) {
		done := make(chan struct{})
		wg.Go(func() {
			for {
				select {
				case _, ok := <-ch:
					if !ok {
						return
					}
				case <-done:
					return
				}
			}
		})
		return func() { close(done) }
	}
	subscriber, err := sdbus.DialBus(ctx, sdbus.SystemBusSocket)
	if err != nil {
		return err
	}
	defer subscriber.Close()
	sch := make(chan *godbus.Signal, 4096)
	stopSub, err := subscriber.WatchUnitSignals(ctx, sch)
	if err != nil {
		return err
	}
	endSub := drain(sch)
	defer func() { stopSub(); endSub() }()

	conns := map[string]*sdbus.Conn{}
	for _, m := range modes {
		var c *sdbus.Conn
		switch m {
		case "private-watch", "bus-command":
			c, err = sdbus.DialPrivate(ctx, sdbus.PrivateSocket)
		case "bus-watch":
			c, err = sdbus.DialBus(ctx, sdbus.SystemBusSocket)
		default:
			return fmt.Errorf("unknown mode %q", m)
		}
		if err != nil {
			return err
		}
		defer c.Close()
		conns[m] = c
	}
	var dirs []string
	defer func() {
		for _, d := range dirs {
			os.RemoveAll(d)
		}
		if len(dirs) > 0 {
			if rerr := subscriber.ReloadContext(context.WithoutCancel(ctx)); err == nil {
				err = rerr
			}
		}
	}()

	samples := map[string][]sample{}
	u := first
	for r := range rounds {
		for _, m := range modes {
			unit := fmt.Sprintf("b%04d.service", (u-1)%100+1)
			u++
			dir := filepath.Join("/etc/systemd/system", unit+".d")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			dirs = append(dirs, dir)
			s, err := edit(ctx, conns[m], m != "bus-command", unit, dir, r, busPID, drain)
			if err != nil {
				return fmt.Errorf("%s %s: %w", m, unit, err)
			}
			samples[m] = append(samples[m], s)
		}
	}
	for _, m := range modes {
		ss := samples[m]
		med := func(f func(sample) time.Duration) time.Duration {
			v := make([]time.Duration, len(ss))
			for i, s := range ss {
				v[i] = f(s)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		fmt.Printf("%-14s n=%d  reload p50 %6.1f ms  restart p50 %5.1f ms  both p50 %6.1f ms  PID 1 CPU p50 %4.0f ms  dbus-daemon CPU p50 %3.0f ms\n",
			m, len(ss), ms(med(func(s sample) time.Duration { return s.reload })), ms(med(func(s sample) time.Duration { return s.restart })),
			ms(med(func(s sample) time.Duration { return s.reload + s.restart })), ms(med(func(s sample) time.Duration { return s.pid1 })),
			ms(med(func(s sample) time.Duration { return s.bus })))
	}
	return nil
}

// edit is one round of a mode: the watch started (if any) and left to
// settle, the drop-in written, Reload and the restart job timed.
func edit(ctx context.Context, c *sdbus.Conn, watch bool, unit, dir string, round int, busPID string, drain func(<-chan *godbus.Signal) func()) (sample, error) {
	if watch {
		ch := make(chan *godbus.Signal, 4096)
		stop, err := c.WatchUnitSignals(ctx, ch)
		if err != nil {
			return sample{}, err
		}
		end := drain(ch)
		defer func() { stop(); end() }()
	}
	time.Sleep(300 * time.Millisecond)
	body := fmt.Sprintf("[Service]\nEnvironment=WATCHCOST=%d\n", round)
	if err := os.WriteFile(filepath.Join(dir, "zz-watchcost.conf"), []byte(body), 0o644); err != nil {
		return sample{}, err
	}
	p0, b0 := cpu("1"), cpu(busPID)
	t0 := time.Now()
	if err := c.ReloadContext(ctx); err != nil {
		return sample{}, err
	}
	t1 := time.Now()
	res, err := c.RunJobsContext(ctx, []sdbus.Job{{Method: "RestartUnit", Unit: unit, Mode: "replace"}}, 30*time.Second)
	if err != nil {
		return sample{}, err
	}
	t2 := time.Now()
	if res[0].Err != nil || res[0].Result != "done" {
		return sample{}, fmt.Errorf("restart: %q %v", res[0].Result, res[0].Err)
	}
	time.Sleep(50 * time.Millisecond) // let the signals' CPU land
	return sample{reload: t1.Sub(t0), restart: t2.Sub(t1), pid1: cpu("1") - p0, bus: cpu(busPID) - b0}, nil
}

// cpu is a process's utime+stime (clock ticks of 10 ms).
func cpu(pid string) time.Duration {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.Atoi(f[11])
	k, _ := strconv.Atoi(f[12])
	return time.Duration(u+k) * 10 * time.Millisecond
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
