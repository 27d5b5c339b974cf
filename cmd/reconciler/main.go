package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func exitCode(code int, err error) error { return &exitError{code: code, err: err} }

// globals are the flags every command shares.
type globals struct {
	// cache is the manifest cache of a writing command, saved after its
	// passes (saveManifestCache); nil for read-only ones.
	cache *desired.FileCache
	// manifestSeq counts the manifest watch's events under run (nil
	// otherwise): reconcile.Config.ManifestSeq.
	manifestSeq func() uint64
	manifests   string
	unitDir     string
	managerDir  string
	stateDir    string
	backend     string
	ownerCheck  string
	hostLabels  string
	hostname    string
	logLevel    string
	logFormat   string
	// stopOnExit (process backend): stop every supervised process when the
	// agent exits, as a container's PID 1 must. Always on as PID 1.
	stopOnExit bool
	// agent: the command is `run` (the process backend starts every
	// enabled unit as it starts; a one-shot command leaves services to its
	// pass, see process.Options.OneShot).
	agent bool
	// safety: the safety rails' flags of the running command (safety.go).
	safety *safetyFlags
	// maxParallelRestarts paces the agent's restarts of changed running
	// services (reconcile.Input.MaxParallelRestarts; 0: all at once).
	maxParallelRestarts int
	// pruneQuiet: run's --prune-quiet (reconcile.Config.PruneQuiet).
	pruneQuiet          time.Duration
	rolloutReadyTimeout time.Duration
	// rollout: --min-ready, --rollout-jitter.
	rollout reconcile.RolloutConfig
}

// loadOptions returns the load options of the command: fileOptions plus
// this host (its name and labels). The labels are read once, here: an
// agent keeps the labels it started with. A labels file that cannot be
// read as labels (refused, unreadable, empty, invalid) is an error, so the
// command fails rather than select objects with no labels (and prune the
// ones selected by label).
func (g *globals) loadOptions() (desired.Options, error) {
	opts, err := g.fileOptions()
	if err != nil {
		return opts, err
	}
	if g.hostLabels != desired.DefaultHostLabelsFile {
		// A labels file named on the command line must exist: read as no
		// labels, a typo would deselect (and prune) every object that
		// selects this host by label.
		if _, err := os.Stat(g.hostLabels); err != nil {
			return opts, exitCode(2, fmt.Errorf("--host-labels: %w", err))
		}
	}
	host, err := desired.ThisHost(g.hostLabels, opts)
	if err != nil {
		return opts, err
	}
	if g.hostname != "" {
		host.Name = g.hostname
	}
	opts.Host = host
	return opts, nil
}

// fileOptions returns how the command reads files (--owner-check), without
// reading the host labels.
func (g *globals) fileOptions() (desired.Options, error) {
	var opts desired.Options
	switch g.ownerCheck {
	case "on":
	case "off":
		opts.Insecure = true
	case "auto", "":
		opts.Insecure = os.Geteuid() != 0
	default:
		return opts, exitCode(2, fmt.Errorf("--owner-check must be auto, on or off, got %q", g.ownerCheck))
	}
	return opts, nil
}

func (g *globals) logger(defaultLevel string) (*zap.Logger, error) {
	lvl := g.logLevel
	if lvl == "" {
		lvl = defaultLevel
	}
	level, err := zapcore.ParseLevel(lvl)
	if err != nil {
		return nil, exitCode(2, fmt.Errorf("--log-level: %w", err))
	}
	format := g.logFormat
	if format == "" || format == "auto" {
		format = "json"
		if isTerminal(os.Stderr) {
			format = "console"
		}
	}
	var cfg zap.Config
	switch format {
	case "console":
		color := isTerminal(os.Stderr) && os.Getenv("NO_COLOR") == ""
		return zap.New(newConsoleCore(zap.NewAtomicLevelAt(level), zapcore.Lock(os.Stderr), color)), nil
	case "json":
	default:
		return nil, exitCode(2, fmt.Errorf("--log-format must be json, console or auto, got %q", g.logFormat))
	}
	{
		cfg = zap.NewProductionConfig()
		cfg.EncoderConfig.TimeKey = "time"
		cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	}
	cfg.Level = zap.NewAtomicLevelAt(level)
	// Every step and event must reach the log: no sampling.
	cfg.Sampling = nil
	cfg.OutputPaths = []string{"stderr"}
	cfg.DisableStacktrace = level > zapcore.DebugLevel
	return cfg.Build()
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "reconciler",
		Short:         "Keep this host converged on resil.dev/v1 manifests",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildVersion(),
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.manifests, "manifests", "/etc/resil.d", "directory of manifests (*.yaml, NAME.d/ drop-ins)")
	pf.StringVar(&g.unitDir, "unit-dir", "/etc/systemd/system", "unit directory (systemd backend)")
	pf.StringVar(&g.managerDir, "manager-dir", "/etc/systemd/system.conf.d", "systemd manager drop-in directory (host watchdog)")
	pf.StringVar(&g.stateDir, "state-dir", "/var/lib/resil", "the agent's state directory (lock, process table, timer stamps)")
	pf.StringVar(&g.backend, "backend", "auto", "auto, systemd or process")
	pf.StringVar(&g.ownerCheck, "owner-check", "auto", "refuse manifests not owned by root or writable by group/other: on, off, or auto (on when running as root)")
	pf.StringVar(&g.hostLabels, "host-labels", desired.DefaultHostLabelsFile, "YAML map of this host's labels, for spec.hosts")
	pf.StringVar(&g.hostname, "hostname", "", "host name for spec.hosts (default: this host's)")
	pf.StringVar(&g.logLevel, "log-level", "", "debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "auto", "json, console (one line per step and event, for people), or auto: console on a terminal, json otherwise")
	pf.IntVar(&g.maxParallelRestarts, "max-parallel-restarts", 0, fmt.Sprintf("restart changed running services in waves: at most N of the rollout restarting or not ready at once (0: all at once; run's default is %d, apply's and diff's 0)", defaultRunParallelRestarts))
	pf.DurationVar(&g.rolloutReadyTimeout, "rollout-ready-timeout", reconcile.DefaultRolloutReadyTimeout, "with --max-parallel-restarts: a restarted service not ready this long halts the rollout")
	pf.DurationVar(&g.rollout.MinReady, "min-ready", 0, "with --max-parallel-restarts: a restarted service counts as ready only once it has run this long (on top of its readiness probe)")
	pf.DurationVar(&g.rollout.Jitter, "rollout-jitter", 0, "with --max-parallel-restarts: wait a random time below this before each wave after the first")
	root.AddCommand(newVersionCmd(), newValidateCmd(g), newRenderCmd(g), newDiffCmd(g), newApplyCmd(g), newRunCmd(g), newResetCmd(g), newInstallCmd(g), newStatusCmd(g), newEventsCmd(g), newProbeCmd(), newSchemaCmd(), newSyncCmd(g),
		newPauseCmd(g), newResumeCmd(g), newPruneCmd(g), newRolloutCmd(g))
	return root
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "reconciler", buildVersion())
			return err
		},
	}
}

func main() {
	root := newRoot()
	stopProfile := startCPUProfile() // RESIL_CPUPROFILE only (debugpprof.go)
	err := root.Execute()
	stopProfile()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "reconciler:", escapeLines(ee.err.Error()))
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "reconciler:", escapeLines(err.Error()))
	os.Exit(2) // usage errors and anything unclassified
}

// escapeLines escapes the control characters of each line of s (a path or
// a unit name from the host can hold any), keeping its line structure.
func escapeLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = desired.EscapeControl(l)
	}
	return strings.Join(lines, "\n")
}
