package process

import (
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
