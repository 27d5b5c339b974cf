package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Restart is one restart of a managed service in the ledger.
type Restart struct {
	Time   time.Time `json:"time"`
	Object string    `json:"object"`
	Unit   string    `json:"unit"`
	Cause  string    `json:"cause"`
}

// AddRestarts appends restarts to the ledger in one transaction.
func (s *Store) AddRestarts(ctx context.Context, rs []Restart) error {
	if len(rs) == 0 {
		return nil
	}
	tx, end, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer end()
	for _, r := range rs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO restarts(time, object, unit, cause) VALUES (?, ?, ?, ?)`,
			ts(r.Time), r.Object, r.Unit, r.Cause); err != nil {
			return fmt.Errorf("store restart of %s: %w", r.Object, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store restarts: %w", err)
	}
	return nil
}

// RestartCounts returns the number of restarts per object since t.
func (s *Store) RestartCounts(ctx context.Context, since time.Time) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT object, count(*) FROM restarts WHERE time >= ? GROUP BY object`, ts(since))
	if err != nil {
		return nil, fmt.Errorf("count restarts: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var o string
		var n int
		if err := rows.Scan(&o, &n); err != nil {
			return nil, fmt.Errorf("scan restarts: %w", err)
		}
		out[o] = n
	}
	return out, rows.Err()
}

// RestartCount returns the number of restarts of object since t.
func (s *Store) RestartCount(ctx context.Context, object string, since time.Time) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM restarts WHERE object = ? AND time >= ?`, object, ts(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count restarts of %s: %w", object, err)
	}
	return n, nil
}

// StormRestarts returns the number of restarts of object since t that a
// restart storm counts: every cause but the agent's own restart steps
// (applying manifest changes is a deploy, not a storm).
func (s *Store) StormRestarts(ctx context.Context, object string, since time.Time) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM restarts WHERE object = ? AND time >= ? AND cause != 'agent'`, object, ts(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count restarts of %s: %w", object, err)
	}
	return n, nil
}

// Restarts returns the ledger rows of object (all objects when "") since t, oldest first.
func (s *Store) Restarts(ctx context.Context, object string, since time.Time) ([]Restart, error) {
	q := `SELECT time, object, unit, cause FROM restarts WHERE time >= ?`
	args := []any{ts(since)}
	if object != "" {
		q += ` AND object = ?`
		args = append(args, object)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY time, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("query restarts: %w", err)
	}
	defer rows.Close()
	var out []Restart
	for rows.Next() {
		var r Restart
		var t string
		if err := rows.Scan(&t, &r.Object, &r.Unit, &r.Cause); err != nil {
			return nil, fmt.Errorf("scan restart: %w", err)
		}
		r.Time = parseTS(t)
		out = append(out, r)
	}
	return out, rows.Err()
}

// AlertFired returns when the storm alert of object last fired (zero: never).
func (s *Store) AlertFired(ctx context.Context, object string) (time.Time, error) {
	var t string
	err := s.db.QueryRowContext(ctx, `SELECT last_fired FROM alerts WHERE object = ?`, object).Scan(&t)
	if err != nil {
		if isNoRows(err) {
			return time.Time{}, nil
		}
		return time.Time{}, fmt.Errorf("read alert of %s: %w", object, err)
	}
	return parseTS(t), nil
}

// SetAlertFired records that the storm alert of object fired at t.
func (s *Store) SetAlertFired(ctx context.Context, object string, t time.Time) error {
	_, err := s.exec(ctx, `INSERT INTO alerts(object, last_fired) VALUES (?, ?) ON CONFLICT(object) DO UPDATE SET last_fired = excluded.last_fired`, object, ts(t))
	if err != nil {
		return fmt.Errorf("store alert of %s: %w", object, err)
	}
	return nil
}

// ObjectStatus is one row of the status snapshot the agent writes after
// each pass, so `status` needs no backend connection.
type ObjectStatus struct {
	Object string `json:"object"`
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Unit   string `json:"unit,omitempty"`
	// Desired and Observed are short words for the table ("running",
	// "active (running)", "failed (exit-code)").
	Desired  string `json:"desired"`
	Observed string `json:"observed"`
	// State is Converged, Converging, Drifted, Failed or Invalid.
	State   string `json:"state"`
	Drift   bool   `json:"drift"`
	Failed  bool   `json:"failed"`
	Message string `json:"message,omitempty"`
	// Ready is the readiness of a service: yes, no, unknown (its
	// readiness probe has no verdict yet); "" for other kinds.
	Ready string `json:"ready,omitempty"`
	// FirstSeen is when the agent first saw the object (AGE).
	FirstSeen time.Time `json:"firstSeen"`
	Updated   time.Time `json:"updated"`
}

// Agent is what the agent says about its last pass.
type Agent struct {
	LastPass  time.Time `json:"lastPass"`
	PassError string    `json:"passError,omitempty"`
	LoadError string    `json:"loadError,omitempty"`
	// Busy are the manifest files open for writing in the last pass,
	// one per line: not read yet (reconcile.Result.Busy).
	Busy string `json:"busy,omitempty"`
	PID  int    `json:"pid"`
	// PIDStart is the agent process's start time (/proc/PID/stat field
	// 22, clock ticks after boot; 0: unknown): with PID it names the
	// process across PID reuse.
	PIDStart uint64 `json:"pidStart,omitempty"`
	Backend  string `json:"backend"`
	Version  string `json:"version"`
	// Command is what wrote the snapshot: "run" (the agent, which keeps
	// watching) or "apply" (one pass); "" from agents before 2026-12-04.
	Command string `json:"command,omitempty"`
	// MaxLease is the agent's --max-lease (0: unknown): a pause lease ends
	// at most this long after it was taken, whatever its file says.
	MaxLease time.Duration `json:"maxLease,omitempty"`
}

// PutStatus replaces the snapshot with objs (rows of objects no longer
// desired go) and records the agent facts, in one transaction. FirstSeen
// of a row already present is kept.
//
// Cost: a snapshot whose rows all have the pass's time (every pass's) is
// stored with that time standing for last_pass, and a hash of its rows;
// when the next one hashes the same (a converged host) only the agent's
// facts are written, the rows not even read (BenchmarkPutStatus1000:
// 10.8 ms before, 1.8 ms). Otherwise the stored rows are read once, a row
// is written only when something but its Updated time changed, and the
// Updated times of the others in one statement (every row of a converged
// pass at 1000 objects would otherwise be a statement of its own: 60 ms).
func (s *Store) PutStatus(ctx context.Context, objs []ObjectStatus, a Agent) error {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer end()
	// A snapshot of the last pass's time whose rows are those stored (by a
	// snapshot of the same kind: their times stand for last_pass) writes
	// only the agent's facts, without reading the rows (statusHash).
	hash := statusHash(objs, a.LastPass)
	var storedHash string
	if hash != "" {
		if err := tx.QueryRowContext(ctx, `SELECT value FROM agent WHERE key = 'status_hash'`).Scan(&storedHash); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("status: %w", err)
		}
	}
	if hash == "" || hash != storedHash {
		if err := putRows(ctx, tx, objs, a); err != nil {
			return err
		}
	}
	for k, v := range map[string]string{
		"last_pass": ts(a.LastPass), "pass_error": a.PassError, "load_error": a.LoadError, "busy": a.Busy,
		"pid": strconv.Itoa(a.PID), "pid_start": strconv.FormatUint(a.PIDStart, 10), "backend": a.Backend, "version": a.Version, "command": a.Command, "max_lease": strconv.FormatInt(int64(a.MaxLease), 10), "status_hash": hash,
	} {
		if _, err := tx.ExecContext(ctx, `INSERT INTO agent(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, k, v); err != nil {
			return fmt.Errorf("agent status: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	return nil
}

// statusHash identifies the rows of a snapshot whose every row has the
// pass's time (they are stored as updatedAtLastPass): a SHA-256 over the
// rows in object order, FirstSeen and Updated left out. It is "" for any
// other snapshot, which never matches.
func statusHash(objs []ObjectStatus, lastPass time.Time) string {
	if len(objs) == 0 {
		return ""
	}
	for _, o := range objs {
		if !o.Updated.Equal(lastPass) {
			return ""
		}
	}
	sorted := slices.Clone(objs)
	slices.SortFunc(sorted, func(x, y ObjectStatus) int { return strings.Compare(x.Object, y.Object) })
	h := sha256.New()
	var buf []byte
	for _, o := range sorted {
		buf = buf[:0]
		for _, f := range [...]string{o.Object, o.Kind, o.Name, o.Unit, o.Desired, o.Observed, o.State, o.Message, o.Ready} {
			buf = binary.AppendUvarint(buf, uint64(len(f))) // length-prefixed: no field can fake a boundary
			buf = append(buf, f...)
		}
		buf = append(buf, boolByte(o.Drift), boolByte(o.Failed))
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// putRows writes the rows of a snapshot that differ from those stored.
func putRows(ctx context.Context, tx *sql.Tx, objs []ObjectStatus, a Agent) error {
	stored, err := storedStatus(ctx, tx)
	if err != nil {
		return err
	}
	upsert, err := tx.PrepareContext(ctx, `INSERT INTO objects(object, kind, name, unit, desired, observed, state, drift, failed, message, first_seen, updated, ready)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(object) DO UPDATE SET kind=excluded.kind, name=excluded.name, unit=excluded.unit, desired=excluded.desired,
	observed=excluded.observed, state=excluded.state, drift=excluded.drift, failed=excluded.failed, message=excluded.message,
	updated=excluded.updated, ready=excluded.ready`)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	defer upsert.Close()
	keep := make(map[string]bool, len(objs))
	var touch []ObjectStatus // unchanged rows with a new Updated time
	oneTime := true          // every row has the same Updated time
	for _, o := range objs {
		oneTime = oneTime && o.Updated.Equal(objs[0].Updated)
	}
	// Rows updated by this pass (the usual snapshot: every row has the
	// pass's time) store updatedAtLastPass instead of the time, so a pass
	// that changes nothing rewrites no row, only the agent's facts.
	asPass := oneTime && len(objs) > 0 && objs[0].Updated.Equal(a.LastPass)
	updated := func(o ObjectStatus) string {
		if asPass {
			return updatedAtLastPass
		}
		return ts(o.Updated)
	}
	for _, o := range objs {
		keep[o.Object] = true
		if o.FirstSeen.IsZero() {
			o.FirstSeen = o.Updated
		}
		if cur, ok := stored[o.Object]; ok && cur.same(o) {
			if cur.updated != updated(o) {
				touch = append(touch, o)
			}
			continue
		}
		if _, err := upsert.ExecContext(ctx, o.Object, o.Kind, o.Name, o.Unit, o.Desired, o.Observed, o.State, o.Drift, o.Failed, o.Message, ts(o.FirstSeen), updated(o), o.Ready); err != nil {
			return fmt.Errorf("status of %s: %w", o.Object, err)
		}
	}
	for obj := range stored {
		if keep[obj] {
			continue
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM objects WHERE object = ?`, obj); err != nil {
			return fmt.Errorf("status prune: %w", err)
		}
	}
	switch {
	case len(touch) == 0:
	case oneTime:
		// Every row left has this time or is to get it.
		u := updated(objs[0])
		if _, err := tx.ExecContext(ctx, `UPDATE objects SET updated = ? WHERE updated <> ?`, u, u); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	default:
		for _, o := range touch {
			if _, err := tx.ExecContext(ctx, `UPDATE objects SET updated = ? WHERE object = ?`, updated(o), o.Object); err != nil {
				return fmt.Errorf("status of %s: %w", o.Object, err)
			}
		}
	}
	return nil
}

// updatedAtLastPass in objects.updated stands for the agent's last_pass:
// the row was observed by the last pass.
const updatedAtLastPass = ""

// storedRow is a stored status row without its first_seen.
type storedRow struct {
	kind, name, unit, desired, observed, state, message, ready, updated string
	drift, failed                                                       bool
}

// same reports whether o would store the same row, its Updated time aside.
func (r storedRow) same(o ObjectStatus) bool {
	return r.kind == o.Kind && r.name == o.Name && r.unit == o.Unit && r.desired == o.Desired && r.observed == o.Observed &&
		r.state == o.State && r.message == o.Message && r.ready == o.Ready && r.drift == o.Drift && r.failed == o.Failed
}

// storedStatus reads the stored rows by object.
func storedStatus(ctx context.Context, tx *sql.Tx) (map[string]storedRow, error) {
	rows, err := tx.QueryContext(ctx, `SELECT object, kind, name, unit, desired, observed, state, drift, failed, message, updated, ready FROM objects`)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	defer rows.Close()
	out := map[string]storedRow{}
	for rows.Next() {
		var obj string
		var r storedRow
		if err := rows.Scan(&obj, &r.kind, &r.name, &r.unit, &r.desired, &r.observed, &r.state, &r.drift, &r.failed, &r.message, &r.updated, &r.ready); err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		out[obj] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return out, nil
}

// Status returns the snapshot sorted by object and the agent facts (zero
// when the agent never finished a pass).
func (s *Store) Status(ctx context.Context) ([]ObjectStatus, Agent, error) {
	var a Agent
	ready := "''"
	if ok, err := s.hasColumn(ctx, "objects", "ready"); err == nil && ok {
		ready = "ready"
	}
	// A row observed by the last pass has that pass's time (updatedAtLastPass),
	// read in the same statement: one snapshot.
	rows, err := s.db.QueryContext(ctx, `SELECT object, kind, name, unit, desired, observed, state, drift, failed, message, first_seen,
	CASE WHEN updated = '' THEN coalesce((SELECT value FROM agent WHERE key = 'last_pass'), '') ELSE updated END, `+ready+` FROM objects ORDER BY kind, name`)
	if err != nil {
		return nil, a, fmt.Errorf("query status: %w", err)
	}
	defer rows.Close()
	var out []ObjectStatus
	for rows.Next() {
		var o ObjectStatus
		var first, upd string
		if err := rows.Scan(&o.Object, &o.Kind, &o.Name, &o.Unit, &o.Desired, &o.Observed, &o.State, &o.Drift, &o.Failed, &o.Message, &first, &upd, &o.Ready); err != nil {
			return nil, a, fmt.Errorf("scan status: %w", err)
		}
		o.FirstSeen, o.Updated = parseTS(first), parseTS(upd)
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, a, err
	}
	kv, err := s.db.QueryContext(ctx, `SELECT key, value FROM agent`)
	if err != nil {
		return nil, a, fmt.Errorf("query agent: %w", err)
	}
	defer kv.Close()
	for kv.Next() {
		var k, v string
		if err := kv.Scan(&k, &v); err != nil {
			return nil, a, fmt.Errorf("scan agent: %w", err)
		}
		switch k {
		case "last_pass":
			a.LastPass = parseTS(v)
		case "pass_error":
			a.PassError = v
		case "load_error":
			a.LoadError = v
		case "busy":
			a.Busy = v
		case "pid":
			a.PID, _ = strconv.Atoi(v)
		case "pid_start":
			a.PIDStart, _ = strconv.ParseUint(v, 10, 64)
		case "backend":
			a.Backend = v
		case "version":
			a.Version = v
		case "command":
			a.Command = v
		case "max_lease":
			n, _ := strconv.ParseInt(v, 10, 64)
			a.MaxLease = time.Duration(n)
		}
	}
	return out, a, kv.Err()
}

// PutBaseline saves the observation the restart ledger compares the next
// one with, tagged with the boot ID, so an agent restart loses no count.
func (s *Store) PutBaseline(ctx context.Context, boot string, data []byte) error {
	_, err := s.exec(ctx, `INSERT INTO agent(key, value) VALUES ('baseline', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`,
		boot+"\n"+string(data))
	if err != nil {
		return fmt.Errorf("store baseline: %w", err)
	}
	return nil
}

// Baseline returns what PutBaseline saved ("", nil when nothing).
func (s *Store) Baseline(ctx context.Context) (string, []byte, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM agent WHERE key = 'baseline'`).Scan(&v)
	if err != nil {
		if isNoRows(err) {
			return "", nil, nil
		}
		return "", nil, fmt.Errorf("read baseline: %w", err)
	}
	boot, data, _ := strings.Cut(v, "\n")
	return boot, []byte(data), nil
}
