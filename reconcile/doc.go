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
// every object whose file (or drop-in) is broken stays in force, and nothing
// is pruned until one load succeeded.
package reconcile
