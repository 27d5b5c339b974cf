package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"resil.dev/resil/reconcile"
)

// FileName is the database's name inside the state directory.
const FileName = "events.db"

// Defaults of Options.
const (
	DefaultRetention = 14 * 24 * time.Hour
	DefaultMaxRows   = 100_000
	// MinRestartRetention keeps the restart ledger at least as long as the
	// longest alert window validation allows (30 days).
	MinRestartRetention = 31 * 24 * time.Hour
	deleteBatch         = 500
)

// ErrNoStore is returned by OpenReader when the database does not exist.
var ErrNoStore = errors.New("no event store")

// timeFormat is fixed-width so text order is time order.
const timeFormat = "2006-01-02T15:04:05.000000Z"

func ts(t time.Time) string { return t.UTC().Format(timeFormat) }

func parseTS(s string) time.Time {
	t, err := time.Parse(timeFormat, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Options of Open.
type Options struct {
	// Retention is how long events are kept after their last repeat
	// (default 14 days); MaxRows caps the events table (default 100k).
	Retention time.Duration
	MaxRows   int
	// Synchronous is SQLite's synchronous pragma: NORMAL (default; a process
	// crash loses nothing committed) or FULL (power loss neither).
	Synchronous string
	// Now is the clock (tests inject one).
	Now func() time.Time
	Log *zap.Logger
}

// Store is an open event database. Its methods are safe for concurrent use.
type Store struct {
	db   *sql.DB
	path string
	opts Options
	log  *zap.Logger
	// mu serialises writes in this process (SQLite has one writer anyway;
	// this keeps seq allocation and upserts in order).
	mu sync.Mutex
}

func dsn(path string, pragmas ...string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	return "file:" + path + "?" + q.Encode()
}

// Open opens (creating if needed) the database at path for writing and
// brings its schema up to date.
func Open(path string, opts Options) (*Store, error) {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.MaxRows <= 0 {
		opts.MaxRows = DefaultMaxRows
	}
	switch strings.ToUpper(opts.Synchronous) {
	case "":
		opts.Synchronous = "NORMAL"
	case "NORMAL", "FULL":
	default:
		return nil, fmt.Errorf("synchronous must be NORMAL or FULL, got %q", opts.Synchronous)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("event store dir: %w", err)
	}
	db, err := sql.Open("sqlite", dsn(path, "journal_mode(WAL)", "synchronous("+opts.Synchronous+")", "foreign_keys(1)")+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open event store %s: %w", path, err)
	}
	// One connection: the agent is the only writer and its writes are short.
	db.SetMaxOpenConns(1)
	s := &Store{db: db, path: path, opts: opts, log: opts.Log.Named("store")}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("event store %s: %w", path, err)
	}
	return s, nil
}

// OpenReader opens an existing database for reading only (status, events).
// It returns ErrNoStore when there is none yet.
func OpenReader(path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w at %s (has the agent run with this --state-dir?)", ErrNoStore, path)
		}
		return nil, fmt.Errorf("event store: %w", err)
	}
	// Read-write open (query_only) lets a reader share the WAL index like
	// any connection. Without write permission (a non-root operator) fall
	// back to read-only, which works while the agent has the WAL open; with
	// no agent running (no -wal/-shm files to share) to an immutable open.
	var db *sql.DB
	var v int
	var err error
	for _, mode := range []string{"mode=rw", "mode=ro", "mode=ro&immutable=1"} {
		db, err = sql.Open("sqlite", dsn(path, "query_only(1)")+"&"+mode)
		if err != nil {
			return nil, fmt.Errorf("open event store %s: %w", path, err)
		}
		if err = db.QueryRow("PRAGMA user_version").Scan(&v); err == nil {
			break
		}
		db.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("event store %s: %w", path, err)
	}
	db.SetMaxOpenConns(2)
	s := &Store{db: db, path: path, opts: Options{Now: time.Now}, log: zap.NewNop()}
	if v == 0 {
		db.Close()
		return nil, fmt.Errorf("%w at %s: schema not created yet", ErrNoStore, path)
	}
	return s, nil
}

// Path returns the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// DB exposes the handle for tests and tools.
func (s *Store) DB() *sql.DB { return s.db }

const schema = `
CREATE TABLE IF NOT EXISTS events (
	id         INTEGER PRIMARY KEY,
	seq        INTEGER NOT NULL,
	first_seen TEXT NOT NULL,
	last_seen  TEXT NOT NULL,
	type       TEXT NOT NULL,
	reason     TEXT NOT NULL,
	object     TEXT NOT NULL DEFAULT '',
	unit       TEXT NOT NULL DEFAULT '',
	step       TEXT NOT NULL DEFAULT '',
	message    TEXT NOT NULL,
	count      INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events(object, reason, message);
CREATE UNIQUE INDEX IF NOT EXISTS events_seq ON events(seq);
CREATE INDEX IF NOT EXISTS events_last_seen ON events(last_seen);
CREATE TABLE IF NOT EXISTS restarts (
	id     INTEGER PRIMARY KEY,
	time   TEXT NOT NULL,
	object TEXT NOT NULL,
	unit   TEXT NOT NULL,
	cause  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS restarts_object_time ON restarts(object, time);
CREATE INDEX IF NOT EXISTS restarts_time ON restarts(time);
CREATE TABLE IF NOT EXISTS objects (
	object     TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	name       TEXT NOT NULL,
	unit       TEXT NOT NULL DEFAULT '',
	desired    TEXT NOT NULL,
	observed   TEXT NOT NULL,
	state      TEXT NOT NULL,
	drift      INTEGER NOT NULL DEFAULT 0,
	failed     INTEGER NOT NULL DEFAULT 0,
	message    TEXT NOT NULL DEFAULT '',
	first_seen TEXT NOT NULL,
	updated    TEXT NOT NULL,
	ready      TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS agent (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
	object     TEXT PRIMARY KEY,
	last_fired TEXT NOT NULL
);
PRAGMA user_version = 1;
`

func (s *Store) migrate(ctx context.Context) error {
	// The schema sets user_version last: a store that has it has every
	// table, and setting it again would be a write transaction on every
	// open (each `apply` opens the store).
	var v int
	if err := s.db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v >= 1 {
		return s.migrateReady(ctx)
	}
	if _, err := s.db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	return s.migrateReady(ctx)
}

// migrateReady adds objects.ready to a store created before it.
func (s *Store) migrateReady(ctx context.Context) error {
	// objects.ready came with readiness probes: a store an older agent
	// created gets the column.
	if ok, err := s.hasColumn(ctx, "objects", "ready"); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	} else if !ok {
		if _, err := s.db.ExecContext(ctx, `ALTER TABLE objects ADD COLUMN ready TEXT NOT NULL DEFAULT ''`); err != nil {
			return fmt.Errorf("migrate schema: %w", err)
		}
	}
	return nil
}

// hasColumn reports whether table has column (a reader of a store an
// older agent wrote may find it missing).
func (s *Store) hasColumn(ctx context.Context, table, column string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info(?) WHERE name = ?`, table, column).Scan(&n)
	return n > 0, err
}

// Record implements reconcile.Recorder; a failed write is logged (the
// in-memory ring and the journal still have the event).
func (s *Store) Record(e reconcile.Event) {
	if err := s.Add(context.Background(), e); err != nil {
		s.log.Error("event not stored", zap.String("reason", string(e.Reason)), zap.String("object", e.Object), zap.Error(err))
	}
}

// RecordBatch implements reconcile.BatchRecorder: one transaction for the
// events of a batch of steps (100 starts: one commit, not 100).
func (s *Store) RecordBatch(evs []reconcile.Event) {
	if err := s.AddBatch(context.Background(), evs); err != nil {
		s.log.Error("events not stored", zap.Int("events", len(evs)), zap.Error(err))
	}
}

var _ reconcile.BatchRecorder = (*Store)(nil)

const upsertEvent = `INSERT INTO events(seq, first_seen, last_seen, type, reason, object, unit, step, message, count)
VALUES ((SELECT coalesce(max(seq), 0) + 1 FROM events), ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(object, reason, message) DO UPDATE SET
	count = count + excluded.count,
	last_seen = max(last_seen, excluded.last_seen),
	type = excluded.type,
	unit = excluded.unit,
	step = excluded.step,
	seq = excluded.seq`

// Add stores e, or bumps the count and last-seen time of the row with the
// same (object, reason, message). It has committed when it returns nil.
func (s *Store) Add(ctx context.Context, e reconcile.Event) error {
	e = s.normalize(e)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.db.ExecContext(ctx, upsertEvent, ts(e.Time), ts(e.LastSeen), string(e.Type), e.Reason, e.Object, e.Unit, e.Step, e.Message, e.Count)
	if err != nil {
		return fmt.Errorf("store event %s %s: %w", e.Reason, e.Object, err)
	}
	return nil
}

// normalize fills an event's defaults: time now, count 1, last seen no
// earlier than its time.
func (s *Store) normalize(e reconcile.Event) reconcile.Event {
	if e.Time.IsZero() {
		e.Time = s.opts.Now()
	}
	if e.Count <= 0 {
		e.Count = 1
	}
	if e.LastSeen.Before(e.Time) {
		e.LastSeen = e.Time
	}
	return e
}

// AddBatch stores several events in one transaction (benchmarks, imports).
func (s *Store) AddBatch(ctx context.Context, evs []reconcile.Event) error {
	tx, end, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer end()
	st, err := tx.PrepareContext(ctx, upsertEvent)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer st.Close()
	for _, e := range evs {
		e = s.normalize(e)
		if _, err := st.ExecContext(ctx, ts(e.Time), ts(e.LastSeen), string(e.Type), e.Reason, e.Object, e.Unit, e.Step, e.Message, e.Count); err != nil {
			return fmt.Errorf("store event %s %s: %w", e.Reason, e.Object, err)
		}
	}
	return tx.Commit()
}

// StoredEvent is an event with its row's sequence number (it grows with
// every insert and repeat; `events --watch` follows it).
type StoredEvent struct {
	reconcile.Event
	Seq int64 `json:"seq"`
}

// Query selects events. Zero fields select everything.
type Query struct {
	// Since keeps events last seen at or after it.
	Since time.Time
	// Object is an object ID ("Service/web"), a bare name ("web": any
	// kind) or a unit ("web.service": the events that name it).
	Object string
	// Owner, with a unit in Object, is the ID of the object that owns
	// the unit: its events match too, those of the object itself (unit
	// "") and of its other units (a timer's job's TimerFailed).
	Owner string
	Type  reconcile.EventType
	// Reason matches whatever the case.
	Reason string
	// AfterSeq keeps events inserted or repeated after that sequence number.
	AfterSeq int64
	// UpToSeq keeps events whose sequence number is at most it (0: no bound).
	UpToSeq int64
	// Limit keeps the newest Limit events (0: no limit).
	Limit int
}

// Events returns the matching events, oldest last-seen first.
func (s *Store) Events(ctx context.Context, q Query) ([]StoredEvent, error) {
	var where []string
	var args []any
	if !q.Since.IsZero() {
		where = append(where, "last_seen >= ?")
		args = append(args, ts(q.Since))
	}
	if q.Object != "" {
		if strings.Contains(q.Object, "/") {
			where = append(where, "object = ?")
			args = append(args, q.Object)
		} else {
			cond := "object = ? OR object LIKE ? ESCAPE '\\' OR unit = ?"
			args = append(args, q.Object, "%/"+likeEscape(q.Object), q.Object)
			if q.Owner != "" {
				cond += " OR object = ?"
				args = append(args, q.Owner)
			}
			where = append(where, "("+cond+")")
		}
	}
	if q.Type != "" {
		where = append(where, "type = ?")
		args = append(args, string(q.Type))
	}
	if q.Reason != "" {
		where = append(where, "reason = ? COLLATE NOCASE")
		args = append(args, q.Reason)
	}
	if q.AfterSeq > 0 {
		where = append(where, "seq > ?")
		args = append(args, q.AfterSeq)
	}
	if q.UpToSeq > 0 {
		where = append(where, "seq <= ?")
		args = append(args, q.UpToSeq)
	}
	query := "SELECT seq, first_seen, last_seen, type, reason, object, unit, step, message, count FROM events"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	order := " ORDER BY last_seen, seq"
	if q.AfterSeq > 0 {
		order = " ORDER BY seq"
	}
	if q.Limit > 0 {
		query = "SELECT * FROM (" + query + " ORDER BY last_seen DESC, seq DESC LIMIT ?)"
		args = append(args, q.Limit)
	}
	rows, err := s.db.QueryContext(ctx, query+order, args...)
	if err != nil {
		return nil, fmt.Errorf("query events: %w", err)
	}
	defer rows.Close()
	var out []StoredEvent
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// scanEvent reads one row of the columns seq, first_seen, last_seen, type,
// reason, object, unit, step, message, count.
func scanEvent(rows *sql.Rows) (StoredEvent, error) {
	var e StoredEvent
	var first, last, typ string
	if err := rows.Scan(&e.Seq, &first, &last, &typ, &e.Reason, &e.Object, &e.Unit, &e.Step, &e.Message, &e.Count); err != nil {
		return e, fmt.Errorf("scan event: %w", err)
	}
	e.Time, e.LastSeen, e.Type = parseTS(first), parseTS(last), reconcile.EventType(typ)
	return e, nil
}

func likeEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// MaxSeq returns the highest sequence number (0: no events).
func (s *Store) MaxSeq(ctx context.Context) (int64, error) {
	var n sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT max(seq) FROM events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("max seq: %w", err)
	}
	return n.Int64, nil
}

// LastEvents returns the newest event of each object.
func (s *Store) LastEvents(ctx context.Context) (map[string]StoredEvent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT e.seq, e.first_seen, e.last_seen, e.type, e.reason, e.object, e.unit, e.step, e.message, e.count
FROM events e JOIN (SELECT object, max(seq) AS seq FROM events WHERE object != '' GROUP BY object) m ON e.seq = m.seq`)
	if err != nil {
		return nil, fmt.Errorf("query last events: %w", err)
	}
	defer rows.Close()
	out := map[string]StoredEvent{}
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out[e.Object] = e
	}
	return out, rows.Err()
}

// Prune enforces retention: events last seen before now-Retention, then the
// oldest events beyond MaxRows, then restarts older than the longer of
// Retention and MinRestartRetention. Each batch of deleteBatch rows is its
// own transaction. It returns how many rows it deleted.
func (s *Store) Prune(ctx context.Context) (int, error) {
	now := s.opts.Now()
	total := 0
	n, err := s.deleteLoop(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE last_seen < ? LIMIT ?)`, ts(now.Add(-s.opts.Retention)))
	total += n
	if err != nil {
		return total, err
	}
	n, err = s.capRows(ctx, "events", "last_seen, seq")
	total += n
	if err != nil {
		return total, err
	}
	keep := max(s.opts.Retention, MinRestartRetention)
	n, err = s.deleteLoop(ctx, `DELETE FROM restarts WHERE id IN (SELECT id FROM restarts WHERE time < ? LIMIT ?)`, ts(now.Add(-keep)))
	total += n
	if err != nil {
		return total, err
	}
	n, err = s.capRows(ctx, "restarts", "time, id")
	total += n
	return total, err
}

// capRows deletes the first rows of table in order until at most MaxRows remain.
func (s *Store) capRows(ctx context.Context, table, order string) (int, error) {
	total := 0
	for {
		var rows int
		if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&rows); err != nil {
			return total, fmt.Errorf("count %s: %w", table, err)
		}
		over := rows - s.opts.MaxRows
		if over <= 0 {
			return total, nil
		}
		n, err := s.exec(ctx, "DELETE FROM "+table+" WHERE id IN (SELECT id FROM "+table+" ORDER BY "+order+" LIMIT ?)", min(over, deleteBatch))
		total += n
		if err != nil || n == 0 {
			return total, err
		}
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
	}
}

// deleteLoop runs a batched DELETE (its last parameter is the batch size)
// until it deletes nothing.
func (s *Store) deleteLoop(ctx context.Context, q string, arg any) (int, error) {
	total := 0
	for {
		n, err := s.exec(ctx, q, arg, deleteBatch)
		total += n
		if err != nil || n < deleteBatch {
			return total, err
		}
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
	}
}

// begin is the opening of every write transaction: it takes the writer
// lock and begins; the caller defers end, which rolls back (a no-op after
// Commit) and unlocks.
func (s *Store) begin(ctx context.Context) (*sql.Tx, func(), error) {
	s.mu.Lock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("begin: %w", err)
	}
	return tx, func() {
		_ = tx.Rollback()
		s.mu.Unlock()
	}, nil
}

func (s *Store) exec(ctx context.Context, q string, args ...any) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("retention: %w", err)
	}
	n, _ := r.RowsAffected()
	return int(n), nil
}

// RunRetention prunes at once and then every interval until ctx is done.
func (s *Store) RunRetention(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		every = 10 * time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := s.Prune(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("retention failed", zap.Error(err))
		} else if n > 0 {
			s.log.Info("retention pruned rows", zap.Int("rows", n))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
