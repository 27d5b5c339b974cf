package store

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// PutStatus writes only what changed, yet the snapshot reads back exactly
// what was put, with FirstSeen kept: unchanged rows with a new Updated
// time, a changed row, a new row, a row gone, and a snapshot whose rows
// have different Updated times.
func TestPutStatusWritesChangedRows(t *testing.T) {
	c := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := openTest(t, Options{Now: c.Now})
	ctx := context.Background()
	t0 := c.Now()
	row := func(name, observed string, at time.Time) ObjectStatus {
		return ObjectStatus{Object: "Service/" + name, Kind: "Service", Name: name, Unit: name + ".service", Desired: "running",
			Observed: observed, State: "Converged", Ready: "yes", Updated: at}
	}
	put := func(objs ...ObjectStatus) {
		t.Helper()
		if err := s.PutStatus(ctx, objs, Agent{LastPass: c.Now(), PID: 1, Backend: "systemd"}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(want ...ObjectStatus) {
		t.Helper()
		got, _, err := s.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("snapshot:\n got %+v\nwant %+v", got, want)
		}
	}
	first := func(o ObjectStatus, at time.Time) ObjectStatus { o.FirstSeen = at; return o }

	put(row("a", "active (running)", t0), row("b", "active (running)", t0), row("c", "active (running)", t0))
	check(first(row("a", "active (running)", t0), t0), first(row("b", "active (running)", t0), t0), first(row("c", "active (running)", t0), t0))

	c.Add(time.Minute)
	t1 := c.Now()
	put(row("a", "active (running)", t1), row("b", "failed (exit-code)", t1), row("d", "active (running)", t1))
	check(first(row("a", "active (running)", t1), t0), first(row("b", "failed (exit-code)", t1), t0), first(row("d", "active (running)", t1), t1))

	t2, t3 := t1.Add(time.Minute), t1.Add(2*time.Minute)
	c.Add(2 * time.Minute)
	put(row("a", "active (running)", t2), row("b", "failed (exit-code)", t3), row("d", "active (running)", t1))
	check(first(row("a", "active (running)", t2), t0), first(row("b", "failed (exit-code)", t3), t0), first(row("d", "active (running)", t1), t1))

	// Converged passes: every row has the pass's time; the second writes
	// no row (the status hash matches), yet reads back with its time.
	for range 2 {
		c.Add(time.Minute)
		tn := c.Now()
		put(row("a", "active (running)", tn), row("b", "failed (exit-code)", tn), row("d", "active (running)", tn))
		check(first(row("a", "active (running)", tn), t0), first(row("b", "failed (exit-code)", tn), t0), first(row("d", "active (running)", tn), t1))
	}
	var explicit int
	if err := s.DB().QueryRow(`SELECT count(*) FROM objects WHERE updated <> ''`).Scan(&explicit); err != nil || explicit != 0 {
		t.Errorf("rows of converged passes with their own time: %d, %v; want 0 (they stand for last_pass)", explicit, err)
	}
	// A row that changes after a matching hash is written.
	c.Add(time.Minute)
	t5 := c.Now()
	put(row("a", "active (running)", t5), row("b", "active (running)", t5), row("d", "active (running)", t5))
	check(first(row("a", "active (running)", t5), t0), first(row("b", "active (running)", t5), t0), first(row("d", "active (running)", t5), t1))
}

// BenchmarkPutStatus1000 is the status snapshot of a converged pass at
// 1000 objects: every row as before but its Updated time.
func BenchmarkPutStatus1000(b *testing.B) {
	s := openTest(b, Options{})
	ctx := context.Background()
	objs := make([]ObjectStatus, 1000)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for b.Loop() {
		at = at.Add(time.Second)
		for i := range objs {
			n := fmt.Sprintf("b%04d", i)
			objs[i] = ObjectStatus{Object: "Service/" + n, Kind: "Service", Name: n, Unit: n + ".service", Desired: "running",
				Observed: "active (running)", State: "Converged", Updated: at}
		}
		if err := s.PutStatus(ctx, objs, Agent{LastPass: at, PID: 1, Backend: "systemd"}); err != nil {
			b.Fatal(err)
		}
	}
}
