package systemd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// TransientClient is what a ProbeRunner needs of systemd: start a
// transient unit and stop it.
type TransientClient interface {
	RunTransientUnitContext(ctx context.Context, name string, mode string, properties []sddbus.Property) (string, error)
	StopUnitContext(ctx context.Context, name string, mode string, ch chan<- string) (int, error)
}

// ProbeRunner runs an exec health probe as a transient oneshot service
// (like `systemd-run --wait --uid=USER`): systemd switches to the
// service's user and group, so the agent itself needs no capability for
// it (its unit has none), and the probe does not share the agent's
// sandbox (private /tmp, system-call filter). The start job's result is
// the probe's: "done" when the command exited 0. The unit is collected
// whatever its result (CollectMode=inactive-or-failed).
type ProbeRunner struct {
	c TransientClient
}

// NewProbeRunner returns a runner on c (an *sdbus.Conn).
func NewProbeRunner(c TransientClient) *ProbeRunner { return &ProbeRunner{c: c} }

// Run runs argv as user/group (empty: root) and waits for it until ctx is
// done; then it stops the unit (its processes are killed) and reports the
// timeout.
func (p *ProbeRunner) Run(ctx context.Context, argv []string, user, group string) error {
	if len(argv) == 0 {
		return errors.New("empty argv")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "resil-probe-" + hex.EncodeToString(b[:]) + ".service"
	props := []sddbus.Property{
		sddbus.PropDescription("resil exec probe: " + strings.Join(argv, " ")),
		// go-systemd calls the bool UncleanIsFailure, but systemd reads it
		// as ExecStart's ignore-failure flag ("-" prefix): false, so a
		// non-zero exit fails the probe (caught by the e2e test).
		sddbus.PropExecStart(argv, false),
		sddbus.PropType("oneshot"),
		{Name: "CollectMode", Value: godbus.MakeVariant("inactive-or-failed")},
		{Name: "WorkingDirectory", Value: godbus.MakeVariant("/")},
	}
	if user != "" {
		props = append(props, sddbus.Property{Name: "User", Value: godbus.MakeVariant(user)})
	}
	if group != "" {
		props = append(props, sddbus.Property{Name: "Group", Value: godbus.MakeVariant(group)})
	}
	res, err := p.c.RunTransientUnitContext(ctx, name, "fail", props)
	switch {
	case err == nil && res != "done":
		return fmt.Errorf("%s: job %s (the command failed or could not run)", name, res)
	case err == nil:
		return nil
	case ctx.Err() == nil:
		return fmt.Errorf("start %s: %w", name, err)
	}
	// The probe ran into its timeout: stop it (and everything it
	// started) without waiting long for the stop job.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = p.c.StopUnitContext(sctx, name, "replace", nil)
	return fmt.Errorf("%s: timed out", name)
}
