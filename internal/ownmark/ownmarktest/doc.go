// Package ownmarktest gives tests of the packages that read ownership marks
// (observed/systemd, actuators/systemd) unit files as resil really writes
// them: rendered by desired.Render, with the header, the three X-Resil-*
// keys and an intact hash, never a hand-written imitation.
//
// ownmarktest.go holds Unit and Oneshot.
package ownmarktest
