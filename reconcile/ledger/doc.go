// Package ledger counts restarts of managed services, decides restart
// storms and runs their alert hooks. Level-triggered like the rest of
// reconcile: every restart is inferred from observed state, whatever
// caused it, so a missed wake-up loses no count (only its exact time).
//
// Files:
//
//	detect.go   Detect, Policy, Storm: the decisions, no I/O
//	keeper.go   Keeper: after each pass, Detect → store rows, Restarted
//	            events, a Sink (metrics) → alert
//	alert.go    ParsePolicy (--alert-default), per-object policy, storm alert
//	hook.go     the hook contract (RESIL_* env + JSON on stdin), RunHooks
//	baseline.go the last observation kept across agent restarts, tagged
//	            with the boot ID (ReadBootID: /proc/sys/kernel/random/boot_id)
//
// The agent (cmd/reconciler) only wires a Keeper: NewKeeper, Observe after
// every pass, RunHooks on a goroutine it owns.
//
// How a unit's counters move between two observations, and what Detect
// concludes (p = previous, c = current observation):
//
//	NRestarts p→c        start time / MainPID   between           cause
//	grows by n           any                    -                 n × auto (watchdog when Result says so)
//	drops to k           changed                agent restart     1 × agent + k × auto
//	drops to k           changed, p was running -                 1 × manual + k × auto
//	same                 changed, p was running -                 1 × manual
//	same / drops         changed                agent restart     1 × agent
//	drops (reset-failed) p was not running      -                 nothing (a start, not a restart)
//	0 → 0 (systemd)      changed, p in delay    -                 1 × manual (agent when journaled)
//
// systemd zeroes NRestarts on a manual (re)start and on reset-failed; a
// manual restart followed by automatic ones before the next observation
// counts as automatic restarts only. "p in delay": the previous
// observation saw the unit in auto-restart; systemd raises the count
// before the unit leaves it, so 0 on both sides means a restart job (not
// the policy) started it.
package ledger
