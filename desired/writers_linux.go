package desired

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// writersOf names the processes that hold the file dev/ino open for
// writing, as "PID 1234 (vim)", at most three, read from /proc: each
// process's /proc/PID/fd entries are stat'ed (stat follows the link
// without opening its target: a FIFO or a device is not touched) and the
// matching ones' /proc/PID/fdinfo flags say whether the descriptor writes.
// "" when none is found (a holder in another PID namespace, /proc not
// readable). Only a busy manifest is looked up, and each file at most once
// per writersTTL, so a file held open for an hour costs one scan of /proc
// every writersTTL, not one per pass.
//
// Why not a library: none reads this (lsof and fuser are programs; the
// Go /proc readers, such as prometheus/procfs, list descriptors but do not
// match them to an inode with their open flags).
func writersOf(dev, ino uint64) string {
	key := [2]uint64{dev, ino}
	writersMu.Lock()
	if c, ok := writersCache[key]; ok && time.Since(c.at) < writersTTL {
		writersMu.Unlock()
		return c.names
	}
	writersMu.Unlock()
	names := scanWriters("/proc", dev, ino)
	writersMu.Lock()
	defer writersMu.Unlock()
	for k, c := range writersCache {
		if time.Since(c.at) >= writersTTL {
			delete(writersCache, k)
		}
	}
	writersCache[key] = writersEntry{names: names, at: time.Now()}
	return names
}

const writersTTL = 5 * time.Second

type writersEntry struct {
	names string
	at    time.Time
}

var (
	writersMu    sync.Mutex
	writersCache = map[[2]uint64]writersEntry{}
)

// scanWriters is writersOf's scan of proc (a /proc mount).
func scanWriters(proc string, dev, ino uint64) string {
	pids, err := os.ReadDir(proc)
	if err != nil {
		return ""
	}
	var out []string
	self := os.Getpid()
	for _, p := range pids {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("%s/%d/fd", proc, pid))
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, fd := range fds {
			var st syscall.Stat_t
			if syscall.Stat(fmt.Sprintf("%s/%d/fd/%s", proc, pid, fd.Name()), &st) != nil {
				continue
			}
			if uint64(st.Dev) != dev || st.Ino != ino || !fdWrites(fmt.Sprintf("%s/%d/fdinfo/%s", proc, pid, fd.Name())) { //nolint:unconvert // Dev's type differs by arch
				continue
			}
			comm, _ := os.ReadFile(fmt.Sprintf("%s/%d/comm", proc, pid))
			out = append(out, fmt.Sprintf("PID %d (%s)", pid, strings.TrimSpace(string(comm))))
			break
		}
		if len(out) == 3 {
			break
		}
	}
	return strings.Join(out, ", ")
}

// fdWrites reports whether the fdinfo file says its descriptor was opened
// for writing (O_WRONLY or O_RDWR in its octal "flags:").
func fdWrites(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("flags:")); ok {
			f, err := strconv.ParseUint(strings.TrimSpace(string(v)), 8, 64)
			return err == nil && f&(syscall.O_WRONLY|syscall.O_RDWR) != 0
		}
	}
	return false
}
