// Package store is resil's durable event log, restart ledger and status
// snapshot: one SQLite database (<state-dir>/events.db) in WAL mode, so the
// `status` and `events` commands read while the agent writes, and an
// operator can open it with sqlite3.
//
// The agent is the only writer (its state-directory lock guarantees one);
// readers open the same file with OpenReader and never change it.
//
// Tables (times are fixed-width UTC text, 2006-01-02T15:04:05.000000Z, so
// they sort as text and SQLite's date functions read them):
//
//	events   one row per (object, reason, message); a repeat bumps count,
//	         last_seen and seq (Kubernetes-style de-duplication)
//	restarts the restart ledger: one row per restart of a managed service,
//	         with its cause (auto, watchdog, agent, manual)
//	objects  the status snapshot the agent writes after each pass
//	agent    key/value facts about the last pass
//	alerts   when a restart-storm alert last fired, per object
//
// Retention (age and rows) deletes in small batches, each its own short
// transaction, so a reader never waits long. Every Add commits before it
// returns: a writer killed with SIGKILL loses nothing it reported as
// written (WAL with synchronous=NORMAL survives a process crash; FULL also
// survives power loss).
package store
