package process

// The process table, <stateDir>/processes.json: one row per unit's main
// process, written as an intent before the fork and with its PID after.

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// processTable is the JSON form of <stateDir>/processes.json. BootID is
// the boot the writing agent ran in; ShuttingDown says it was stopping
// every service (Options.StopOnExit). Tables written before they existed
// have neither: read as another boot.
type processTable struct {
	BootID       string `json:"bootID,omitempty"`
	ShuttingDown bool   `json:"shuttingDown,omitempty"`
	// BootStart is when the boot's first agent started, µs since the
	// epoch (Supervisor.boot).
	BootStart int64 `json:"bootStart,omitempty"`
	// Idle are the services stopped on request or failed when it was
	// written (Supervisor.idle).
	Idle      map[string]idleEntry `json:"idle,omitempty"`
	Processes []procRecord         `json:"processes"`
}

// idleEntry is why a service is not running: State "stopped" (a stop
// request) or "failed" (with its Result), and Hash, the fileHash of the
// unit file it was loaded from then.
type idleEntry struct {
	State  string `json:"state"`
	Result string `json:"result,omitempty"`
	Hash   string `json:"hash,omitempty"`
	// The last run of an exited or failed service, times in µs since the
	// epoch: what observe reports for it after an agent restart
	// (observed.Unit.ExitedOnItsOwn; a failure's exit status and time,
	// which name the failed run in its event).
	Started    int64 `json:"started,omitempty"`
	Exited     int64 `json:"exited,omitempty"`
	ActiveExit int64 `json:"activeExit,omitempty"`
	Status     int32 `json:"status,omitempty"`
}

const (
	idleStopped = "stopped"
	idleFailed  = "failed"
	// idleExited: the process exited by itself with status 0 and the
	// restart policy does not restart it (done, not drift).
	idleExited = "exited"
)

// status is the status of a service an exited or failed record describes.
func (e idleEntry) status() status {
	st := status{ActiveState: "inactive", SubState: "dead", Result: ResultSuccess, ExecMainStart: usecTime(e.Started),
		ExecMainExit: usecTime(e.Exited), ActiveExit: usecTime(e.ActiveExit), ExecMainStatus: e.Status, RunHash: e.Hash}
	if e.State == idleFailed {
		st.ActiveState, st.SubState, st.Result = "failed", "failed", e.Result
	}
	return st
}

// lastRun is an idle record of state and result holding st's last run.
func lastRun(state, result, hash string, st status) idleEntry {
	return idleEntry{State: state, Result: result, Hash: hash, Started: int64(usec(st.ExecMainStart)), Exited: int64(usec(st.ExecMainExit)),
		ActiveExit: int64(usec(st.ActiveExit)), Status: st.ExecMainStatus}
}

func usecTime(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us)
}

// bootIDPath is where the kernel gives this boot's ID.
var bootIDPath = "/proc/sys/kernel/random/boot_id"

// readBootID returns this boot's ID, "" when it cannot be read (then
// every agent start counts as a boot).
func readBootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (s *Supervisor) tablePath() string { return filepath.Join(s.dir, "processes.json") }

// loadTable reads the table an earlier agent wrote. An agent of this boot
// that was not stopping every service gives its boot (Supervisor.boot);
// otherwise this agent starts one (no table, another boot ID, or one
// written while stopping every service).
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
	s.restartedAgent = s.bootID != "" && t.BootID == s.bootID && !t.ShuttingDown
	if !s.restartedAgent {
		return
	}
	for n, e := range t.Idle {
		s.idle[n] = e
	}
	switch boot := usecTime(t.BootStart); {
	case t.BootStart == 0:
		// A table of an older agent of this boot: the boot began no later
		// than the kernel's (a timer that fired since then does not fire
		// its onBoot again on the upgrade).
		if k, ok := kernelBoot(); ok && k.Before(s.started) {
			s.boot = k
		}
	case !boot.After(s.started): // else a clock that went back: count from now
		s.boot = boot
	}
}

// statPath is where the kernel gives its boot time (btime).
var statPath = "/proc/stat"

// kernelBoot is when the kernel booted, to the second.
func kernelBoot() (time.Time, bool) {
	b, err := os.ReadFile(statPath)
	if err != nil {
		return time.Time{}, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			if sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && sec > 0 {
				return time.Unix(sec, 0), true
			}
		}
	}
	return time.Time{}, false
}

// idleAtLoad returns the idle record of a service when it holds for the
// unit file now loaded (hash), or is an exited run of another file (a
// manifest change whose start a crash cut off: its status reads as a
// stale run, observed.Unit.StaleRun, which the planner starts). A failed
// record of another file is not: the service reads as never run.
func (s *Supervisor) idleAtLoad(name, hash string) (idleEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.idle[name]
	return e, ok && (e.Hash == hash || e.State == idleExited)
}

// noteIdle records e for a service (e.State "": forget its record) and
// writes the table when that changed it. A stop request does not replace
// a failed record (a stopped failed unit stays failed), and none is
// recorded while stopAll runs (the next agent starts everything).
func (s *Supervisor) noteIdle(name string, e idleEntry) {
	s.mu.Lock()
	old, had := s.idle[name]
	switch {
	case e.State == "" && !had, e.State != "" && had && old == e,
		e.State == idleStopped && (s.shuttingDown || had && old.State == idleFailed):
		s.mu.Unlock()
		return
	case e.State == "":
		delete(s.idle, name)
	default:
		s.idle[name] = e
	}
	s.mu.Unlock()
	s.saveTable()
}

// forgetIdle drops a service's idle record: it starts, or was adopted
// running.
func (s *Supervisor) forgetIdle(name string) { s.noteIdle(name, idleEntry{}) }

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
	s.ownIntents.Add(1)
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

// dropRow removes a unit's row, if any, and writes the table: the row of
// a process that exited, kept for its automatic restart, once that
// restart is no longer owed (a stop, the unit file gone).
func (s *Supervisor) dropRow(name string) {
	s.mu.Lock()
	_, ok := s.table[name]
	delete(s.table, name)
	s.mu.Unlock()
	if ok {
		s.saveTable()
	}
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
// its PID after, does not write the whole table twice per unit. Each row's
// JSON is kept (rowCache) and encoded again only when the row changed: a
// cold start rewrote the whole indented table about 130 times, and
// encoding it was a tenth of the agent's CPU.
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
	rows := make([]procRecord, 0, len(s.table))
	for _, r := range s.table {
		rows = append(rows, r)
	}
	head := processTable{BootID: s.bootID, ShuttingDown: s.shuttingDown}
	if !s.boot.IsZero() {
		head.BootStart = s.boot.UnixMicro()
	}
	if len(s.idle) > 0 {
		head.Idle = make(map[string]idleEntry, len(s.idle))
		for n, e := range s.idle {
			head.Idle[n] = e
		}
	}
	s.mu.Unlock()
	sort.Slice(rows, func(i, j int) bool { return rows[i].Unit < rows[j].Unit })
	err := s.writeFile(s.tablePath(), s.rows.encode(head, rows), 0o600)
	s.mu.Lock()
	s.tableDirty = err != nil
	s.mu.Unlock()
	if err != nil {
		s.log.Error("write process table failed", zap.Error(err))
		return
	}
	s.savedGen = gen
	s.tableWrites.Add(1)
}

// rowCache keeps each table row's JSON with the row it encodes; only
// saveTable uses it, under tableMu.
type rowCache map[string]cachedRow

type cachedRow struct {
	rec procRecord
	b   []byte
}

// encode returns the table file for rows (sorted by unit) with head's
// boot fields: one row per line, {"bootID":...,"processes":[...]}, as
// json.Marshal of processTable would (compact, so readers see the same
// JSON), from the cached rows that did not change. Rows no longer in the
// table leave the cache.
func (c *rowCache) encode(head processTable, rows []procRecord) []byte {
	if *c == nil {
		*c = rowCache{}
	}
	size := 32
	seen := make(map[string]bool, len(rows))
	enc := make([][]byte, len(rows))
	for i, r := range rows {
		seen[r.Unit] = true
		if cr, ok := (*c)[r.Unit]; ok && sameRow(cr.rec, r) {
			enc[i] = cr.b
		} else {
			b, err := json.Marshal(r)
			if err != nil { // a procRecord always encodes; keep the row rather than drop it
				b = []byte("{}")
			}
			(*c)[r.Unit] = cachedRow{rec: copyRow(r), b: b}
			enc[i] = b
		}
		size += len(enc[i]) + 2
	}
	for n := range *c {
		if !seen[n] {
			delete(*c, n)
		}
	}
	head.Processes = nil
	hb, err := json.Marshal(head) // {"bootID":"…","processes":null}
	if err != nil {
		hb = []byte(`{"processes":null}`)
	}
	hb = bytes.TrimSuffix(hb, []byte(`"processes":null}`))
	out := make([]byte, 0, size+len(hb))
	out = append(out, hb...)
	out = append(out, `"processes":[`...)
	for i, b := range enc {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, '\n')
		out = append(out, b...)
	}
	return append(out, "\n]}\n"...)
}

// sameRow compares two rows by value, their reservations included.
func sameRow(a, b procRecord) bool {
	an, bn := a.Next, b.Next
	a.Next, b.Next = nil, nil
	if a != b || (an == nil) != (bn == nil) {
		return false
	}
	return an == nil || sameRow(*an, *bn)
}

// copyRow returns r with its own copy of the reservation, so a later
// change through a shared Next pointer is seen as a change.
func copyRow(r procRecord) procRecord {
	if r.Next != nil {
		nx := copyRow(*r.Next)
		r.Next = &nx
	}
	return r
}
