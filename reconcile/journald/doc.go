// Package journald sends resil's events to the systemd journal with
// structured fields, so `journalctl RESIL_REASON=RestartStorm` or
// `journalctl -o json RESIL_OBJECT=Service/web` find them:
//
//	MESSAGE           "<Reason> <object>: <message>"
//	PRIORITY          4 (warning) for Warning events, 6 (info) for Normal
//	SYSLOG_IDENTIFIER reconciler
//	RESIL_OBJECT, RESIL_REASON, RESIL_UNIT, RESIL_TYPE, RESIL_STEP, RESIL_COUNT
//
// Findings that persist are re-recorded on every pass; a repeat of the
// same (object, reason, message) is sent again at most once per Every (the
// event store counts every repeat). Events that are occurrences, not
// conditions (reasons of category occurrence: restarts, storms, applied
// and failed steps), are always sent.
//
// Files: journald.go (Recorder, Fields: the field mapping and the repeat
// limit).
package journald
