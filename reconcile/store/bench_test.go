package store

import (
	"context"
	"strconv"
	"testing"
	"time"

	"resil.dev/resil/reconcile"
)

// BenchmarkAdd is the agent's write path: one committed event per call
// (distinct messages, so every call inserts a row).
func BenchmarkAdd(b *testing.B) {
	s := openTest(b, Options{})
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Add(ctx, reconcile.Event{Type: reconcile.Warning, Reason: reconcile.ReasonFailed, Object: "Service/s" + strconv.Itoa(i%50), Message: "failed: " + strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAddRepeat is a repeat of the same event (the upsert path).
func BenchmarkAddRepeat(b *testing.B) {
	s := openTest(b, Options{})
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Add(ctx, reconcile.Event{Type: reconcile.Warning, Reason: reconcile.ReasonStopped, Object: "Service/web", Message: "web.service is inactive"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkEventsSince24h is `reconciler events --since 24h` against a full
// store: 100k rows spread over the 14-day retention (about 7k in the window).
func BenchmarkEventsSince24h(b *testing.B) {
	now := time.Now()
	s := openTest(b, Options{Now: func() time.Time { return now }})
	ctx := context.Background()
	const rows = 100_000
	span := DefaultRetention
	batch := make([]reconcile.Event, 0, 5000)
	for i := range rows {
		t := now.Add(-span + time.Duration(i)*(span/rows))
		typ := reconcile.Normal
		if i%3 == 0 {
			typ = reconcile.Warning
		}
		batch = append(batch, reconcile.Event{Time: t, Type: typ, Reason: reconcile.ReasonApplied, Object: "Service/s" + strconv.Itoa(i%200), Unit: "s.service", Message: "write /etc/systemd/system/s.service: " + strconv.Itoa(i)})
		if len(batch) == cap(batch) {
			if err := s.AddBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.ResetTimer()
	var n int
	for i := 0; i < b.N; i++ {
		evs, err := s.Events(ctx, Query{Since: now.Add(-24 * time.Hour)})
		if err != nil {
			b.Fatal(err)
		}
		n = len(evs)
	}
	b.ReportMetric(float64(n), "rows/op")
}
