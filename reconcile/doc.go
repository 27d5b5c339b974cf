// Package reconcile is resil's level-triggered control loop and its pure
// planner.
//
// Each pass reads ALL desired state (the manifests directory) and ALL
// observed state (the backend), computes a Plan with Compute — a pure
// function, no I/O — and then either prints it (diff, dryRun) or executes
// it step by step (apply, run). One code path serves both, so the dry run
// cannot lie. Triggers (fsnotify, D-Bus hints, a periodic resync) only wake
// the loop; a burst of them collapses into one pending pass.
//
// Unit lifecycle as the planner drives it (per desired unit):
//
//	           write file (new)                 enable, start
//	absent ────────────────────▶ loaded ────────────────────────▶ active
//	  ▲                            │  ▲                           │   │
//	  │ remove (prune)             │  │ restart (process setting  │   │ stop/crash out of band
//	  │                            │  │ changed; else reload only)│   │
//	  │                            │  └───────────────────────────┘   ▼
//	stopped+disabled ◀── stop, disable (manifest deleted) ──── inactive ──▶ start again (drift: enforce)
//	                                                                │           or event only (drift: report)
//	                                                       failed ◀─┘ (systemd's own restart policy gave up)
//	                                                         └─▶ event only; restarted after a manifest
//	                                                             change or `reconciler reset`, never alone.
//
// Invalid manifests never stop or prune anything: the last good version of
// every object whose file (or drop-in) is broken, busy or empty stays in
// force (LastGoodFile keeps it across agent restarts), and nothing is
// pruned until one load succeeded.
//
// The operator's safety rails are planner input too (SafetyInput, read
// before the pass): a pause lease withholds an object's steps and reports
// them; the mass-prune guard holds back a pass's prunes when they are too
// many, and keeps holding those objects (PruneHeld, persisted) until a
// confirmation or their manifests are back; a prune grace keeps a vanished
// object until its deadline.
//
// Files:
//
//	reconciler.go     Reconciler: one pass (load, last good, observe, Compute, execute), Result
//	loop.go           Loop: wake-ups, settle, resync (a full read), pass timeout, after-pass hooks
//	batch.go          BatchApplier: the first runtime steps of every unit (and, for an
//	                  applier that takes them, a run of unit file writes) run in batches
//	observe.go        FullObserver: the resync's full read past a watch-fed cache, CacheDrift events
//	ownwake.go        requeueForRollout: the next wave's pass when own jobs wake nothing
//	plan.go           Input, Plan, Finding, Compute and the unit-file sync shared by all kinds
//	plan_service.go   per-kind planning: services (start, restart, failed, watchdog kills)
//	plan_timer.go     per-kind planning: timers (enable, start, missed runs, catch-up)
//	plan_watchdog.go  per-kind planning: the host watchdog (manager drop-in, set-manager)
//	plan_prune.go     pruning of owned units and the manager drop-in no object wants
//	plan_health.go    liveness: a restart (or a report) for a failed liveness probe (Input.Health)
//	readiness.go      Readiness: a service's READY word from its unit and readiness probe
//	plan_rollout.go   rollouts: restarts of changed services in waves (Input.MaxParallelRestarts)
//	rollout_state.go  the rollout record, the jitter gate, `rollout resume` acknowledgements
//	plan_safety.go    safety rails in the planner: paused objects' steps withheld, the mass-prune guard
//	lease.go          Lease and LeaseDir: pause leases in <state-dir>/leases/
//	safety.go         Safety: the rails' state-dir input and bookkeeping (expiry, prune deadlines, held objects, confirmations)
//	reason.go         the event vocabulary: Reason, its Category (drift, failure, ...)
//	status.go         Classify: an object's state after a pass (Converged … Invalid)
//	restartclass.go   ClassifyUnitChange: restart or only daemon-reload for a rewritten unit
//	restart_journal.go  the restart journal: restarts owed by a killed agent (systemd backend)
//	runs.go             the run memory: the last run of a service systemd unloaded (systemd backend)
//	prefetch.go       StartPrefetch: a one-shot command's read of systemd while the manifests load (the agent's passes: Options.Overlap);
//	                  Ahead: the agent's read started at a kick, used by the pass after the settle when nothing changed since
//	loadahead.go      LoadAhead: the agent's manifest load begun during the settle delay, used by the pass when no manifest
//	                  event came since (Config.ManifestSeq)
//	events.go         Event, Recorder, BatchRecorder, the in-memory Ring, Fanout, Queue (the store's commits beside the pass)
//	lastgood.go       LastGoodFile: the last good objects in <state-dir>/lastgood.json
//	lastgood_lazy.go  loadLastGood: the persisted objects loaded only by a first pass that needs them
//	text.go           OrDash, FormatUSec: the shared wording of messages
package reconcile
