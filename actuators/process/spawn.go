package process

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"resil.dev/resil/internal/ident"
)

// defaultPath is systemd's PATH for system services.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// identity is the resolved user/group of a unit (nil credential: the agent's own).
type identity struct {
	cred *syscall.Credential
	env  []string // HOME, USER, LOGNAME, SHELL
	uid  int      // -1 when not set
	gid  int
}

func resolveIdentity(userName, groupName string) (identity, error) {
	id := identity{uid: -1, gid: -1}
	r, err := ident.Resolve(userName, groupName)
	if err != nil || r.Cred == nil {
		return id, err
	}
	if u := r.User; u != nil {
		id.env = append(id.env, "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username, "SHELL=/bin/sh")
	}
	id.uid, id.gid, id.cred = int(r.Cred.Uid), int(r.Cred.Gid), r.Cred
	return id, nil
}

// buildEnv returns the environment of a unit's process: systemd's base
// (PATH, LANG), the user's identity, environment files, the manifest's
// environment, then extra (NOTIFY_SOCKET, WATCHDOG_USEC), later wins.
func buildEnv(spec *Spec, id identity, extra []string) ([]string, error) {
	m := map[string]string{"PATH": defaultPath}
	if v, ok := os.LookupEnv("LANG"); ok {
		m["LANG"] = v
	}
	set := func(kv string) {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			m[k] = v
		}
	}
	for _, kv := range id.env {
		set(kv)
	}
	for _, f := range spec.EnvironmentFiles {
		optional := strings.HasPrefix(f, "-")
		kvs, err := readEnvFile(strings.TrimPrefix(f, "-"))
		if err != nil {
			if optional && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		for _, kv := range kvs {
			set(kv)
		}
	}
	for k, v := range spec.Environment {
		m[k] = v
	}
	for _, kv := range extra {
		set(kv)
	}
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env, nil
}

// readEnvFile reads KEY=VALUE lines; blank lines and # or ; comments are
// skipped, and one level of matching quotes around VALUE is removed.
func readEnvFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read environment file: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k = strings.TrimSpace(strings.TrimPrefix(k, "export "))
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out = append(out, k+"="+v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read environment file %s: %w", path, err)
	}
	return out, nil
}

// lookPath finds argv0 on the unit's PATH.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q not found in PATH", file)
}

// procRecord is one row of the process table (processes.json): enough to
// find the process again after the agent restarted.
type procRecord struct {
	Unit string `json:"unit"`
	// PID is 0 in an intent: written before the fork, so an agent killed
	// between fork and table write still knows the launch (by Nonce).
	PID  int `json:"pid"`
	PGID int `json:"pgid"`
	// StartTime is /proc/PID/stat field 22.
	StartTime uint64 `json:"startTime"`
	// Started is the wall-clock start, microseconds since the epoch.
	Started int64 `json:"started"`
	// SpecHash is fileHash of the unit file the process was started from.
	SpecHash string `json:"specHash"`
	// ProcHash is procHash of that file's spec: what the process depends
	// on. A file with another SpecHash but the same ProcHash changed only
	// what applies on reload (restart policy, stop timeout); empty in
	// tables written before it existed.
	ProcHash string `json:"procHash,omitempty"`
	// Nonce is the launch's INVOCATION_ID (see markerEnv); empty in tables
	// written before it existed.
	Nonce string `json:"nonce,omitempty"`
	// Stopping: the agent asked it to stop (SIGTERM sent or about to be).
	Stopping bool `json:"stopping,omitempty"`
	// StopReason says why it is Stopping: stopStop, or stopRestart (start
	// it again once it exited); empty in older tables (a stop).
	StopReason string `json:"stopReason,omitempty"`
	Stdout     string `json:"stdout,omitempty"`
	Stderr     string `json:"stderr,omitempty"`
	// NRestarts is the unit's automatic restart count (systemd's
	// NRestarts) when this process started, so the count, and the restart
	// ledger built on it, survive a kill -9 of the agent.
	NRestarts uint32 `json:"nRestarts,omitempty"`
	// Owed: the process was started by a restart job (the agent's), or
	// finishes one an earlier agent began and was killed in
	// (observed.Unit.OwedRestart).
	Owed bool `json:"owed,omitempty"`
	// Next reserves the unit's next automatic restart (a service whose
	// policy restarts): its launch ID, output FIFOs, spec and count,
	// written with this process's row. The restart then forks without a
	// table write before the fork (the crash → restart path; its row is
	// written after): an agent killed between that fork and that write
	// leaves this row, and the next agent adopts the launch by Next.Nonce
	// (resolveIntents), count included. Started is 0 in a reservation.
	Next *procRecord `json:"next,omitempty"`
}

// Why a process is being stopped (procRecord.StopReason).
const (
	stopStop    = "stop"
	stopRestart = "restart"
)

func (r procRecord) stopReason() string {
	if r.StopReason == stopRestart {
		return stopRestart
	}
	return stopStop
}

// child is a running process the supervisor forked or adopted.
type child struct {
	rec  procRecord
	exit chan exitStatus // one status, buffered
	// readers are the FIFO read ends the copiers drain; closed to abandon.
	readers []*os.File
}

// launch describes one fork.
type launch struct {
	argv  []string
	env   []string
	dir   string
	id    identity
	lock  *os.File // passed as fd 3 when set
	out   string   // stdout FIFO path
	errp  string   // stderr FIFO path (out: the same FIFO)
	stamp time.Time
}

// forkExec starts l in its own process group, registered with the reaper.
func (s *Supervisor) forkExec(l launch) (*child, error) {
	path, err := lookPath(l.argv[0], l.env)
	if err != nil {
		return nil, err
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer devnull.Close()
	var readers, childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
	}()
	paths := []string{l.out}
	if l.errp != l.out {
		paths = append(paths, l.errp)
	}
	for _, p := range paths {
		r, w, err := makeFIFO(p)
		if err != nil {
			for _, f := range readers {
				f.Close()
			}
			return nil, err
		}
		readers = append(readers, r)
		childEnds = append(childEnds, w)
	}
	// One FIFO (stderr follows stdout, errPath) is both fd 1 and fd 2.
	files := []uintptr{devnull.Fd(), childEnds[0].Fd(), childEnds[len(childEnds)-1].Fd()}
	if l.lock != nil {
		files = append(files, l.lock.Fd())
	}
	attr := &syscall.ProcAttr{
		Dir:   l.dir,
		Env:   l.env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true, Credential: l.id.cred},
	}
	exit := make(chan exitStatus, 1)
	pid, err := s.reaper.fork(func() (int, error) { return syscall.ForkExec(path, l.argv, attr) }, exit)
	if err != nil {
		for _, f := range readers {
			f.Close()
		}
		os.Remove(l.out)
		os.Remove(l.errp)
		return nil, fmt.Errorf("exec %s: %w", l.argv[0], err)
	}
	rec := procRecord{PID: pid, PGID: pid, Started: l.stamp.UnixMicro(), Stdout: l.out, Stderr: l.errp}
	if st, err := readProcStat(s.procRoot, pid); err == nil {
		rec.StartTime = st.StartTime
	}
	return &child{rec: rec, exit: exit, readers: readers}, nil
}

// signalGroup sends sig to the process group pgid (ESRCH: already gone).
func signalGroup(pgid int, sig syscall.Signal) {
	if pgid > 1 {
		_ = unix.Kill(-pgid, sig)
	}
}

// tryLock opens path and tries to take an exclusive flock on it:
//
//	(f, false, nil) - locked; pass f to the child (fd 3), which holds the lock
//	                  for its whole life; the agent closes its copy after fork
//	(nil, true, nil) - someone else holds it; try again later
//	(nil, false, err) - the lock file cannot be used
//
// The file is opened as the service's user (cred; nil: the agent's own), as
// systemd's unit opens it in the service's shell: opened as root, a lock
// path the service controls could name, through a symlink, any file on
// the host, which the service would then hold open for writing as fd 3.
func tryLock(path string, cred *syscall.Credential) (*os.File, bool, error) {
	f, err := openAs(path, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o644, cred)
	if err != nil {
		return nil, false, fmt.Errorf("open lock %s: %w", path, err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return f, false, nil
	}
	f.Close()
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, true, nil
	}
	return nil, false, fmt.Errorf("flock %s: %w", path, err)
}

// openAs opens path with the file-system identity of cred (nil: the
// agent's own): on a thread of its own whose fsuid, fsgid and supplementary
// groups are cred's, so the kernel checks the path (symlinks included) as
// it would for the service. Those credentials are per thread on Linux (the
// raw system calls, not the libc ones that change every thread); the
// goroutine ends still locked to the thread, so Go discards the thread
// instead of reusing it with the service's identity.
func openAs(path string, flag int, perm os.FileMode, cred *syscall.Credential) (*os.File, error) {
	if cred == nil || (cred.Uid == 0 && cred.Gid == 0) {
		return os.OpenFile(path, flag, perm)
	}
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		groups := make([]int, len(cred.Groups))
		for i, g := range cred.Groups {
			groups[i] = int(g)
		}
		// x/sys's wrappers are the raw, per-thread system calls.
		if err := unix.Setgroups(groups); err != nil {
			ch <- result{nil, fmt.Errorf("setgroups: %w", err)}
			return
		}
		_ = unix.Setfsgid(int(cred.Gid))
		_ = unix.Setfsuid(int(cred.Uid))
		// setfsuid reports no error: check that both took.
		if uid, _ := unix.SetfsuidRetUid(-1); uid != int(cred.Uid) {
			ch <- result{nil, fmt.Errorf("setfsuid %d did not take", cred.Uid)}
			return
		}
		if gid, _ := unix.SetfsgidRetGid(-1); gid != int(cred.Gid) {
			ch <- result{nil, fmt.Errorf("setfsgid %d did not take", cred.Gid)}
			return
		}
		f, err := os.OpenFile(path, flag, perm)
		ch <- result{f, err}
	}()
	r := <-ch
	return r.f, r.err
}
