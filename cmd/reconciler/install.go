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
	"strings"
	"text/template"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	sdapply "resil.dev/resil/actuators/systemd"
	"resil.dev/resil/desired"
	"resil.dev/resil/internal/atomicfile"
	"resil.dev/resil/internal/ownmark"
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
	// SourceConfig: run --source-config FILE (the git source), if set.
	SourceConfig string
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
	if _, owned := ownmark.IsOwned(data); owned {
		return nil, fmt.Errorf("render unit: the agent's own unit must not carry %s", ownmark.KeyObject)
	}
	return data, nil
}

// action is one line of `reconciler install`'s plan. install builds the
// whole plan first, then either prints it (--dry-run) or runs it: one
// path, like diff and apply.
type action struct {
	// note is printed as is, dry run or not: something already in place
	// (exists, unchanged), or with dryOnly the agent's unit text.
	note    string
	dryOnly bool
	// what is a change: printed "would <what>" in a dry run, and "<what>"
	// before run otherwise (unless run prints its own outcome: quiet).
	what  string
	quiet bool
	run   func(ctx context.Context) error
}

// installer builds the actions of `reconciler install` and runs them.
type installer struct {
	out io.Writer
	dry bool
	// acts is the plan so far.
	acts []action
}

func (in *installer) note(format string, args ...any) {
	in.acts = append(in.acts, action{note: fmt.Sprintf(format, args...)})
}

func (in *installer) change(run func(ctx context.Context) error, format string, args ...any) {
	in.acts = append(in.acts, action{what: fmt.Sprintf(format, args...), run: run})
}

// execute prints the plan (dry) or runs it, in order.
func (in *installer) execute(ctx context.Context) error {
	for _, a := range in.acts {
		switch {
		case a.run == nil:
			if !a.dryOnly || in.dry {
				fmt.Fprintln(in.out, a.note)
			}
		case in.dry:
			fmt.Fprintf(in.out, "would %s\n", a.what)
		default:
			if !a.quiet {
				fmt.Fprintln(in.out, a.what)
			}
			if err := a.run(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// mkdir plans creating dir (and parents) with mode, owned by root when we are root.
func (in *installer) mkdir(dir string, mode os.FileMode) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		in.note("exists %s", dir)
		return nil
	case err == nil:
		return fmt.Errorf("%s exists and is not a directory", dir)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	in.change(func(context.Context) error {
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
	}, "create directory %s (%04o, root)", dir, mode)
	return nil
}

// writeFile plans replacing path with data (temp file, fsync, rename)
// unless the bytes are already there; it reports whether it will write.
func (in *installer) writeFile(path string, data []byte, mode os.FileMode, what string) bool {
	cur, err := os.ReadFile(path)
	if err == nil && bytes.Equal(cur, data) {
		if fi, serr := os.Stat(path); serr == nil && fi.Mode().Perm() == mode {
			in.note("unchanged %s", path)
			return false
		}
	}
	verb := "write"
	if err == nil {
		verb = "update"
	}
	in.change(func(context.Context) error {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := atomicfile.WriteFile(path, data, mode); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	}, "%s %s (%s, %04o)", verb, path, what, mode)
	return true
}

func newInstallCmd(g *globals) *cobra.Command {
	var (
		binary, binDir, sourceConfig           string
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
			if sourceConfig != "" && !safeUnitPath.MatchString(sourceConfig) {
				return exitCode(2, fmt.Errorf("--source-config must be an absolute path of [A-Za-z0-9._/-], got %q", sourceConfig))
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
					binChanged = in.writeFile(target, data, 0o755, "agent binary from "+binary)
				} else {
					in.note("binary %s already in place", target)
				}
			} else {
				in.note("referencing binary %s (not copied)", target)
			}

			// 3. Unit.
			unit, err := renderAgentUnit(agentUnitParams{
				Version: buildVersion(), Name: AgentUnit, Binary: target, Manifests: g.manifests, StateDir: g.stateDir,
				UnitDir: g.unitDir, ManagerDir: g.managerDir, WatchdogSec: desired.Span(watchdogTimeout),
				RestartSec: desired.Span(restartDelay), StartTimeout: desired.Span(timeout), Resync: resync.String(),
				SourceConfig: sourceConfig,
			})
			if err != nil {
				return exitCode(1, err)
			}
			unitPath := filepath.Join(g.unitDir, AgentUnit)
			unitChanged := in.writeFile(unitPath, unit, 0o644, "the agent's unit")
			in.acts = append(in.acts, action{note: fmt.Sprintf("--- %s\n%s", unitPath, strings.TrimSuffix(string(unit), "\n")), dryOnly: true})

			// 4. systemd: reload, enable, start or restart.
			sys := &agentSystemd{g: g, out: out, timeout: timeout}
			defer sys.close()
			sys.plan(in, unitChanged, unitChanged || binChanged, noStart)

			ctx, cancel := signalContext()
			defer cancel()
			ctx, cancelT := context.WithTimeout(ctx, timeout+30*time.Second)
			defer cancelT()
			if err := in.execute(ctx); err != nil {
				var ee *exitError
				if errors.As(err, &ee) {
					return err
				}
				return exitCode(1, err)
			}
			return nil
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
	f.StringVar(&sourceConfig, "source-config", "", "run the agent with this --source-config file (the git source; an absolute path of [A-Za-z0-9._/-])")
	return cmd
}

// agentSystemd plans and runs the systemd half of install over one
// D-Bus connection, dialed by the first action that runs.
type agentSystemd struct {
	g       *globals
	out     io.Writer
	timeout time.Duration
	conn    *sdbus.Conn
	app     *sdapply.Applier
}

func (s *agentSystemd) dial(ctx context.Context) error {
	if s.conn != nil {
		return nil
	}
	conn, err := sdbus.Dial(ctx)
	if err != nil {
		return exitCode(1, fmt.Errorf("connect to systemd: %w", err))
	}
	s.conn = conn
	s.app = sdapply.New(conn, s.g.unitDir, s.g.managerDir, zap.NewNop(), sdapply.WithJobTimeout(s.timeout))
	return nil
}

func (s *agentSystemd) close() {
	if s.conn != nil {
		s.conn.Close()
	}
}

// apply runs one step and prints its outcome.
func (s *agentSystemd) apply(ctx context.Context, st actuators.Step) error {
	if err := s.dial(ctx); err != nil {
		return err
	}
	res, err := s.app.Apply(ctx, st)
	if err != nil {
		return exitCode(1, fmt.Errorf("%s: %w", st, err))
	}
	fmt.Fprintf(s.out, "%s %s\n", res, st)
	return nil
}

// plan adds daemon-reload (when the unit changed), enable, and start or
// restart the agent's unit (unless noStart), then waits for READY=1.
func (s *agentSystemd) plan(in *installer, reload, changed, noStart bool) {
	step := func(st actuators.Step, format string, args ...any) {
		in.acts = append(in.acts, action{what: fmt.Sprintf(format, args...), quiet: true,
			run: func(ctx context.Context) error { return s.apply(ctx, st) }})
	}
	if reload {
		step(actuators.Step{Op: actuators.OpDaemonReload, Reason: "agent unit written"}, "daemon-reload")
	}
	step(actuators.Step{Op: actuators.OpEnable, Unit: AgentUnit, Reason: "install"}, "enable %s", AgentUnit)
	if noStart {
		return
	}
	in.acts = append(in.acts, action{what: fmt.Sprintf("start %s, or restart it if it runs and its unit or binary changed, and wait for READY=1", AgentUnit),
		quiet: true, run: func(ctx context.Context) error { return s.start(ctx, changed) }})
}

// start starts the agent's unit, or restarts it when it runs and changed;
// the job returns once the agent sent READY=1 (Type=notify).
func (s *agentSystemd) start(ctx context.Context, changed bool) error {
	if err := s.dial(ctx); err != nil {
		return err
	}
	st, err := s.conn.GetUnitPropertyContext(ctx, AgentUnit, "ActiveState")
	active := err == nil && fmt.Sprint(st.Value.Value()) == "active"
	switch {
	case active && changed:
		err = s.apply(ctx, actuators.Step{Op: actuators.OpRestart, Unit: AgentUnit, Reason: "unit or binary changed"})
	case active:
		fmt.Fprintf(s.out, "%s already active, unit and binary unchanged\n", AgentUnit)
	default:
		err = s.apply(ctx, actuators.Step{Op: actuators.OpStart, Unit: AgentUnit, Reason: "install"})
	}
	if err != nil {
		return err
	}
	if st, err := s.conn.GetUnitPropertyContext(ctx, AgentUnit, "StatusText"); err == nil {
		fmt.Fprintf(s.out, "%s is ready: %v\n", AgentUnit, st.Value.Value())
	}
	return nil
}
