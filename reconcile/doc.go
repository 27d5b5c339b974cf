// Package reconcile is resil's level-triggered control loop and its pure
// planner.
//
// Each pass reads ALL desired state (the manifests directory) and ALL
// observed state (the backend), computes a Plan with Plan — a pure function,
// no I/O — and then either prints it (diff, dryRun) or executes it step by
// step (apply, run). One code path serves both, so the dry run cannot lie.
// Triggers (fsnotify, D-Bus hints, a periodic resync) only wake the loop;
// they are never trusted as state, and a burst of them collapses into one
// pending pass.
//
// Unit lifecycle as the planner drives it (per desired unit):
//
//	           write file (new)                 enable, start
//	absent ────────────────────▶ loaded ────────────────────────▶ active
//	  ▲                            │  ▲                           │   │
//	  │ remove (prune)             │  │ restart (content changed) │   │ stop/crash out of band
//	  │                            │  └───────────────────────────┘   ▼
//	stopped+disabled ◀── stop, disable (manifest deleted) ──── inactive ──▶ start again (drift: enforce)
//	                                                                │           or event only (drift: report)
//	                                                       failed ◀─┘ (systemd's own restart policy gave up)
//	                                                         │
//	                                                         └─▶ event only; the agent restarts it after a
//	                                                             manifest change or `reconciler reset`, never
//	                                                             on its own (no storm on top of systemd's).
//
// Invalid manifests never stop or prune anything: the last good version of
// every object whose file (or drop-in) is broken, busy or empty stays in
// force, and nothing is pruned until one load succeeded.
//
// The last good versions outlive the agent: with Config.LastGood set (the
// CLI uses LastGoodFile, <state-dir>/lastgood.json), New loads them and
// every applying pass saves them, crash-safely and only when they changed,
// before its first step; a dry run (diff) never writes. Each entry holds the
// object's ID, Source and the merged JSON document it was decoded from, and
// is rebuilt with desired.DecodeObject (Load's strict decode and
// validation); an entry or file that fails is ignored with a warning. So a
// restarted agent uses exactly the memory the killed one had: an object
// whose drop-in broke while the agent was down still has its start or
// lost restart done. A file really removed still prunes what it held.
package reconcile
