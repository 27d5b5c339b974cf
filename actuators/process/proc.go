package process

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// procStat is the part of /proc/PID/stat the supervisor uses.
type procStat struct {
	PID   int
	State byte // R, S, D, Z, ...
	PPID  int
	PGID  int
	// StartTime is field 22: clock ticks after boot. Together with the PID it
	// identifies a process across PID reuse.
	StartTime uint64
}

// StartTime returns the start time of process pid (/proc/PID/stat field
// 22, clock ticks after boot), which names it across PID reuse; ok is
// false when no such process runs (gone, or a zombie).
func StartTime(pid int) (start uint64, ok bool) {
	st, err := readProcStat("/proc", pid)
	if err != nil || st.State == 'Z' {
		return 0, false
	}
	return st.StartTime, true
}

// readProcStat reads root/PID/stat (root is "/proc" outside tests).
func readProcStat(root string, pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

// parseProcStat parses one stat line. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || close < open {
		return procStat{}, fmt.Errorf("proc stat: malformed line %q", b)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return procStat{}, fmt.Errorf("proc stat: pid: %w", err)
	}
	f := bytes.Fields(b[close+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("proc stat: %d fields after comm, want >= 20", len(f))
	}
	st := procStat{PID: pid, State: f[0][0]}
	if st.PPID, err = strconv.Atoi(string(f[1])); err != nil {
		return procStat{}, fmt.Errorf("proc stat: ppid: %w", err)
	}
	if st.PGID, err = strconv.Atoi(string(f[2])); err != nil {
		return procStat{}, fmt.Errorf("proc stat: pgrp: %w", err)
	}
	if st.StartTime, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return procStat{}, fmt.Errorf("proc stat: starttime: %w", err)
	}
	return st, nil
}

// groupMembers lists live processes of process group pgid that started at or
// after minStart (so a recycled PGID of an older process is not touched).
func groupMembers(root string, pgid int, minStart uint64) []int {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(root, pid)
		if err != nil || st.PGID != pgid || st.State == 'Z' || st.StartTime < minStart {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// userHZ is the unit of /proc/PID/stat's start time (USER_HZ, 100 on
// every Linux architecture).
const userHZ = 100

// procStarted returns the wall-clock start, in µs since the epoch, of a
// process whose /proc/PID/stat start time is startTime (clock ticks since
// boot; 10 ms resolution), from the boot time in root/stat; now when that
// cannot be read.
func procStarted(root string, startTime uint64) int64 {
	b, err := os.ReadFile(filepath.Join(root, "stat"))
	if err == nil {
		for _, line := range bytes.Split(b, []byte("\n")) {
			if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
				if btime, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64); err == nil {
					return btime*1_000_000 + int64(startTime)*(1_000_000/userHZ)
				}
			}
		}
	}
	return time.Now().UnixMicro()
}
