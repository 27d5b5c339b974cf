package e2e

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Issue 10: a timer job's retry must be per run. Before, retry rendered
// Restart=on-failure with StartLimitBurst=attempts on the job, and systemd
// counted the timer's own activations against that limit: a job due every
// 2 s was refused (start-limit-hit) for most of its runs, with or without
// an outage.

// retryJob is a Timer due every 2 s whose job needs dep to exist; each
// attempt appends its start time to attempts, each success to ok. Four
// attempts 2 s apart cover 6 s, more than the 5 s outage.
func retryJob(dep, attempts, ok string) string {
	return timer("dump", fmt.Sprintf(`  schedule: ["*:*:0/2"]
  accuracy: 1ms
  command: ["/bin/sh", "-c", "date +%%s.%%N >> %s; test -f %s && date +%%s.%%N >> %s"]
  retry: {attempts: 4, delay: 2s}
`, attempts, dep, ok))
}

const outage = 5 * time.Second

// outageWindow: the slots (even seconds) the test checks after the outage,
// from the first slot that can start a fresh run (the run retrying through
// the outage has its next attempt at most 2 s after it ended) for 14 s.
func afterOutage(end time.Time) (from, to time.Time) {
	from = end.Truncate(2 * time.Second).Add(4 * time.Second)
	return from, from.Add(14 * time.Second)
}

// stamps parses "unix.nanos" lines.
func stamps(t *testing.T, lines []string) []time.Time {
	t.Helper()
	var out []time.Time
	for _, l := range lines {
		f, err := strconv.ParseFloat(strings.TrimSpace(l), 64)
		if err != nil {
			t.Fatalf("stamp %q: %v", l, err)
		}
		sec, frac := math.Modf(f)
		out = append(out, time.Unix(int64(sec), int64(frac*1e9)))
	}
	return out
}

// checkCadence: every scheduled slot in [from, to) has a successful run
// that started in it (before the next slot), and attempts were retried
// during the outage. It returns the cadence line for the log.
func checkCadence(t *testing.T, ok, attempts []time.Time, start, end time.Time) string {
	t.Helper()
	from, to := afterOutage(end)
	var missing []string
	slots, runs := 0, 0
	for s := from; s.Before(to); s = s.Add(2 * time.Second) {
		slots++
		found := false
		for _, o := range ok {
			if !o.Before(s) && o.Before(s.Add(2*time.Second)) {
				found = true
				runs++
				break
			}
		}
		if !found {
			missing = append(missing, s.Format("15:04:05"))
		}
	}
	retried := 0
	for _, a := range attempts {
		if a.After(start) && a.Before(end) {
			retried++
		}
	}
	var rode bool // a run succeeded after the outage, before the first checked slot
	for _, o := range ok {
		if o.After(end) && o.Before(from) {
			rode = true
		}
	}
	line := fmt.Sprintf("outage %s: %d attempts during it; after it %d of %d scheduled runs succeeded (%s..%s)",
		end.Sub(start).Round(100*time.Millisecond), retried, runs, slots, from.Format("15:04:05"), to.Format("15:04:05"))
	if len(missing) > 0 {
		t.Errorf("%s; no successful run for the slots %v", line, missing)
	}
	if retried < 2 {
		t.Errorf("%s; want the job to retry during the outage", line)
	}
	if !rode {
		t.Errorf("%s; the run during the outage did not ride through it (no success before %s)", line, from.Format("15:04:05"))
	}
	return line
}

// On systemd: the job is due every 2 s with retry; its dependency (a file)
// is gone for 5 s. The run that meets the outage retries through it and
// succeeds, and every scheduled run after it runs and succeeds: no
// start-limit-hit, no restarts, the job's start limit out of the way.
func TestTimerRetryRidesThroughOutage(t *testing.T) {
	e := newEnv(t)
	if _, err := e.sb.Run(e.ctx, "touch", "/run/dep"); err != nil {
		t.Fatal(err)
	}
	e.write("dump.yaml", retryJob("/run/dep", "/run/attempts", "/run/ok"))
	e.apply(0)
	p := e.show("dump.service", "Restart", "StartLimitIntervalUSec", "StartLimitBurst")
	if p["Restart"] != "no" || p["StartLimitIntervalUSec"] != "0" {
		t.Errorf("job unit: %v, want Restart=no and no start limit", p)
	}
	e.eventually("two runs before the outage", 20*time.Second, func() bool { return len(e.lines("/run/ok")) >= 2 })
	start := time.Now()
	if err := e.sb.Remove("/run/dep"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(outage)
	if _, err := e.sb.Run(e.ctx, "touch", "/run/dep"); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	_, to := afterOutage(end)
	time.Sleep(time.Until(to.Add(time.Second)))
	line := checkCadence(t, stamps(t, e.lines("/run/ok")), stamps(t, e.lines("/run/attempts")), start, end)
	t.Log(line)
	p = e.show("dump.service", "NRestarts", "Result")
	if p["NRestarts"] != "0" || p["Result"] == "start-limit-hit" {
		t.Errorf("job after the outage: %v", p)
	}
	if j, _ := e.sb.Journal(e.ctx, "-u", "dump.service"); strings.Contains(j, "repeated too quickly") {
		t.Errorf("the job hit its start limit:\n%s", j)
	}
}

// The same on the process backend (the agent on this host).
func TestProcessTimerRetryRidesThroughOutage(t *testing.T) {
	dir, m, state := procDirs(t)
	dep, attempts, ok := filepath.Join(dir, "dep"), filepath.Join(dir, "attempts"), filepath.Join(dir, "ok")
	if err := os.WriteFile(dep, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m, "dump.yaml"), []byte(retryJob(dep, attempts, ok)), 0o644); err != nil {
		t.Fatal(err)
	}
	read := func(p string) []string {
		data, _ := os.ReadFile(p)
		return strings.Fields(string(data))
	}
	a := startProcAgent(t, m, state)
	waitFor(t, "two runs before the outage", 30*time.Second, func() bool { return len(read(ok)) >= 2 })
	start := time.Now()
	if err := os.Remove(dep); err != nil {
		t.Fatal(err)
	}
	time.Sleep(outage)
	if err := os.WriteFile(dep, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	_, to := afterOutage(end)
	time.Sleep(time.Until(to.Add(time.Second)))
	t.Log(checkCadence(t, stamps(t, read(ok)), stamps(t, read(attempts)), start, end))
	out := a.out.String()
	if !strings.Contains(out, "job attempt failed, retrying") {
		t.Errorf("no retry logged")
	}
	if strings.Contains(out, "start-limit-hit") || strings.Contains(out, "TimerFailed") {
		t.Errorf("a run failed or hit a start limit")
	}
}
