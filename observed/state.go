package observed

import "time"

// State is everything the planner needs to know about the host, read in one
// pass. It is plain data: the planner does no I/O.
type State struct {
	// Backend is "systemd" or "process".
	Backend string `json:"backend"`
	// UnitDir is where unit files live (systemd: /etc/systemd/system; process:
	// <state-dir>/units). Paths below are absolute.
	UnitDir string `json:"unitDir"`
	// Units are the units the desired set names plus every unit carrying
	// resil's ownership marker in UnitDir (prune candidates), by unit name.
	Units map[string]*Unit `json:"units"`
	// Manager is systemd's manager state (host watchdog); nil when not read.
	Manager *Manager `json:"manager,omitempty"`
	// ReadAt is when the observation finished.
	ReadAt time.Time `json:"readAt"`
	// UnitsLoadStart is when systemd last (re)loaded its units, µs since
	// the epoch; 0 when this observation did not read it.
	UnitsLoadStart uint64 `json:"unitsLoadStart,omitempty"`
	// CacheDrift lists, by unit, what a full read found different from a
	// backend's watch-fed cache (a change whose signal the cache missed);
	// empty without a cache or when the cache was right.
	CacheDrift map[string]string `json:"cacheDrift,omitempty"`
}

// Unit is one unit as the backend sees it. For a unit that does not exist,
// LoadState is "not-found" and File is nil.
type Unit struct {
	Name string `json:"name"`
	// Path is UnitDir/Name.
	Path string `json:"path"`
	// File is the content at Path; nil when there is no file.
	File []byte `json:"-"`
	// FileModTime is File's modification time, µs since the epoch (0:
	// no file, or not read). With ExecMainStartTimestamp it tells whether
	// a hand edit of the file came after the running process started
	// (reconcile: an edit the process never ran is restored without a
	// restart).
	FileModTime uint64 `json:"fileModTime,omitempty"`
	// FileDeleted says the backend still has the unit loaded from Path
	// while no file is there: it was deleted after the backend's last load
	// (systemd: FragmentPath is Path, read for a loaded unit without a
	// file; the process backend: the supervisor holds the spec it loaded
	// from Path). The unit runs the definition it loaded then.
	FileDeleted bool `json:"fileDeleted,omitempty"`
	// Owner is the object ID from the file's X-Resil-Object marker ("" when not ours).
	Owner string `json:"owner,omitempty"`

	LoadState   string `json:"loadState"`   // loaded, not-found, masked, error
	ActiveState string `json:"activeState"` // active, inactive, failed, activating, deactivating, reloading
	SubState    string `json:"subState"`    // running, dead, exited, auto-restart, ...
	Result      string `json:"result"`      // success, exit-code, signal, watchdog, start-limit-hit, ...
	// UnitFileState is the enablement as the unit files and symlinks on
	// disk say now (systemd: ListUnitFilesByPatterns, not the property of
	// the same name, which only daemon-reload refreshes): enabled,
	// enabled-runtime, disabled, static, masked, linked, ...; "" when the
	// name has no unit file.
	UnitFileState string `json:"unitFileState"`
	// InstallLinks are the dependency directories of the unit directory
	// (TARGET.wants, .requires, .upholds) holding a symlink of the unit's
	// name to its file, sorted: where enabling put it. Set, with
	// InstallLinksKnown, only for an enabled unit whose links are all
	// there (systemd backend: its file in the unit directory is its only
	// file, with no drop-ins, and nothing else links it); the planner then
	// compares them with the unit file's [Install] section.
	InstallLinks      []string `json:"installLinks,omitempty"`
	InstallLinksKnown bool     `json:"installLinksKnown,omitempty"`
	FragmentPath      string   `json:"fragmentPath,omitempty"`
	// DropInPaths are every drop-in systemd loaded for the unit.
	DropInPaths []string `json:"dropInPaths,omitempty"`
	// DropIns holds the bytes of each drop-in on disk, by path (those of
	// DropInPaths and of PendingDropIns).
	DropIns map[string][]byte `json:"-"`
	// PendingDropIns are drop-ins on disk that systemd has not loaded
	// (written since its last daemon-reload): the next reload, anyone's,
	// loads them. Their unit has NeedDaemonReload set.
	PendingDropIns []string `json:"pendingDropIns,omitempty"`
	// NeedDaemonReload is systemd's "unit file changed on disk" flag, or a
	// drop-in on disk that systemd has not loaded (systemd 252 notices one
	// in a directory created since its last load only once its path cache
	// is refreshed, so its flag alone is not a stable reading).
	NeedDaemonReload bool `json:"needDaemonReload,omitempty"`
	// VendorPaths are the other files systemd could load for this unit
	// name, in its search order: a vendor unit (/lib/systemd/system,
	// /usr/lib/systemd/system), a runtime, transient or generated one under
	// /run, or a symlink (alias, mask, link) at Path. Empty when resil's
	// file (or nothing) is all there is. resil writes nothing for such a
	// unit unless its manifest takes it over (spec.takeOver).
	VendorPaths []string `json:"vendorPaths,omitempty"`
	// VendorOverrides says the first of VendorPaths wins over a file at
	// Path (it comes earlier in systemd's search path, or is a symlink at
	// Path): a file resil writes would not be the one systemd loads.
	VendorOverrides bool `json:"vendorOverrides,omitempty"`
	// PendingJob says a job for the unit is queued (e.g. a timer's start
	// waiting for the units it is ordered after).
	PendingJob bool `json:"pendingJob,omitempty"`

	// StaleProcess says the unit is running a main process that was started
	// from an older version of its owned files than the one on disk now: a
	// restart was lost (the agent was killed between writing a file and
	// restarting the unit). The planner restarts it. Backends derive it from
	// what they can prove: the process backend from the unit-file hash it
	// recorded when it spawned the process, systemd from the owned files'
	// modification times against ExecMainStartTimestamp.
	StaleProcess bool `json:"staleProcess,omitempty"`
	// StaleRun says the unit's last run exited by itself (ExitedOnItsOwn)
	// and was started from an older version of its owned files than the
	// one on disk now: the run the files describe never happened (the
	// agent was killed between writing a file and starting the unit). The
	// planner does not take such a run as done: it starts the unit.
	// Backends derive it as StaleProcess, for the last run instead of a
	// running process.
	StaleRun bool `json:"staleRun,omitempty"`
	// HistoryRemembered says the run history below (start, exit, status,
	// result) is the agent's memory of the unit's last run, not systemd's:
	// systemd unloaded the unit after it (reconcile's run memory).
	HistoryRemembered bool `json:"historyRemembered,omitempty"`
	// OwedRestart says the main process was started by the agent's
	// restart job, or to finish one an earlier agent asked for and did not
	// live to see (the process backend: an agent killed while stopping the
	// old process, or right after the restart, before its ledger saw it).
	// The restart ledger counts such a restart as the agent's, not as a
	// manual one.
	OwedRestart bool `json:"owedRestart,omitempty"`
	// ProcessFileHash is the X-Resil-Hash of the owned unit file the
	// running main process was started from, where the backend records it
	// (the process backend; "" otherwise, or when that file was not an
	// intact resil file). Restoring exactly that file over an out-of-band
	// edit changes nothing the process runs: no restart.
	ProcessFileHash string `json:"processFileHash,omitempty"`

	NRestarts      uint32 `json:"nRestarts"`
	MainPID        uint32 `json:"mainPID"`
	ExecMainStatus int32  `json:"execMainStatus"`
	// ExecMainStartTimestamp is in microseconds since the epoch (0: never).
	ExecMainStartTimestamp uint64 `json:"execMainStartTimestamp,omitempty"`
	// ExecMainExitTimestamp is when the main process last exited, µs since
	// the epoch (0: it has not exited since it started). With
	// ExecMainStatus and Result it identifies one run of a timer's job or
	// one watchdog kill, so an event about it is recorded once.
	ExecMainExitTimestamp uint64 `json:"execMainExitTimestamp,omitempty"`
	// ActiveExitTimestamp is when the unit last left the active state, µs
	// since the epoch; set only while it is inactive or failed (0
	// otherwise). See ExitedOnItsOwn.
	ActiveExitTimestamp uint64 `json:"activeExitTimestamp,omitempty"`

	// Timer fields (timers only), microseconds; 0 means never/none.
	LastTriggerUSec         uint64 `json:"lastTriggerUSec,omitempty"`
	NextElapseUSecRealtime  uint64 `json:"nextElapseUSecRealtime,omitempty"`
	NextElapseUSecMonotonic uint64 `json:"nextElapseUSecMonotonic,omitempty"`
	// Triggers are the units a timer starts (systemd's Triggers property).
	Triggers []string `json:"triggers,omitempty"`
	// StampPath is a timer's Persistent= stamp file
	// (/var/lib/systemd/timers/stamp-NAME.timer; "" when the backend keeps
	// none) and StampUSec its mtime in µs since the epoch (0: no file).
	// systemd reads the stamp as the last trigger each time the timer starts.
	StampPath string `json:"stampPath,omitempty"`
	StampUSec uint64 `json:"stampUSec,omitempty"`
}

// Exists reports whether the backend knows the unit (loaded or has a file).
func (u *Unit) Exists() bool { return u != nil && (u.File != nil || u.LoadState == "loaded") }

// Active reports whether the unit is running or about to (activating, reloading).
func (u *Unit) Active() bool {
	return u != nil && (u.ActiveState == "active" || u.ActiveState == "activating" || u.ActiveState == "reloading")
}

// ExitedOnItsOwn reports whether an inactive service is inactive because
// its main process's last run ended by itself with exit status 0: the
// process exited before the unit left the active state. A stop (systemctl
// stop, the agent's, a prune) makes the unit leave the active state first
// (deactivating) and the process exit after; so does nothing else. A
// process killed by a signal (status = the signal) does not count.
// See ExitedBeforeActive for a run that never made the unit active.
func (u *Unit) ExitedOnItsOwn() bool {
	return u.ranToZero() && u.ActiveExitTimestamp != 0 && u.ExecMainExitTimestamp <= u.ActiveExitTimestamp
}

// ranToZero: an inactive service whose last main process started and
// exited with status 0 (how the unit got inactive is the callers' rule).
func (u *Unit) ranToZero() bool {
	return u != nil && u.ActiveState == "inactive" && u.ExecMainStatus == 0 && u.ExecMainStartTimestamp != 0 &&
		u.ExecMainExitTimestamp >= u.ExecMainStartTimestamp
}

// ExitedBeforeActive reports whether an inactive service's last run ended
// with exit status 0 without the unit ever becoming active: the unit did
// not leave the active state since the process started (ActiveExitTimestamp
// older than ExecMainStartTimestamp, or 0). systemd 252 shows it for a
// Type=exec service whose process exits before PID 1 has handled its exec
// (a busy PID 1 takes the child's exit first): activating → deactivating →
// inactive, its start job "done". It is a run that ended by itself only
// where activating is that exec window alone (the caller knows: no
// Type=notify, no ExecStartPost= such as a startup probe): a stop while
// a notify service waits for READY=1, or while a startup probe runs, reads
// the same when the process exits 0 on SIGTERM.
func (u *Unit) ExitedBeforeActive() bool {
	return u.ranToZero() && u.ActiveExitTimestamp < u.ExecMainStartTimestamp
}

// ReadsNeverRun reports whether a unit reads as one that never ran:
// loaded, inactive, no run history, no job. It is also how systemd shows a
// unit it unloaded after a run and loaded again (its history went with it).
func (u *Unit) ReadsNeverRun() bool {
	return u != nil && u.LoadState == "loaded" && u.ActiveState == "inactive" && u.ExecMainStartTimestamp == 0 && !u.PendingJob
}

// Enabled reports whether the unit file is enabled.
func (u *Unit) Enabled() bool {
	return u != nil && (u.UnitFileState == "enabled" || u.UnitFileState == "enabled-runtime")
}

// Manager is systemd's manager-level state relevant to the host watchdog.
type Manager struct {
	// Properties read over D-Bus, as text (RuntimeWatchdogUSec, RebootWatchdogUSec, WatchdogDevice).
	Properties map[string]string `json:"properties,omitempty"`
	// ConfPath is the owned drop-in path in /etc/systemd/system.conf.d and File its bytes (nil: absent).
	ConfPath string `json:"confPath,omitempty"`
	File     []byte `json:"-"`
	// Devices are the watchdog devices found under /sys/class/watchdog.
	Devices []WatchdogDevice `json:"devices,omitempty"`
}

// WatchdogDevice is one /sys/class/watchdog entry.
type WatchdogDevice struct {
	Name     string `json:"name"`
	Identity string `json:"identity,omitempty"`
	Timeout  int    `json:"timeout,omitempty"`
	State    string `json:"state,omitempty"`
}
