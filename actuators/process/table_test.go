package process

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
)

// Every recordIntent returns only once the table file holds its row,
// however many run at once and share writes (group commit), and the last
// write holds them all; a removal is written too.
func TestSaveTableGroupCommit(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("u%02d.service", i)
			s.recordIntent(name, procRecord{Unit: name})
			s2, _ := New(dir, nil, Options{})
			s2.loadTable()
			if _, ok := s2.tableCopy()[name]; !ok {
				errs <- fmt.Errorf("%s: recordIntent returned before its row was written", name)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s.recordProc("u00.service", nil)
	s2, _ := New(dir, nil, Options{})
	s2.loadTable()
	if got := len(s2.tableCopy()); got != 63 {
		t.Errorf("table holds %d rows, want 63", got)
	}
	if _, ok := s2.tableCopy()["u00.service"]; ok {
		t.Error("the removed row is still written")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("state dir holds %d entries, want the table only (no temporary file left)", len(ents))
	}
}

// The table file is the JSON of processTable whatever the cache holds: a
// row is encoded again when any field changed, its reservation's too
// (also when changed in place through a shared Next), and a removed
// unit's row goes.
func TestRowCacheEncode(t *testing.T) {
	nx := &procRecord{Unit: "a.service", Nonce: "n1", NRestarts: 1}
	a := procRecord{Unit: "a.service", PID: 10, PGID: 10, Nonce: "n0", Next: nx}
	b := procRecord{Unit: "b.service", Stdout: "/run/b \"q\".out"}
	var c rowCache
	steps := []struct {
		name   string
		change func()
		rows   func() []procRecord
	}{
		{"first", func() {}, func() []procRecord { return []procRecord{a, b} }},
		{"unchanged", func() {}, func() []procRecord { return []procRecord{a, b} }},
		{"field", func() { a.Stopping, a.StopReason = true, stopRestart }, func() []procRecord { return []procRecord{a, b} }},
		{"next in place", func() { nx.NRestarts = 2 }, func() []procRecord { return []procRecord{a, b} }},
		{"next gone", func() { a.Next = nil }, func() []procRecord { return []procRecord{a, b} }},
		{"row gone", func() {}, func() []procRecord { return []procRecord{b} }},
		{"none", func() {}, func() []procRecord { return nil }},
	}
	for i, st := range steps {
		st.change()
		rows := st.rows()
		head := processTable{BootID: "b-1", ShuttingDown: i == 2}
		if i == 3 {
			head = processTable{}
		}
		var got processTable
		if err := json.Unmarshal(c.encode(head, rows), &got); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		want := head
		want.Processes = rows
		wb, _ := json.Marshal(want)
		gb, _ := json.Marshal(got)
		if len(rows) == 0 {
			want.Processes = []procRecord{}
			wb, _ = json.Marshal(want)
		}
		if string(gb) != string(wb) {
			t.Errorf("%s:\n got %s\nwant %s", st.name, gb, wb)
		}
		if len(c) != len(rows) {
			t.Errorf("%s: cache holds %d rows, want %d", st.name, len(c), len(rows))
		}
	}
}
