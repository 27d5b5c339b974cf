// Package e2e holds resil's end-to-end tests. They boot a real systemd as
// PID 1 of a private namespace over an overlay root (package e2e/sandbox),
// run the real reconciler binary inside it against real manifests, and
// assert systemd's own view (systemctl show), not the agent's log. They
// skip when not root; RESIL_E2E_REQUIRE=1 (set by CI) turns the skip into
// a failure.
//
// The torture suite (torture_test.go, torture_backend_test.go) drives
// random operations and kill -9 of the agent against both backends and
// checks the agent's promises at quiescent checkpoints; RESIL_TORTURE=1
// selects the full size (make torture), RESIL_TORTURE_SEED=N replays a
// run's operation sequence.
package e2e
