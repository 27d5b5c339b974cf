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

// writersOf names the processes that hold the file at path (absolute;
// inode ino) open for writing, as "PID 1234 (vim)", at most three, read
// from /proc: each process's /proc/PID/fd links are read (readlink only:
// the kernel prints the path it holds, and no filesystem is asked, so a
// hung FUSE or NFS mount that some descriptor points into cannot block
// the agent, as a stat of the link would) and compared with path, and
// the matching ones' /proc/PID/fdinfo say whether the descriptor writes
// and, where the kernel prints it, that its inode is ino. "" when none is
// found (a holder in another PID or mount namespace, the file opened by
// another name, /proc not readable). Only a busy manifest is looked up,
// and each file at most once per writersTTL, so a file held open for an
// hour costs one scan of /proc every writersTTL, not one per pass. The
// process names (its comm, which the process sets) are printed with
// anything but printable ASCII replaced.
//
// Why not a library: none reads this (lsof and fuser are programs; the
// Go /proc readers, such as prometheus/procfs, list descriptors but do not
// match them to an inode with their open flags).
func writersOf(path string, dev, ino uint64) string {
	key := writersKey{path, dev, ino}
	writersMu.Lock()
	if c, ok := writersCache[key]; ok && time.Since(c.at) < writersTTL {
		writersMu.Unlock()
		return c.names
	}
	writersMu.Unlock()
	names := scanWriters("/proc", path, ino)
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

// writersKey: the path too, as an inode number is reused once freed.
type writersKey struct {
	path     string
	dev, ino uint64
}

type writersEntry struct {
	names string
	at    time.Time
}

var (
	writersMu    sync.Mutex
	writersCache = map[writersKey]writersEntry{}
)

// scanWriters is writersOf's scan of proc (a /proc mount).
func scanWriters(proc, path string, ino uint64) string {
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
			if target, err := os.Readlink(fmt.Sprintf("%s/%d/fd/%s", proc, pid, fd.Name())); err != nil || target != path {
				continue
			}
			if !fdWrites(fmt.Sprintf("%s/%d/fdinfo/%s", proc, pid, fd.Name()), ino) {
				continue
			}
			comm, _ := os.ReadFile(fmt.Sprintf("%s/%d/comm", proc, pid))
			out = append(out, fmt.Sprintf("PID %d (%s)", pid, printable(strings.TrimSpace(string(comm)))))
			break
		}
		if len(out) == 3 {
			break
		}
	}
	return strings.Join(out, ", ")
}

// fdWrites reports whether the fdinfo file says its descriptor was opened
// for writing (O_WRONLY or O_RDWR in its octal "flags:") on inode ino
// (its "ino:" line, which kernels before 5.14 do not print).
func fdWrites(path string, ino uint64) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	writes := false
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("flags:")); ok {
			f, err := strconv.ParseUint(strings.TrimSpace(string(v)), 8, 64)
			writes = err == nil && f&(syscall.O_WRONLY|syscall.O_RDWR) != 0
		}
		if v, ok := bytes.CutPrefix(line, []byte("ino:")); ok {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64); err == nil && n != ino {
				return false
			}
		}
	}
	return writes
}

// printable is s with every byte that is not printable ASCII replaced by
// '?' (a process names itself: its comm is not to be trusted in a log).
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
