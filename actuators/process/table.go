package process

// The process table, <stateDir>/processes.json: one row per unit's main
// process, written as an intent before the fork and with its PID after.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"

	"go.uber.org/zap"
)

// processTable is the JSON form of <stateDir>/processes.json.
type processTable struct {
	Processes []procRecord `json:"processes"`
}

func (s *Supervisor) tablePath() string { return filepath.Join(s.dir, "processes.json") }

func (s *Supervisor) loadTable() {
	b, err := os.ReadFile(s.tablePath())
	if err != nil {
		return
	}
	var t processTable
	if err := json.Unmarshal(b, &t); err != nil {
		s.log.Error("process table unreadable", zap.Error(err))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range t.Processes {
		s.table[r.Unit] = r
	}
}

// tableCopy returns the process table as loaded, before adoption and
// cleanup change it.
func (s *Supervisor) tableCopy() map[string]procRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]procRecord, len(s.table))
	for n, r := range s.table {
		out[n] = r
	}
	return out
}

// recordIntent writes a unit's row before its fork (rec.PID 0); recordProc
// replaces it with the started process, or clears it when the fork failed.
func (s *Supervisor) recordIntent(name string, rec procRecord) {
	s.mu.Lock()
	s.table[name] = rec
	s.mu.Unlock()
	s.saveTable()
}

// recordProc sets (rec != nil) or clears a unit's row and writes the table.
func (s *Supervisor) recordProc(name string, rec *procRecord) {
	s.mu.Lock()
	if rec != nil {
		s.table[name] = *rec
		for i, n := range s.order {
			if n == name {
				s.order = append(s.order[:i], s.order[i+1:]...)
				break
			}
		}
		s.order = append(s.order, name)
	} else {
		delete(s.table, name)
	}
	s.mu.Unlock()
	s.saveTable()
}

// recordStopping marks a unit's row (the process pid) as being stopped on
// request, and why (stopStop, stopRestart).
func (s *Supervisor) recordStopping(name string, pid int, why string) {
	s.updateRecord(name, pid, func(rec *procRecord) { rec.Stopping, rec.StopReason = true, why })
}

// updateRecord changes the row of name in place, if it still names pid, and
// saves the table; the unit keeps its place in the start order.
func (s *Supervisor) updateRecord(name string, pid int, f func(*procRecord)) {
	s.mu.Lock()
	rec, ok := s.table[name]
	if ok && rec.PID == pid {
		f(&rec)
		s.table[name] = rec
	}
	s.mu.Unlock()
	if ok {
		s.saveTable()
	}
}

// saveTable writes the table (replaceFile: temp file, fsync, rename). It returns
// once a write that holds every change made before the call is done, so an
// intent row is in the file before its fork. Calls that arrive while a
// write is under way wait for it and then share one write (group commit):
// a cold start of 100 units, each writing its intent before its fork and
// its PID after, does not write the whole table twice per unit.
func (s *Supervisor) saveTable() {
	s.mu.Lock()
	s.tableGen++ // this call's request: a snapshot taken from now on holds its changes
	want := s.tableGen
	s.mu.Unlock()
	s.tableMu.Lock()
	defer s.tableMu.Unlock()
	if s.savedGen >= want {
		return // a write that began after the call holds its changes
	}
	s.mu.Lock()
	gen := s.tableGen
	t := processTable{Processes: make([]procRecord, 0, len(s.table))}
	for _, r := range s.table {
		t.Processes = append(t.Processes, r)
	}
	s.mu.Unlock()
	sort.Slice(t.Processes, func(i, j int) bool { return t.Processes[i].Unit < t.Processes[j].Unit })
	b, _ := json.MarshalIndent(t, "", "  ")
	err := replaceFile(s.tablePath(), append(b, '\n'), 0o600)
	s.mu.Lock()
	s.tableDirty = err != nil
	s.mu.Unlock()
	if err != nil {
		s.log.Error("write process table failed", zap.Error(err))
		return
	}
	s.savedGen = gen
}
