package desired

import (
	"sort"
	"time"
)

// DefaultProbeCommand is the agent binary a rendered startup probe runs
// when RenderOptions.ProbeCommand is empty: where `reconciler install`
// copies it. `reconciler render` and the tests render with it; the agent
// (run, apply, diff) renders with its own executable.
const DefaultProbeCommand = "/usr/local/bin/reconciler"

// RenderOptions are the host-specific inputs of Render.
type RenderOptions struct {
	// ProbeCommand is the absolute path of the agent binary, run as
	// `PROBECOMMAND probe ...` by a service's ExecStartPost= for its
	// startup probe; "" is DefaultProbeCommand.
	ProbeCommand string
}

// Render turns a validated object into its files with these options.
func (ro RenderOptions) Render(o *Object) ([]UnitFile, error) { return render(o, ro) }

func (ro RenderOptions) probeCommand() string {
	if ro.ProbeCommand == "" {
		return DefaultProbeCommand
	}
	return ro.ProbeCommand
}

// startupProbeArgv is the ExecStartPost= argv of a startup probe: the
// agent binary's `probe` command, which tries until the probe passes or
// its timeout runs out. systemd counts the start as done only when it
// exits 0, so units ordered after this one wait for a healthy start even
// when the agent is not running; a non-zero exit fails the start (the
// restart policy applies). It runs as the service's user, like an exec
// probe should.
func startupProbeArgv(cmd string, p Probe) []string {
	p = p.Effective(ProbeStartup)
	argv := []string{cmd, "probe", "--timeout", p.Timeout.D().String(), "--interval", p.Interval.D().String()}
	if p.InitialDelay.IsSet() {
		argv = append(argv, "--initial-delay", p.InitialDelay.D().String())
	}
	switch {
	case p.HTTP != nil:
		argv = append(argv, "--http", p.HTTP.URL)
		if p.HTTP.Status != "" {
			argv = append(argv, "--status", string(p.HTTP.Status))
		}
		keys := make([]string, 0, len(p.HTTP.Headers))
		for k := range p.HTTP.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			argv = append(argv, "--header", k+": "+p.HTTP.Headers[k])
		}
	case p.TCP != "":
		argv = append(argv, "--tcp", p.TCP)
	default:
		argv = append(append(argv, "--"), p.Exec...)
	}
	return argv
}

// startupBudget is how long a start with this startup probe may take
// beyond the process's own start: the probe's initial delay and timeout.
// TimeoutStartSec= covers it with a margin, so the probe's own timeout
// (a clear error) ends a start that never becomes healthy, not systemd's.
func startupBudget(p Probe) time.Duration {
	p = p.Effective(ProbeStartup)
	return p.InitialDelay.D() + p.Timeout.D()
}
