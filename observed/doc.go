// Package observed reads the host's actual state into plain data (State) for
// the pure planner. It is level-triggered: every pass re-reads everything it
// needs; subscriptions only wake the loop and are never trusted as state.
package observed
