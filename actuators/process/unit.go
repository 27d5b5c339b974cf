package process

import (
	"strings"
	"sync"
	"time"

	"resil.dev/resil/actuators"
)

// Results, as systemd's Result= property.
const (
	ResultSuccess       = "success"
	ResultExitCode      = "exit-code"
	ResultSignal        = "signal"
	ResultCoreDump      = "core-dump"
	ResultWatchdog      = "watchdog"
	ResultStartLimitHit = "start-limit-hit"
	ResultTimeout       = "timeout"
	// ResultUnknown: an adopted process (not our child) exited; its status
	// went to its real parent. It counts as a failure for restart policies.
	ResultUnknown = "unknown"
)

// opTrigger is a timer's start request: asynchronous, ignored when the unit
// is not idle (never two runs at once), and it starts a job's retry count afresh.
const opTrigger actuators.Op = "trigger"

type opReply struct {
	res actuators.Result
	err error
}

type command struct {
	op    actuators.Op
	reply chan opReply // buffered 1; nil for fire-and-forget
	// taken, when set, is closed once the unit's goroutine has acted on
	// the command (a start has begun: the unit is activating, active or
	// failed), without waiting for the command's outcome.
	taken chan struct{}
	// auto (OpStart at agent start only): the unit's last process died
	// while no agent ran; this start is an automatic restart, counted on
	// top of nRestarts, the count recorded with that process, made after
	// its restart delay (runner.queue).
	auto      bool
	nRestarts uint32
	// owed (OpStart at agent start only): the start finishes a restart
	// the last agent began and was killed in (procRecord.Owed).
	owed bool
	// atRun: the start is the supervisor's own, before any pass
	// (startEnabled's): held until Release
	// (Options.HoldUntilRelease). A timer then reports its own catch-up
	// decision (a pass's start reports the planner's).
	atRun bool
	// thenStart (OpResetFailed of a reset request): start the unit once
	// its failed state is cleared, as one step.
	thenStart bool
}

// done closes taken, if set.
func (c command) done() {
	if c.taken != nil {
		close(c.taken)
	}
}

func (c command) answer(res actuators.Result, err error) {
	if c.reply != nil {
		c.reply <- opReply{res, err}
	}
}

// status is what Observe reports for a unit; guarded by unit.mu.
type status struct {
	ActiveState    string
	SubState       string
	Result         string
	NRestarts      uint32
	MainPID        int
	ExecMainStatus int32
	ExecMainStart  time.Time
	ExecMainExit   time.Time // zero while the process started last has not exited
	// ActiveExit is when the unit last left the active state (active,
	// reloading): a stop leaves it before the process exits, a process
	// that exits by itself before (observed.Unit.ExitedOnItsOwn).
	ActiveExit time.Time
	StatusText string
	// SpecHash is the hash (fileHash) of the unit file the main process was
	// started from; empty while no process runs. Observe compares it with
	// the file on disk (observed.Unit.StaleProcess).
	SpecHash string
	// ProcHash is procHash of that file's spec (see procRecord.ProcHash).
	ProcHash string
	// RunHash is the SpecHash of the last run's process, kept after it
	// exited ("" when unknown): a run that exited by itself from another
	// file than the one on disk is stale (observed.Unit.StaleRun).
	RunHash string
	// Owed: the main process was started by a restart job, or finishes
	// one a killed agent began (procRecord.Owed).
	Owed bool
	// Timers.
	LastTrigger time.Time
	NextElapse  time.Time
	// Missed counts timer runs skipped because they were later than maxLateness.
	Missed int
}

func activeOrReloading(s string) bool { return s == "active" || s == "reloading" }

// unit is one loaded unit and the goroutine that runs it.
type unit struct {
	s    *Supervisor
	name string
	cmds chan command

	mu   sync.Mutex
	spec *Spec  // latest loaded spec; a running process keeps the one it started with
	file []byte // bytes the spec was loaded from
	hash string // fileHash(file)
	st   status
}

func (u *unit) loaded() *Spec {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.spec
}

// current returns the latest loaded spec and the hash of the file it was
// loaded from, read together so a start records what it really runs.
func (u *unit) current() (*Spec, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.spec, u.hash
}

func (u *unit) status() status {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st
}

// update changes the unit's status and wakes the loop. A service that
// becomes failed is noted in the process table (Supervisor.noteIdle)
// first; one that stops being failed (reset-failed, a start) loses that
// record.
func (u *unit) update(f func(st *status)) {
	u.mu.Lock()
	was := u.st.ActiveState
	f(&u.st)
	now, res, hash := u.st.ActiveState, u.st.Result, u.hash
	if activeOrReloading(was) && !activeOrReloading(now) {
		u.st.ActiveExit = u.s.now()
	}
	st := u.st
	u.mu.Unlock()
	if (was == "failed") != (now == "failed") && strings.HasSuffix(u.name, ".service") {
		if now == "failed" {
			if res == "" {
				res = ResultUnknown
			}
			u.s.noteIdle(u.name, lastRun(idleFailed, res, hash, st))
		} else {
			u.s.forgetIdle(u.name)
		}
	}
	u.s.wake()
}
