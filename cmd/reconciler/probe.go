package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile/health"
)

// newProbeCmd is `reconciler probe`: one startup probe, tried until it
// passes or its timeout runs out. Rendered units run it as ExecStartPost=
// for spec.health.startup, so systemd counts the start as done only once
// the service answers (and units ordered after it wait for that).
func newProbeCmd() *cobra.Command {
	var (
		p       desired.Probe
		headers []string
	)
	httpURL, status := "", ""
	cmd := &cobra.Command{
		Use:   "probe (--http URL | --tcp HOST:PORT | -- ARGV...)",
		Short: "Try a health probe until it passes or times out (exit 0: passed)",
		Long: `probe runs one health check every --interval until it passes (exit 0) or
--timeout has passed since it began (exit 1, the last failure on stderr).
Each attempt is bounded by the interval (at least 1s) and by the time left.
An exec probe's argv follows "--" and runs as the caller (systemd runs an
ExecStartPost= as the service's user).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if httpURL != "" {
				p.HTTP = &desired.HTTPProbe{URL: httpURL, Status: desired.HTTPStatus(status)}
				for _, h := range headers {
					k, v, ok := strings.Cut(h, ":")
					if !ok {
						return exitCode(2, fmt.Errorf("--header wants NAME: VALUE, got %q", h))
					}
					if p.HTTP.Headers == nil {
						p.HTTP.Headers = map[string]string{}
					}
					p.HTTP.Headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
				}
			}
			p.Exec = args
			p = p.Effective(desired.ProbeStartup)
			c, err := health.NewChecker(p, health.Identity{})
			if err != nil {
				return exitCode(2, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := health.Until(ctx, c, p.Interval.D(), p.Timeout.D(), p.InitialDelay.D()); err != nil {
				return exitCode(1, err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&httpURL, "http", "", "GET this http:// or https:// URL")
	f.StringVar(&status, "status", "", "accepted HTTP status or range (default 200-399)")
	f.StringArrayVar(&headers, "header", nil, "HTTP header NAME: VALUE (repeatable)")
	f.StringVar(&p.TCP, "tcp", "", "connect to HOST:PORT")
	f.Var((*durationFlag)(&p.Timeout), "timeout", "give up after this long (default 60s)")
	f.Var((*durationFlag)(&p.Interval), "interval", "between attempts (default 1s)")
	f.Var((*durationFlag)(&p.InitialDelay), "initial-delay", "wait this long before the first attempt")
	return cmd
}

// durationFlag is a pflag.Value holding a desired.Duration.
type durationFlag desired.Duration

func (d *durationFlag) String() string { return string(*d) }
func (d *durationFlag) Type() string   { return "duration" }
func (d *durationFlag) Set(s string) error {
	if _, err := time.ParseDuration(s); err != nil {
		return err
	}
	*d = durationFlag(s)
	return nil
}

// agentRenderOptions are the render options of the agent's own backend:
// rendered startup probes run this executable (symlinks resolved), so
// they work wherever the agent was installed. `reconciler render` prints
// desired.DefaultProbeCommand instead (where `install` puts the binary).
func agentRenderOptions() desired.RenderOptions {
	exe, err := os.Executable()
	if err != nil {
		return desired.RenderOptions{}
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	return desired.RenderOptions{ProbeCommand: exe}
}
