package main

import (
	"bytes"
	"flag"
	"os"
	"testing"
	"time"

	"resil.dev/resil/reconcile"
)

var updateRollout = flag.Bool("update-rollout", false, "rewrite testdata/rollout-*.golden")

// The human views of a rollout, against testdata/rollout-*.golden (go test
// -run TestRolloutGolden -update-rollout rewrites them): rollout status for
// no record, one in progress behind a jitter gate, a halted one, one
// halted in its last wave (nothing pending) and a complete one, and diff's waves.
func TestRolloutGolden(t *testing.T) {
	now := time.Date(2026, 12, 1, 7, 0, 0, 0, time.UTC)
	gate := now.Add(4 * time.Second)
	ended := now.Add(-time.Minute)
	inProgress := reconcile.RolloutRecord{Active: true, Started: now.Add(-30 * time.Second), Updated: now.Add(-time.Second), WaveCount: 2,
		Restarted: []string{"a.service", "b.service", "c.service"},
		Last:      &reconcile.RolloutReport{MaxParallel: 2, HoldUntil: &gate, Waves: [][]string{{"d.service", "e.service"}, {"f.service"}}}}
	halted := reconcile.RolloutRecord{Active: true, Started: now.Add(-10 * time.Second), Updated: now.Add(-2 * time.Second), WaveCount: 1,
		Restarted: []string{"a.service", "b.service"},
		Last: &reconcile.RolloutReport{MaxParallel: 2, Halted: true, NotReady: []string{"b.service"},
			Failed: []reconcile.RolloutFailure{{Unit: "a.service", Object: "Service/a", Why: "failed", Hash: "sha256:1"}, {Unit: "b.service", Object: "Service/b", Why: "not ready within 5m0s"}},
			Waves:  [][]string{{"c.service", "d.service"}}}}
	haltedLast := reconcile.RolloutRecord{Active: true, Started: now.Add(-10 * time.Second), Updated: now.Add(-2 * time.Second), WaveCount: 1,
		Restarted: []string{"a.service"},
		Last: &reconcile.RolloutReport{MaxParallel: 2, Halted: true,
			Failed: []reconcile.RolloutFailure{{Unit: "a.service", Object: "Service/a", Why: "failed", Hash: "sha256:1"}}}}
	complete := reconcile.RolloutRecord{Started: ended.Add(-42 * time.Second), Ended: &ended, Updated: ended, WaveCount: 3,
		Restarted: []string{"a.service", "b.service", "c.service", "d.service", "e.service"}}
	var buf bytes.Buffer
	printRollout(&buf, reconcile.RolloutRecord{}, false, now)
	for _, rec := range []reconcile.RolloutRecord{inProgress, halted, haltedLast, complete} {
		buf.WriteString("---\n")
		printRollout(&buf, rec, true, now)
	}
	buf.WriteString("--- diff\n")
	printRolloutPlan(&buf, &reconcile.RolloutReport{MaxParallel: 2, Admitted: []string{"a.service", "b.service"}, Waves: [][]string{{"c.service", "d.service"}, {"e.service"}}}, now)
	printRolloutPlan(&buf, halted.Last, now)
	printRolloutPlan(&buf, inProgress.Last, now)
	const name = "testdata/rollout.golden"
	if *updateRollout {
		if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("rollout views differ from %s (-update-rollout):\n%s", name, buf.String())
	}
}
