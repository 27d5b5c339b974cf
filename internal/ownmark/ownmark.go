package ownmark

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// Ownership markers written into every rendered unit (as "# KEY=value"
// comments in the manager drop-in, which has no [Unit] section).
const (
	KeyObject = "X-Resil-Object"
	KeySource = "X-Resil-Source"
	// KeyTakeOver ("yes") marks a unit written over a unit of the same
	// name found elsewhere (spec.takeOver): only such a file is removed,
	// to give the unit back, when takeOver is turned off.
	KeyTakeOver = "X-Resil-TakeOver"
	KeyHash     = "X-Resil-Hash"
	// KeyProcessSince (systemd units) is the time, in µs since the epoch,
	// since which the settings a running process depends on are unchanged:
	// the agent writes it, right after the KeyHash line, when it rewrites a
	// unit with only reload-only changes (see reconcile.ClassifyUnitChange)
	// for a process that is not stale. A process started at or after it
	// runs the current settings. It is not part of the hashed body.
	KeyProcessSince = "X-Resil-Process-Since"
	// WatchdogFile is the manager drop-in the Watchdog kind renders
	// (in /etc/systemd/system.conf.d); resil owns it like a unit file.
	WatchdogFile = "50-resil-watchdog.conf"
)

// IsOwned reports whether unit file content carries resil's ownership marker,
// and returns the object ID it names. It works with no local state at all.
func IsOwned(data []byte) (object string, ok bool) {
	for line := range bytes.Lines(data) {
		line = bytes.TrimPrefix(bytes.TrimSuffix(line, []byte("\n")), []byte("# "))
		if v, found := bytes.CutPrefix(line, []byte(KeyObject+"=")); found {
			return string(bytes.TrimSpace(v)), true
		}
	}
	return "", false
}

// SourceOf returns the manifest files (relative to the manifests directory)
// recorded in a rendered file's X-Resil-Source marker.
func SourceOf(data []byte) []string {
	for line := range bytes.Lines(data) {
		line = bytes.TrimPrefix(bytes.TrimSuffix(line, []byte("\n")), []byte("# "))
		if v, found := bytes.CutPrefix(line, []byte(KeySource+"=")); found {
			return strings.Fields(string(v))
		}
	}
	return nil
}

// HashOf returns the hash recorded in a rendered file and whether the body
// still matches it (false means it was edited by hand).
func HashOf(data []byte) (recorded string, intact bool) {
	// The body is hashed line by line as it is found (no copy of it: the
	// observer checks every owned unit file on every pass).
	h := sha256.New()
	for line := range bytes.Lines(data) {
		if v, found := bytes.CutPrefix(line, []byte(KeyHash+"=")); found {
			recorded = strings.TrimSpace(string(v))
			continue
		}
		if bytes.HasPrefix(line, []byte(KeyProcessSince+"=")) {
			continue
		}
		h.Write(line)
	}
	if recorded == "" {
		return "", false
	}
	var sum [sha256.Size]byte
	return recorded, recorded == hashText(h.Sum(sum[:0]))
}

// Hash returns the value of the X-Resil-Hash marker for a file body (the
// file without its X-Resil-Hash line).
func Hash(b []byte) string {
	sum := sha256.Sum256(b)
	return hashText(sum[:])
}

func hashText(sum []byte) string { return "sha256:" + hex.EncodeToString(sum[:12]) }

// ProcessSince returns the KeyProcessSince value of a unit file.
func ProcessSince(data []byte) (usec int64, ok bool) {
	for line := range bytes.Lines(data) {
		if v, found := bytes.CutPrefix(line, []byte(KeyProcessSince+"=")); found {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			return n, err == nil && n > 0
		}
	}
	return 0, false
}

// WithoutProcessSince returns data without its KeyProcessSince line (data
// itself when it has none).
func WithoutProcessSince(data []byte) []byte {
	if !bytes.Contains(data, []byte(KeyProcessSince+"=")) {
		return data
	}
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(KeyProcessSince+"=")) {
			out.Write(line)
		}
	}
	return out.Bytes()
}

// WithProcessSince returns data with a KeyProcessSince line of usec right
// after its KeyHash line (data unchanged when it has no KeyHash line).
func WithProcessSince(data []byte, usec int64) []byte {
	data = WithoutProcessSince(data)
	var out bytes.Buffer
	done := false
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		out.Write(line)
		if !done && bytes.HasPrefix(line, []byte(KeyHash+"=")) && bytes.HasSuffix(line, []byte("\n")) {
			out.WriteString(KeyProcessSince + "=" + strconv.FormatInt(usec, 10) + "\n")
			done = true
		}
	}
	if !done {
		return data
	}
	return out.Bytes()
}

// TookOver reports whether a rendered file was written with takeOver
// (a KeyTakeOver=yes line).
func TookOver(data []byte) bool {
	for line := range bytes.Lines(data) {
		if v, found := bytes.CutPrefix(line, []byte(KeyTakeOver+"=")); found {
			return string(bytes.TrimSpace(v)) == "yes"
		}
	}
	return false
}
