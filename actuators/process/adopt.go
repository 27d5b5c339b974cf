package process

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"resil.dev/resil/desired"
)

// Environment markers of every process the supervisor starts. With them a
// restarted agent finds its children in /proc without the process table:
// the launch an intent names (killed between fork and table write), and
// strays no table row accounts for, which it stops.
const (
	envInvocation = "INVOCATION_ID"    // per launch, 32 hex digits, as systemd sets it
	envUnit       = "RESIL_UNIT"       // the unit name
	envSupervisor = "RESIL_SUPERVISOR" // stateID of the supervisor's state dir
)

// newNonce returns a launch ID (systemd's INVOCATION_ID format).
func newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// stateID names a state dir in the markers: processes of another
// supervisor (another state dir) are never touched.
func stateID(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return hex.EncodeToString(sum[:8])
}

func (s *Supervisor) markerEnv(unit, nonce string) []string {
	return []string{envInvocation + "=" + nonce, envUnit + "=" + unit, envSupervisor + "=" + s.id}
}

// fileHash identifies the content of a unit file: its recorded X-Resil-Hash
// when intact (that covers every other byte), else a hash of all its bytes.
func fileHash(data []byte) string {
	if h, intact := desired.HashOf(data); intact {
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
// carries supervisor id. Processes whose environment cannot be read (not
// ours, gone) are skipped.
func scanMarked(root, id string) []marked {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	self := os.Getpid()
	want := []byte(envSupervisor + "=" + id)
	var out []marked
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join(root, e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, want) {
			continue
		}
		m := marked{pid: pid}
		ok := false
		for _, kv := range bytes.Split(env, []byte{0}) {
			k, v, _ := strings.Cut(string(kv), "=")
			switch k {
			case envSupervisor:
				ok = v == id
			case envUnit:
				m.unit = v
			case envInvocation:
				m.nonce = v
			}
		}
		if !ok || m.nonce == "" {
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

// resolveIntent fills in the PID of an intent (a row written before its
// fork): the launch's group leader, found by its INVOCATION_ID, or else by
// its stdout/stderr FIFO (a process may rewrite its environment). It
// reports false when the launch does not run.
func resolveIntent(root string, rec *procRecord, marks []marked) bool {
	for _, m := range marks {
		if m.nonce == rec.Nonce && m.pid == m.pgid {
			rec.PID, rec.PGID, rec.StartTime = m.pid, m.pgid, m.start
			return true
		}
	}
	if rec.Stdout == "" {
		return false
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		for _, fd := range []string{"1", "2"} {
			l, err := os.Readlink(filepath.Join(root, e.Name(), "fd", fd))
			if err != nil || (l != rec.Stdout && l != rec.Stderr) {
				continue
			}
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

// resolveIntents resolves every intent in table (see resolveIntent).
// Unresolved intents keep PID 0: they name nothing that runs.
func resolveIntents(root string, table map[string]procRecord, marks []marked) {
	for name, rec := range table {
		if rec.PID == 0 && rec.Nonce != "" && resolveIntent(root, &rec, marks) {
			table[name] = rec
		}
	}
}

// stopStrays stops every marked process whose launch is not one the
// supervisor adopted: a second process of a unit, the leftover of a launch
// whose table row was lost, a pre-start check orphaned by a kill -9. Their
// groups get SIGTERM, then SIGKILL after 5 s.
func (s *Supervisor) stopStrays(marks []marked, keep map[string]bool, keepGroups map[int]bool) {
	var strays []marked
	for _, m := range marks {
		if !keep[m.nonce] {
			strays = append(strays, m)
		}
	}
	if len(strays) == 0 {
		return
	}
	own := unix.Getpgrp()
	signal := func(sig syscall.Signal) {
		groups := map[int]bool{}
		for _, m := range strays {
			if m.pgid > 1 && m.pgid != own && !keepGroups[m.pgid] && !groups[m.pgid] {
				groups[m.pgid] = true
				signalGroup(m.pgid, sig)
			}
			if st, err := readProcStat(s.procRoot, m.pid); err == nil && st.StartTime == m.start {
				_ = unix.Kill(m.pid, sig)
			}
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
		s.log.Warn("stopping stray process", zap.String("unit", m.unit), zap.Int("pid", m.pid), zap.Int("pgid", m.pgid), zap.String("invocation", m.nonce))
	}
	signal(syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for alive() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	signal(syscall.SIGKILL)
	for _, m := range strays {
		reapIfChildNow(m.pid)
	}
}

// removeLeftovers deletes what a killed agent may leave behind: temporary
// files of atomic writes (".NAME<digits>" from renameio, status.json.tmp)
// and output FIFOs of processes nobody runs any more (keep: the FIFOs of
// adopted processes).
func (s *Supervisor) removeLeftovers(keep map[string]bool) {
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
			if (strings.HasPrefix(n, ".") && len(n) > 1 && isDigit(n[len(n)-1])) || (d == s.dir && n == "status.json.tmp") {
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
