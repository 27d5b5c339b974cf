package reconcile

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// batchLog is a BatchRecorder that keeps what it was given, batch by batch.
type batchLog struct {
	mu      sync.Mutex
	batches [][]Event
	block   chan struct{} // if set, each RecordBatch waits for it
}

func (b *batchLog) Record(e Event) { b.RecordBatch([]Event{e}) }

func (b *batchLog) RecordBatch(evs []Event) {
	if b.block != nil {
		<-b.block
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batches = append(b.batches, append([]Event(nil), evs...))
}

func (b *batchLog) messages() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, batch := range b.batches {
		for _, e := range batch {
			out = append(out, e.Message)
		}
	}
	return out
}

// TestQueue: events reach the store in order; Flush returns once every
// event recorded before it is stored, even while the writer holds a
// batch; after Run returns, Record stores at once.
func TestQueue(t *testing.T) {
	dst := &batchLog{block: make(chan struct{})}
	q := NewQueue(dst)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- q.Run(ctx) }()
	q.Record(Event{Message: "1"})
	q.RecordBatch([]Event{{Message: "2"}, {Message: "3"}})
	flushed := make(chan struct{})
	go func() {
		q.Record(Event{Message: "4"})
		q.Flush()
		close(flushed)
	}()
	select {
	case <-flushed:
		t.Fatal("Flush returned while the store held back every write")
	case <-time.After(50 * time.Millisecond):
	}
	close(dst.block) // the store answers from now on
	<-flushed
	if got, want := fmt.Sprint(dst.messages()), "[1 2 3 4]"; got != want {
		t.Errorf("stored %s after Flush, want %s", got, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	q.Record(Event{Message: "5"})
	if got, want := fmt.Sprint(dst.messages()), "[1 2 3 4 5]"; got != want {
		t.Errorf("stored %s after Run returned, want %s", got, want)
	}
}
