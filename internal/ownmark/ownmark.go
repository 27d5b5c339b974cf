package ownmark

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Ownership markers written into every rendered unit (as "# KEY=value"
// comments in the manager drop-in, which has no [Unit] section).
const (
	KeyObject = "X-Resil-Object"
	KeySource = "X-Resil-Source"
	KeyHash   = "X-Resil-Hash"
	// WatchdogFile is the manager drop-in the Watchdog kind renders
	// (in /etc/systemd/system.conf.d); resil owns it like a unit file.
	WatchdogFile = "50-resil-watchdog.conf"
)

// IsOwned reports whether unit file content carries resil's ownership marker,
// and returns the object ID it names. It works with no local state at all.
func IsOwned(data []byte) (object string, ok bool) {
	for _, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimPrefix(line, []byte("# "))
		if v, found := bytes.CutPrefix(line, []byte(KeyObject+"=")); found {
			return string(bytes.TrimSpace(v)), true
		}
	}
	return "", false
}

// SourceOf returns the manifest files (relative to the manifests directory)
// recorded in a rendered file's X-Resil-Source marker.
func SourceOf(data []byte) []string {
	for _, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimPrefix(line, []byte("# "))
		if v, found := bytes.CutPrefix(line, []byte(KeySource+"=")); found {
			return strings.Fields(string(v))
		}
	}
	return nil
}

// HashOf returns the hash recorded in a rendered file and whether the body
// still matches it (false means it was edited by hand).
func HashOf(data []byte) (recorded string, intact bool) {
	var body bytes.Buffer
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if v, found := bytes.CutPrefix(line, []byte(KeyHash+"=")); found {
			recorded = strings.TrimSpace(string(v))
			continue
		}
		body.Write(line)
	}
	return recorded, recorded != "" && recorded == Hash(body.Bytes())
}

// Hash returns the value of the X-Resil-Hash marker for a file body (the
// file without its X-Resil-Hash line).
func Hash(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:12])
}
