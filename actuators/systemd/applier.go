package systemd

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	"resil.dev/resil/internal/sdbus"
	"resil.dev/resil/observed"
)

// Client is the slice of a systemd connection Apply uses.
// *sdbus.Conn (from sdbus.Dial) satisfies it; a bare go-systemd *dbus.Conn
// lacks the two manager-property methods. Tests use sdbustest.Fake.
type Client interface {
	ReloadContext(ctx context.Context) error
	EnableUnitFilesContext(ctx context.Context, files []string, runtime bool, force bool) (bool, []sddbus.EnableUnitFileChange, error)
	DisableUnitFilesContext(ctx context.Context, files []string, runtime bool) ([]sddbus.DisableUnitFileChange, error)
	RunJobsContext(ctx context.Context, jobs []sdbus.Job, timeout time.Duration) ([]sdbus.JobResult, error)
	ResetFailedUnitContext(ctx context.Context, name string) error
	GetUnitPropertyContext(ctx context.Context, unit string, propertyName string) (*sddbus.Property, error)
	GetUnitTypePropertyContext(ctx context.Context, unit, unitType, propertyName string) (*sddbus.Property, error)
	ListUnitFilesByPatternsContext(ctx context.Context, states, patterns []string) ([]sddbus.UnitFile, error)
	ListUnitsByNamesContext(ctx context.Context, units []string) ([]sddbus.UnitStatus, error)
	GetManagerPropertyContext(ctx context.Context, name string) (godbus.Variant, error)
	SetManagerProperty(ctx context.Context, name string, value godbus.Variant) error
}

// DefaultJobTimeout bounds the wait for a start, stop or restart job, like
// systemd's own default TimeoutStartSec.
const DefaultJobTimeout = 90 * time.Second

// Applier executes steps against systemd. It is safe for concurrent use,
// though the loop applies one step at a time.
type Applier struct {
	c              Client
	unitDir        string
	managerConfDir string
	log            *zap.Logger
	cfg            config

	calls   atomic.Uint64
	reloads atomic.Uint64
}

var (
	_ actuators.Applier = (*Applier)(nil)
	_ Client            = (*sdbus.Conn)(nil)
)

type config struct {
	ownJobs          OwnJobs
	jobTimeout       time.Duration
	jobMode          string
	overwriteForeign bool
	hook             func(method string)
	stampDir         string
	now              func() time.Time
}

// Option configures an Applier.
type Option func(*config)

// WithJobTimeout bounds the wait for a start, stop or restart job (default
// DefaultJobTimeout). The step's ctx bounds it too.
func WithJobTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.jobTimeout = d
		}
	}
}

// WithOverwriteForeign lets OpWriteFile replace an existing regular file that
// lacks resil's ownership marker (adoption). By default such a write fails
// with ErrNotOwned, as OpRemoveFile always does.
func WithOverwriteForeign() Option { return func(c *config) { c.overwriteForeign = true } }

// OwnJobs is told about the jobs the Applier queues and the unit files it
// changes, so that a watcher of unit signals and of the unit directory can
// tell the agent's own changes from outside ones.
// *observed/systemd.Observer implements it.
type OwnJobs interface {
	// JobQueued is called before a start, stop or restart job for unit is
	// queued; finished is called once with the unit's ActiveState and
	// SubState as read back after the job ("" for sub when not read; ""
	// for active when the job failed or was not queued).
	JobQueued(unit string) (finished func(active, sub string))
	// Reloaded is called after each daemon-reload the Applier issued.
	Reloaded()
	// OwnFiles is called before the Applier changes a file in the unit
	// directory, enables or disables units or reloads; done is called
	// once afterwards with what the operation changed and the manager
	// signal systemd sent for it, so that a watch of the unit directory
	// and of those signals does not wake another pass for them.
	OwnFiles() (done func(observed.OwnChange))
}

// WithOwnJobs reports every job the Applier queues to j.
func WithOwnJobs(j OwnJobs) Option { return func(c *config) { c.ownJobs = j } }

// jobQueued calls OwnJobs.JobQueued when set.
func (a *Applier) jobQueued(unit string) func(active, sub string) {
	if a.cfg.ownJobs == nil {
		return func(string, string) {}
	}
	return a.cfg.ownJobs.JobQueued(unit)
}

// ownFiles calls OwnJobs.OwnFiles when set.
func (a *Applier) ownFiles() func(observed.OwnChange) {
	if a.cfg.ownJobs == nil {
		return func(observed.OwnChange) {}
	}
	return a.cfg.ownJobs.OwnFiles()
}

// enableChanges is what an EnableUnitFiles (or, converted, a
// DisableUnitFiles) reply says the call changed: the links made and
// removed, and whether systemd sent UnitFilesChanged (it does when a link
// was made or removed).
func enableChanges(changes []sddbus.EnableUnitFileChange) observed.OwnChange {
	var c observed.OwnChange
	for _, ch := range changes {
		switch ch.Type {
		case "symlink":
			c.Links = append(c.Links, observed.Link{Path: ch.Filename, Dest: ch.Destination})
		case "unlink":
			c.Links = append(c.Links, observed.Link{Path: ch.Filename})
		default:
			continue
		}
		c.Signal = "UnitFilesChanged"
	}
	return c
}

// disableChanges is enableChanges of a DisableUnitFiles reply (the same
// fields).
func disableChanges(changes []sddbus.DisableUnitFileChange) observed.OwnChange {
	conv := make([]sddbus.EnableUnitFileChange, len(changes))
	for i, ch := range changes {
		conv[i] = sddbus.EnableUnitFileChange(ch)
	}
	return enableChanges(conv)
}

// WithCallHook calls hook with the method name of every D-Bus call the
// Applier makes (e.g. to feed a metric). It must be fast.
func WithCallHook(hook func(method string)) Option { return func(c *config) { c.hook = hook } }

// New returns an Applier over c, which the caller owns. unitDir is where
// unit files live (/etc/systemd/system) and managerConfDir where the manager
// drop-in lives (/etc/systemd/system.conf.d); write and remove steps outside
// them fail with ErrOutsideDirs. log may be nil.
func New(c Client, unitDir, managerConfDir string, log *zap.Logger, opts ...Option) *Applier {
	cfg := config{jobTimeout: DefaultJobTimeout, jobMode: "replace", stampDir: DefaultStampDir, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Applier{
		c:              c,
		unitDir:        filepath.Clean(unitDir),
		managerConfDir: filepath.Clean(managerConfDir),
		log:            log.Named("apply"),
		cfg:            cfg,
	}
}

// Reloads returns how many daemon-reloads the Applier has issued.
func (a *Applier) Reloads() uint64 { return a.reloads.Load() }

// Calls returns how many D-Bus calls the Applier has made (re-checks included).
func (a *Applier) Calls() uint64 { return a.calls.Load() }

func (a *Applier) count(method string) {
	a.calls.Add(1)
	if a.cfg.hook != nil {
		a.cfg.hook(method)
	}
}

// Apply executes one step. It re-checks the current state first and acts
// only if needed.
//
// Outcomes:
//   - (Changed, nil): the step took effect now.
//   - (Unchanged, nil): it had already taken effect; nothing was done.
//   - (Unchanged, err): nothing was done; err says why (ErrNotOwned,
//     ErrOutsideDirs, ErrInvalidStep, ErrUnknownOp, a D-Bus error).
//   - (Changed or Unchanged, err): for unit jobs, the job was queued but
//     failed (*JobError), timed out (ErrJobTimeout) or ctx ended; for
//     OpSetManager, some properties were set (Changed) but others need a
//     daemon-reexec (*ReexecError).
func (a *Applier) Apply(ctx context.Context, s actuators.Step) (actuators.Result, error) {
	var (
		res actuators.Result
		err error
	)
	switch s.Op {
	case actuators.OpWriteFile:
		res, err = a.writeFile(s)
	case actuators.OpRemoveFile:
		res, err = a.removeFile(s)
	case actuators.OpDaemonReload:
		res, err = a.daemonReload(ctx)
	case actuators.OpEnable:
		res, err = a.enable(ctx, s)
	case actuators.OpDisable:
		res, err = a.disable(ctx, s)
	case actuators.OpStart, actuators.OpStop, actuators.OpRestart:
		res, err = a.job(ctx, s)
	case actuators.OpResetFailed:
		res, err = a.resetFailed(ctx, s)
	case actuators.OpSetManager:
		res, err = a.setManager(ctx, s)
	case actuators.OpRefreshStamp:
		res, err = a.refreshStamp(s)
	default:
		res, err = actuators.Unchanged, fmt.Errorf("apply %s: %w %q", s, ErrUnknownOp, s.Op)
	}
	if res == "" {
		res = actuators.Unchanged
	}
	a.logOutcome(s, res, err)
	return res, err
}

func (a *Applier) logOutcome(s actuators.Step, res actuators.Result, err error) {
	switch {
	case err != nil:
		a.log.Debug("step failed", zap.Stringer("step", s), zap.String("result", string(res)), zap.Error(err))
	case res == actuators.Changed:
		a.log.Info("step applied", zap.Stringer("step", s))
	default:
		a.log.Debug("step unchanged", zap.Stringer("step", s))
	}
}

func (a *Applier) daemonReload(ctx context.Context) (actuators.Result, error) {
	a.count("Reload")
	a.reloads.Add(1)
	if a.cfg.ownJobs != nil {
		defer a.cfg.ownJobs.Reloaded()
	}
	done := a.ownFiles()
	err := a.c.ReloadContext(ctx)
	// systemd sends Reloading(false) unless it refused the call (a reply
	// lost with the connection may follow a reload that ran).
	if dbusErrorName(err) == "" {
		done(observed.OwnChange{Signal: "Reloading"})
	} else {
		done(observed.OwnChange{})
	}
	if err != nil {
		return actuators.Unchanged, fmt.Errorf("daemon-reload: %w", err)
	}
	return actuators.Changed, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkUnit rejects a unit op without a plausible unit name.
func checkUnit(s actuators.Step) error {
	if s.Unit == "" || strings.ContainsRune(s.Unit, '/') {
		return fmt.Errorf("%s: %w: unit name %q", s.Op, ErrInvalidStep, s.Unit)
	}
	return nil
}
