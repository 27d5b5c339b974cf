package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"text/template"
	"time"

	"github.com/google/renameio/v2"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	sdapply "resil.dev/resil/actuators/systemd"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/sdbus"
)

// agentUnitTemplate is the agent's own unit, rendered by `reconciler install`.
//
//go:embed unit/resil-agent.service
var agentUnitTemplate string

// AgentUnit is the name of the agent's own unit; timers with maxLateness
// are ordered after it (desired.AgentUnit).
const AgentUnit = desired.AgentUnit

// agentUnitParams fill unit/resil-agent.service.
type agentUnitParams struct {
	Version, Name                                    string
	Binary, Manifests, StateDir, UnitDir, ManagerDir string
	WatchdogSec, RestartSec, StartTimeout, Resync    string
}

// renderAgentUnit renders the agent's unit. Same parameters, same bytes.
func renderAgentUnit(p agentUnitParams) ([]byte, error) {
	t, err := template.New("unit").Option("missingkey=error").Parse(agentUnitTemplate)
	if err != nil {
		return nil, fmt.Errorf("parse unit template: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("render unit: %w", err)
	}
	data := b.Bytes()
	// The agent prunes every unit carrying its ownership marker that no
	// manifest wants: its own unit must never carry one.
	if _, owned := desired.IsOwned(data); owned {
		return nil, fmt.Errorf("render unit: the agent's own unit must not carry %s", desired.KeyObject)
	}
	return data, nil
}

// installer performs (or, dry, describes) the steps of `reconciler install`.
type installer struct {
	out io.Writer
	dry bool
}

func (in *installer) say(format string, args ...any) {
	prefix := ""
	if in.dry {
		prefix = "would "
	}
	fmt.Fprintf(in.out, prefix+format+"\n", args...)
}

// mkdir creates dir (and parents) with mode, owned by root when we are root.
func (in *installer) mkdir(dir string, mode os.FileMode) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		fmt.Fprintf(in.out, "exists %s\n", dir)
		return nil
	case err == nil:
		return fmt.Errorf("%s exists and is not a directory", dir)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	in.say("create directory %s (%04o, root)", dir, mode)
	if in.dry {
		return nil
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, mode); err != nil { // not subject to umask
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(dir, 0, 0); err != nil {
			return fmt.Errorf("chown %s: %w", dir, err)
		}
	}
	return nil
}

// writeFile replaces path with data (temp file, fsync, rename) unless the
// bytes are already there; it reports whether it wrote.
func (in *installer) writeFile(path string, data []byte, mode os.FileMode, what string) (bool, error) {
	cur, err := os.ReadFile(path)
	if err == nil && bytes.Equal(cur, data) {
		if fi, serr := os.Stat(path); serr == nil && fi.Mode().Perm() == mode {
			fmt.Fprintf(in.out, "unchanged %s\n", path)
			return false, nil
		}
	}
	verb := "write"
	if err == nil {
		verb = "update"
	}
	in.say("%s %s (%s, %04o)", verb, path, what, mode)
	if in.dry {
		return true, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := renameio.WriteFile(path, data, mode, renameio.WithTempDir(filepath.Dir(path))); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, nil
}

func newInstallCmd(g *globals) *cobra.Command {
	var (
		binary, binDir                         string
		copyBinary, dryRun, noStart            bool
		watchdogTimeout, restartDelay, timeout time.Duration
		resync                                 time.Duration
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install the agent as a hardened systemd service (" + AgentUnit + ") and start it",
		Long: "Create the manifests and state directories, install the binary, write the agent's own unit\n" +
			"(Type=notify with WatchdogSec, Restart=always, ProtectSystem=strict; embedded in this binary),\n" +
			"then daemon-reload, enable and start (or restart) it over D-Bus and wait until it reports READY=1\n" +
			"after its first pass. Idempotent: unchanged files are not rewritten and a running agent whose\n" +
			"unit and binary are unchanged is left alone. --dry-run prints what it would do.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			in := &installer{out: out, dry: dryRun}
			if binary == "" {
				exe, err := os.Executable()
				if err != nil {
					return exitCode(2, fmt.Errorf("--binary: cannot find the running executable: %w", err))
				}
				binary = exe
			}
			binary, err := filepath.Abs(binary)
			if err != nil {
				return exitCode(2, err)
			}
			for _, d := range []struct{ name, v string }{{"--manifests", g.manifests}, {"--state-dir", g.stateDir},
				{"--unit-dir", g.unitDir}, {"--manager-dir", g.managerDir}, {"--bin-dir", binDir}} {
				if !filepath.IsAbs(d.v) {
					return exitCode(2, fmt.Errorf("%s must be an absolute path, got %q", d.name, d.v))
				}
			}
			if watchdogTimeout < 2*time.Second {
				return exitCode(2, fmt.Errorf("--watchdog-sec must be at least 2s, got %s", watchdogTimeout))
			}
			if !dryRun && os.Geteuid() != 0 {
				return exitCode(2, errors.New("install must run as root (or use --dry-run)"))
			}

			// 1. Directories: manifests (root-owned, 0755: the loader refuses
			// manifests writable by others), state, manager drop-ins (the
			// unit's ReadWritePaths= must exist).
			for _, d := range []struct {
				dir  string
				mode os.FileMode
			}{{g.manifests, 0o755}, {g.stateDir, 0o755}, {g.managerDir, 0o755}, {g.unitDir, 0o755}} {
				if err := in.mkdir(d.dir, d.mode); err != nil {
					return exitCode(1, err)
				}
			}

			// 2. Binary.
			target := binary
			binChanged := false
			if copyBinary {
				target = filepath.Join(binDir, "reconciler")
				if target != binary {
					data, err := os.ReadFile(binary)
					if err != nil {
						return exitCode(1, fmt.Errorf("read --binary: %w", err))
					}
					if binChanged, err = in.writeFile(target, data, 0o755, "agent binary from "+binary); err != nil {
						return exitCode(1, err)
					}
				} else {
					fmt.Fprintf(out, "binary %s already in place\n", target)
				}
			} else {
				fmt.Fprintf(out, "referencing binary %s (not copied)\n", target)
			}

			// 3. Unit.
			unit, err := renderAgentUnit(agentUnitParams{
				Version: buildVersion(), Name: AgentUnit, Binary: target, Manifests: g.manifests, StateDir: g.stateDir,
				UnitDir: g.unitDir, ManagerDir: g.managerDir, WatchdogSec: desired.Span(watchdogTimeout),
				RestartSec: desired.Span(restartDelay), StartTimeout: desired.Span(timeout), Resync: resync.String(),
			})
			if err != nil {
				return exitCode(1, err)
			}
			unitPath := filepath.Join(g.unitDir, AgentUnit)
			unitChanged, err := in.writeFile(unitPath, unit, 0o644, "the agent's unit")
			if err != nil {
				return exitCode(1, err)
			}
			if dryRun {
				fmt.Fprintf(out, "--- %s\n%s", unitPath, unit)
			}

			// 4. systemd: reload, enable, start or restart.
			changed := unitChanged || binChanged
			if dryRun {
				if unitChanged {
					in.say("daemon-reload")
				}
				in.say("enable %s", AgentUnit)
				if !noStart {
					in.say("start %s, or restart it if it runs and its unit or binary changed, and wait for READY=1", AgentUnit)
				}
				return nil
			}
			ctx, cancel := signalContext()
			defer cancel()
			ctx, cancelT := context.WithTimeout(ctx, timeout+30*time.Second)
			defer cancelT()
			return installStart(ctx, g, out, unitChanged, changed, noStart, timeout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&binary, "binary", "", "the reconciler binary to install (default: the running executable)")
	f.StringVar(&binDir, "bin-dir", "/usr/local/bin", "where the binary is copied to (as reconciler)")
	f.BoolVar(&copyBinary, "copy", true, "copy --binary to --bin-dir; false: the unit runs --binary where it is")
	f.BoolVar(&dryRun, "dry-run", false, "print what would be done, change nothing")
	f.BoolVar(&noStart, "no-start", false, "enable but do not start the agent")
	f.DurationVar(&watchdogTimeout, "watchdog-sec", 2*time.Minute, "the agent unit's WatchdogSec (the agent passes at least every half of it)")
	f.DurationVar(&restartDelay, "restart-sec", 2*time.Second, "the agent unit's RestartSec")
	f.DurationVar(&timeout, "start-timeout", 5*time.Minute, "TimeoutStartSec: how long the first pass may take before READY=1")
	f.DurationVar(&resync, "resync", 5*time.Minute, "the agent's periodic full pass")
	return cmd
}

// installStart reloads, enables and starts (or restarts) the agent's unit.
func installStart(ctx context.Context, g *globals, out io.Writer, reload, changed, noStart bool, timeout time.Duration) error {
	conn, err := sdbus.Dial(ctx)
	if err != nil {
		return exitCode(1, fmt.Errorf("connect to systemd: %w", err))
	}
	defer conn.Close()
	app := sdapply.New(conn, g.unitDir, g.managerDir, zap.NewNop(), sdapply.WithJobTimeout(timeout))
	steps := []actuators.Step{}
	if reload {
		steps = append(steps, actuators.Step{Op: actuators.OpDaemonReload, Reason: "agent unit written"})
	}
	steps = append(steps, actuators.Step{Op: actuators.OpEnable, Unit: AgentUnit, Reason: "install"})
	if !noStart {
		st, err := conn.GetUnitPropertyContext(ctx, AgentUnit, "ActiveState")
		active := err == nil && fmt.Sprint(st.Value.Value()) == "active"
		switch {
		case active && changed:
			steps = append(steps, actuators.Step{Op: actuators.OpRestart, Unit: AgentUnit, Reason: "unit or binary changed"})
		case active:
			fmt.Fprintf(out, "%s already active, unit and binary unchanged\n", AgentUnit)
		default:
			steps = append(steps, actuators.Step{Op: actuators.OpStart, Unit: AgentUnit, Reason: "install"})
		}
	}
	for _, s := range steps {
		res, err := app.Apply(ctx, s)
		if err != nil {
			return exitCode(1, fmt.Errorf("%s: %w", s, err))
		}
		fmt.Fprintf(out, "%s %s\n", res, s)
	}
	if noStart {
		return nil
	}
	st, err := conn.GetUnitPropertyContext(ctx, AgentUnit, "StatusText")
	if err == nil {
		fmt.Fprintf(out, "%s is ready: %v\n", AgentUnit, st.Value.Value())
	}
	return nil
}
