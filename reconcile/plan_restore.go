package reconcile

import (
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

// startedFromRender reports whether u's running main process was started
// from exactly the unit file data, by the hash the backend recorded when
// it started it (observed.Unit.ProcessFileHash; the process backend, which
// reads unit files only at its own daemon-reload). Restoring data over an
// out-of-band edit of the file then changes nothing that process runs: the
// write needs no restart, whatever the edit changed. A process started
// from anything else (the edited file, reloaded and restarted since; an
// older version) keeps the restart the change calls for.
func startedFromRender(u *observed.Unit, data []byte) bool {
	if u == nil || u.MainPID == 0 || u.ProcessFileHash == "" {
		return false
	}
	h, intact := ownmark.HashOf(data)
	return intact && h == u.ProcessFileHash
}
