package process

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"resil.dev/resil/internal/ownmark"
)

// Adoption (the whole story; the table is table.go, the runner's side
// runner_adopt.go):
//
// Processes outlive the agent: a new agent adopts every process whose PID
// and /proc start time match the table (watching it with a pidfd, since it
// is not its child), re-opens its output FIFOs and re-binds its notify
// socket; what it cannot adopt it stops before starting anew. The table is
// crash-safe whatever instant the agent is killed: a main process's row is
// written (temp file, fsync, rename; one writer at a time) as an intent,
// PID 0, before the fork, and with its PID after. Every child carries
// INVOCATION_ID (the launch ID, as systemd sets it), RESIL_UNIT and
// RESIL_SUPERVISOR (the supervisor ID) in its environment: on start the
// agent scans /proc/*/environ, resolves an intent to the launch's group
// leader (or to the process holding its stdout FIFO, should it have
// rewritten its environment), and stops every marked process that is not of
// an adopted launch (strays: a lost row, an orphaned pre-start check). A
// marked process counts only when its real and effective UIDs are root or
// its unit's user (anyone may copy an environment); a stray's group is
// signalled only when its leader is of the same launch, otherwise the stray
// alone, and never a group none of the strays is still in (a reused ID).
// (The first agent after an upgrade from hash-derived IDs also accepts
// those.) A row being stopped when the agent was killed is finished: a
// stop stands even when the process exited meanwhile (the unit is not
// started again), a restart is completed. It also removes temporary files
// and FIFOs a killed agent left behind. Ready is closed only once every
// unit has its first status (adopted processes active), so the agent's
// first pass never takes an adopted service for stopped: it neither starts
// it again nor prunes it without a stop. So a
// service whose manifest did not change keeps its PID across any number of
// kill -9s, and none runs twice.

// Environment markers of every process the supervisor starts. With them a
// restarted agent finds its children in /proc without the process table:
// the launch an intent names (killed between fork and table write), and
// strays no table row accounts for, which it stops.
const (
	envInvocation = "INVOCATION_ID"    // per launch, 32 hex digits, as systemd sets it
	envUnit       = "RESIL_UNIT"       // the unit name
	envSupervisor = "RESIL_SUPERVISOR" // the supervisor ID (idFile): a secret of the state dir
)

// newNonce returns a launch ID (systemd's INVOCATION_ID format).
func newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// legacyStateID is the RESIL_SUPERVISOR of processes started before the
// supervisor ID became a secret (idFile): a hash of the state dir, which
// anyone can compute. It is accepted only by the agent that creates idFile
// (the upgrade), so that agent still finds the old agent's processes.
func legacyStateID(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return hex.EncodeToString(sum[:8])
}

// idFile holds the supervisor ID: a random secret (so no other user can
// mark a process as ours), created once per state dir, mode 0600.
const idFile = "supervisor-id"

// readStateID returns the supervisor ID stored in dir ("" when none yet).
func readStateID(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, idFile))
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if len(id) != 32 {
		return "", fmt.Errorf("%s: malformed supervisor id", filepath.Join(dir, idFile))
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", fmt.Errorf("%s: malformed supervisor id", filepath.Join(dir, idFile))
	}
	return id, nil
}

// ensureStateID returns dir's supervisor ID, creating it when there is none
// (created reports that): written to a temporary file, then linked into
// place, so concurrent creators agree on one ID and nobody ever reads a
// partial one.
func ensureStateID(dir string) (id string, created bool, err error) {
	p := filepath.Join(dir, idFile)
	if id, err := readStateID(dir); err == nil {
		return id, false, os.Chmod(p, 0o600)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	tmp, err := os.CreateTemp(dir, "."+idFile+"-*.tmp")
	if err != nil {
		return "", false, err
	}
	defer os.Remove(tmp.Name())
	id = newNonce()
	_, err = tmp.WriteString(id + "\n")
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", false, err
	}
	if err := os.Link(tmp.Name(), p); errors.Is(err, fs.ErrExist) {
		id, err := readStateID(dir)
		return id, false, err
	} else if err != nil {
		return "", false, err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return id, true, nil
}

func (s *Supervisor) markerEnv(unit, nonce string) []string {
	s.mu.Lock()
	id := s.id // makeDirs sets it again on every Apply
	s.mu.Unlock()
	return []string{envInvocation + "=" + nonce, envUnit + "=" + unit, envSupervisor + "=" + id}
}

// fileHash identifies the content of a unit file: its recorded X-Resil-Hash
// when intact (that covers every other byte), else a hash of all its bytes.
func fileHash(data []byte) string {
	if h, intact := ownmark.HashOf(data); intact {
		return h
	}
	sum := sha256.Sum256(data)
	return "file:" + hex.EncodeToString(sum[:12])
}

// marked is a live process carrying this supervisor's markers.
type marked struct {
	pid, pgid int
	start     uint64
	unit      string
	nonce     string
}

// scanMarked lists the live processes under root (/proc) whose environment
// carries one of the supervisor ids and whose real and effective UIDs
// (/proc/PID/status) both pass owner: a process of another user than root
// or its unit's user may forge the markers, so it is never ours. Processes
// whose environment cannot be read (not ours, gone) are skipped.
func scanMarked(root string, ids []string, owner func(unit string, uid int) bool) []marked {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []marked
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := readEnviron(root, pid)
		if err != nil || !bytes.Contains(env, []byte(envSupervisor+"=")) {
			continue
		}
		m := marked{pid: pid}
		ok := false
		for _, kv := range bytes.Split(env, []byte{0}) {
			k, v, _ := strings.Cut(string(kv), "=")
			switch k {
			case envSupervisor:
				ok = v != "" && slices.Contains(ids, v)
			case envUnit:
				m.unit = v
			case envInvocation:
				m.nonce = v
			}
		}
		if !ok || m.nonce == "" {
			continue
		}
		ruid, euid, err := readProcUIDs(root, pid)
		if err != nil || !owner(m.unit, ruid) || !owner(m.unit, euid) {
			continue
		}
		st, err := readProcStat(root, pid)
		if err != nil || st.State == 'Z' {
			continue
		}
		m.pgid, m.start = st.PGID, st.StartTime
		out = append(out, m)
	}
	return out
}

// readProcUIDs returns the real and effective UID of root/PID/status.
func readProcUIDs(root string, pid int) (ruid, euid int, err error) {
	b, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(l, "Uid:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			break
		}
		if ruid, err = strconv.Atoi(f[0]); err == nil {
			euid, err = strconv.Atoi(f[1])
		}
		return ruid, euid, err
	}
	return 0, 0, fmt.Errorf("%s/%d/status: no Uid line", root, pid)
}

// markIDs are the supervisor ids scanMarked accepts: the secret, and
// legacyStateID only on the agent run that created the secret (upgrade) or,
// for a read-only observer, while there is no secret yet.
func (s *Supervisor) markIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.id == "":
		return []string{legacyStateID(s.dir)}
	case s.migrating:
		return []string{s.id, legacyStateID(s.dir)}
	}
	return []string{s.id}
}

// scan lists this supervisor's marked processes (see scanMarked).
func (s *Supervisor) scan() []marked {
	users := map[string]int{}
	return scanMarked(s.procRoot, s.markIDs(), func(unit string, uid int) bool {
		if uid == 0 {
			return true
		}
		u, ok := users[unit]
		if !ok {
			u = s.unitUID(unit)
			users[unit] = u
		}
		return u >= 0 && uid == u
	})
}

// unitUID is the UID a unit's processes run as by its unit file on disk
// (-1: none but root, or unknown).
func (s *Supervisor) unitUID(unit string) int {
	if unit == "" || strings.ContainsAny(unit, "/\x00") || strings.HasPrefix(unit, ".") {
		return -1
	}
	data, err := os.ReadFile(filepath.Join(s.unitDir, unit))
	if err != nil {
		return -1
	}
	spec, err := ParseUnitFile(data)
	if err != nil || spec.User == "" {
		return -1
	}
	id, err := resolveIdentity(spec.User, spec.Group)
	if err != nil {
		return -1
	}
	return id.uid
}

// resolveIntent fills in the PID of an intent (a row written before its
// fork): the launch's group leader, found by its INVOCATION_ID, or else by
// its stdout/stderr FIFO (a process may rewrite its environment; out
// indexes every process's fd 1 and 2, nil: read for this call). It
// reports false when the launch does not run.
func resolveIntent(root string, rec *procRecord, marks []marked, out *outputIndex) bool {
	for _, m := range marks {
		if m.nonce == rec.Nonce && m.pid == m.pgid {
			rec.PID, rec.PGID, rec.StartTime = m.pid, m.pgid, m.start
			return true
		}
	}
	if rec.Stdout == "" {
		return false
	}
	if out == nil {
		out = &outputIndex{root: root}
	}
	for _, path := range []string{rec.Stdout, rec.Stderr} {
		for _, pid := range out.holders(path) {
			st, err := readProcStat(root, pid)
			if err != nil || st.State == 'Z' || st.PGID != pid {
				continue
			}
			rec.PID, rec.PGID, rec.StartTime = pid, pid, st.StartTime
			return true
		}
	}
	return false
}

// outputIndex maps what every process's fd 1 and 2 point to onto those
// processes, read from /proc once, on first use, for all the intents of
// one resolveIntents: a kill -9 in a batch of starts leaves an intent per
// unit of the batch (preIntents), each of which scanned /proc alone.
type outputIndex struct {
	root   string
	read   bool
	byPath map[string][]int
}

// holders returns the PIDs (in /proc order) whose fd 1 or 2 is path.
func (x *outputIndex) holders(path string) []int {
	if path == "" {
		return nil
	}
	if !x.read {
		x.read = true
		x.byPath = map[string][]int{}
		ents, _ := os.ReadDir(x.root)
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			prev := ""
			for _, fd := range []string{"1", "2"} {
				l, err := os.Readlink(filepath.Join(x.root, e.Name(), "fd", fd))
				if err != nil || l == prev {
					continue
				}
				prev = l
				x.byPath[l] = append(x.byPath[l], pid)
			}
		}
	}
	return x.byPath[path]
}

// resolveIntents resolves every intent in table (see resolveIntent), and
// the reservation (procRecord.Next) of every row whose process is gone: an
// agent killed between an automatic restart's fork and its table write
// leaves the row of the process that exited, and the launch it reserved
// replaces it. Unresolved intents keep PID 0: they name nothing that runs.
// An intent without a start time (a batch's, written before the batch's
// forks: preIntents) gets its process's.
func resolveIntents(root string, table map[string]procRecord, marks []marked) {
	out := &outputIndex{root: root}
	for name, rec := range table {
		switch {
		case rec.PID == 0 && rec.Nonce != "":
			if resolveIntent(root, &rec, marks, out) {
				if rec.Started == 0 {
					rec.Started = procStarted(root, rec.StartTime)
				}
				table[name] = rec
			}
		case rec.PID > 0 && rec.Next != nil && rec.Next.Nonce != "" && !procAlive(root, rec):
			nx := *rec.Next
			if resolveIntent(root, &nx, marks, out) {
				nx.Started = procStarted(root, nx.StartTime)
				table[name] = nx
			}
		}
	}
}

// procAlive reports whether rec's process still runs: same PID, same
// start time, not a zombie.
func procAlive(root string, rec procRecord) bool {
	st, err := readProcStat(root, rec.PID)
	return err == nil && st.StartTime == rec.StartTime && st.State != 'Z'
}

// stopStrays stops every marked process whose launch is not one the
// supervisor adopted: a second process of a unit, the leftover of a launch
// whose table row was lost, a pre-start check orphaned by a kill -9. They
// get SIGTERM, then SIGKILL after 5 s (or none when quit closes first: the
// next agent finishes). A stray's process group is signalled only when its
// leader is a stray of the same launch (a marked process may have joined
// another group of its session, say root's); otherwise the stray alone, by
// pidfd after checking its start time. Before each signal a group must
// still hold one of those strays (same PID, same start time), so a group ID
// reused meanwhile is never signalled.
func (s *Supervisor) stopStrays(quit <-chan struct{}, marks []marked, keep map[string]bool, keepGroups map[int]bool) {
	var strays []marked
	for _, m := range marks {
		if !keep[m.nonce] {
			strays = append(strays, m)
		}
	}
	if len(strays) == 0 {
		return
	}
	byPID := map[int]marked{}
	for _, m := range marks {
		byPID[m.pid] = m
	}
	own := unix.Getpgrp()
	groups := map[int][]marked{} // pgid -> its strays, for groups led by one of the same launch
	for _, m := range strays {
		if l, ok := byPID[m.pgid]; ok && l.nonce == m.nonce && !keep[l.nonce] && m.pgid > 1 && m.pgid != own && !keepGroups[m.pgid] {
			groups[m.pgid] = append(groups[m.pgid], m)
		}
	}
	signal := func(sig syscall.Signal) {
		for pgid, members := range groups {
			if groupHolds(s.procRoot, pgid, members) {
				signalGroup(pgid, sig)
			}
		}
		for _, m := range strays {
			signalProcess(s.procRoot, m.pid, m.start, sig)
		}
	}
	alive := func() bool {
		for _, m := range strays {
			reapIfChildNow(m.pid)
			if st, err := readProcStat(s.procRoot, m.pid); err == nil && st.StartTime == m.start && st.State != 'Z' {
				return true
			}
		}
		return false
	}
	for _, m := range strays {
		s.log.Warn("stopping stray process", zap.String("unit", m.unit), zap.Int("pid", m.pid), zap.Int("pgid", m.pgid),
			zap.Bool("group", len(groups[m.pgid]) > 0), zap.String("invocation", m.nonce))
	}
	signal(syscall.SIGTERM)
	if !waitGone(quit, 5*time.Second, alive) {
		return
	}
	signal(syscall.SIGKILL)
	for _, m := range strays {
		reapIfChildNow(m.pid)
	}
}

// waitGone polls gone-ness (alive false) until timeout. It reports false
// when quit closed first.
func waitGone(quit <-chan struct{}, timeout time.Duration, alive func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for alive() {
		select {
		case <-quit:
			return false
		case <-deadline.C:
			return true
		case <-tick.C:
		}
	}
	return true
}

// groupHolds reports whether process group pgid still holds one of members
// (same PID, same start time, not a zombie): then it is the group they were
// found in, since Linux does not reuse the ID of a group that exists.
func groupHolds(root string, pgid int, members []marked) bool {
	for _, m := range members {
		if st, err := readProcStat(root, m.pid); err == nil && st.PGID == pgid && st.StartTime == m.start && st.State != 'Z' {
			return true
		}
	}
	return false
}

// signalProcess signals pid if it is still the process that started at
// start: through a pidfd opened before the check, so the signal cannot
// reach a process that reused the PID after it.
func signalProcess(root string, pid int, start uint64, sig syscall.Signal) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if !errors.Is(err, unix.ENOSYS) {
			return // gone
		}
		fd = -1
	} else {
		defer unix.Close(fd)
	}
	if st, err := readProcStat(root, pid); err != nil || st.StartTime != start {
		return
	}
	if fd >= 0 {
		_ = unix.PidfdSendSignal(fd, sig, nil, 0)
		return
	}
	_ = unix.Kill(pid, sig)
}

// removeLeftovers deletes what a killed agent may leave behind: temporary
// files of atomic writes (".NAME<digits>" from renameio, status.json.tmp)
// and output FIFOs of processes nobody runs any more (keep: the FIFOs of
// adopted processes).
func (s *Supervisor) removeLeftovers(keep map[string]bool) {
	s.writeMu.Lock() // no write of ours is under way (see writeMu)
	defer s.writeMu.Unlock()
	for _, d := range []string{s.dir, s.unitDir, s.resetDir, filepath.Join(s.dir, "timers")} {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			n := e.Name()
			if !e.Type().IsRegular() {
				continue
			}
			temp := strings.HasPrefix(n, ".") && len(n) > 1 && isDigit(n[len(n)-1])
			if d == s.dir {
				// The state dir is shared with the agent (lastgood.json,
				// the event store, running their own atomic writes right
				// now): only the supervisor's own files' leftovers go.
				temp = temp && (strings.HasPrefix(n, ".processes.json") || strings.HasPrefix(n, ".status.json"))
			}
			if temp || (d == s.dir && n == "status.json.tmp") ||
				(d == s.dir && strings.HasPrefix(n, "."+idFile+"-") && strings.HasSuffix(n, ".tmp")) {
				os.Remove(filepath.Join(d, n))
			}
		}
	}
	ents, err := os.ReadDir(s.runDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(s.runDir, e.Name())
		if (strings.HasSuffix(p, ".out") || strings.HasSuffix(p, ".err")) && !keep[p] {
			os.Remove(p)
		}
	}
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// readEnviron reads root/PID/environ. A process in the middle of an execve
// reads as an empty environment for a moment (the kernel is replacing its
// memory): a launch caught then by a restarting agent would be missed (an
// intent taken for one that never ran, a second process started; seen as a
// flaky test). So an empty environment of a process that is not a kernel
// thread is read again a few times, briefly.
func readEnviron(root string, pid int) ([]byte, error) {
	path := filepath.Join(root, strconv.Itoa(pid), "environ")
	env, err := os.ReadFile(path)
	if err != nil || len(env) > 0 {
		return env, err
	}
	if st, serr := readProcStat(root, pid); serr != nil || st.PPID == 2 || pid == 2 || st.State == 'Z' {
		return env, err // kernel threads (children of kthreadd) and zombies have none
	}
	for range 5 {
		time.Sleep(2 * time.Millisecond)
		if env, err = os.ReadFile(path); err != nil || len(env) > 0 {
			return env, err
		}
	}
	return env, err
}
