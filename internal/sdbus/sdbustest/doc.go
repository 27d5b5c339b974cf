// Package sdbustest provides Fake, a small in-memory stand-in for the
// slice of systemd's D-Bus API that observed/systemd and actuators/systemd
// use, for unit tests of those packages and of their callers.
//
// Fake models only what such tests need: units with a handful of
// properties, jobs that finish at once with a chosen result, enablement as
// a flag, manager properties, and PropertiesChanged signals on every state
// change. It does not read unit files, resolve dependencies, order jobs,
// run processes, or apply start limits. When in doubt, test the real thing:
// e2e/sandbox boots systemd 252 in a few hundred milliseconds, DialSandbox
// connects to it, and the packages' sandbox tests show how.
//
// Files: fake.go (Fake and Unit), sandbox.go (DialSandbox).
package sdbustest
