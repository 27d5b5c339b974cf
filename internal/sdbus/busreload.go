package sdbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	godbus "github.com/godbus/dbus/v5"
)

// The daemon-reload of a command (a Conn that never ran a watch) goes
// through the system bus daemon when there is one, with the command's idle
// property pipe on systemd's private socket closed first: PID 1 sends every
// unit's signals to every peer of its private socket, unconditionally, but
// to the bus only while some client there has called Subscribe, and then
// the bus daemon passes on only what a client's match rules ask for. So on
// the private socket each reload had the command read, and PID 1 build for
// it, a signal or more per unit (UnitRemoved, UnitNew, then
// PropertiesChanged) for nothing; through the bus, none (and nothing for
// PID 1 to build when nobody subscribed there; with a subscriber such as
// logind it builds one copy for the bus anyway). The restart jobs queued
// right after it go on the same connection while they are few
// (busJobsMax): a private connection dialed then would receive the
// reload's signals PID 1 has not sent yet, and costs PID 1 about 2.5 ms to
// set up. A job's JobRemoved reaches its requester on the bus even
// unsubscribed (systemd tracks each job's sender), through a match rule
// for the manager's JobRemoved signals (other clients' are skipped).
//
// Only the default bus socket is used (not DBUS_SYSTEM_BUS_ADDRESS), and
// only when the systemd answering there is the one on the private socket
// (the same UserspaceTimestampMonotonic: a container may see its host's
// bus). A Conn that runs a watch (the agent) never uses it: there the
// reload goes on the watch's connection (watch.go). The bus connection is
// dialed at the first reload and kept until Close (a command lives
// seconds). A failed dial or check keeps the Conn's reloads on the
// private socket, as before.
//
// Measured in 100- and 1000-service sandboxes: see the README's scale
// follow-up 12.

// busJobsMax is the largest batch of jobs RunJobsContext sends on the bus
// connection. Each job is one call, a restart two (its main process's
// start time is read with it), and the system bus daemon allows a
// connection 128 calls awaiting their reply by default
// (max_replies_per_connection): bigger batches take the private socket.
const busJobsMax = 32

// busDialTimeout bounds dialing the bus daemon (a hung daemon must not
// hold up the reload; the private socket is used instead).
const busDialTimeout = 2 * time.Second

// jobRemovedMatch is the match rule for the manager's JobRemoved signals.
const jobRemovedMatch = "type='signal',sender='org.freedesktop.systemd1',path='/org/freedesktop/systemd1'," +
	"interface='org.freedesktop.systemd1.Manager',member='JobRemoved'"

// reloadBusAddr is the bus address a private Conn reloads through, or ""
// when there is none to try: RESIL_RELOAD_BUS=0, DBUS_SYSTEM_BUS_ADDRESS
// set (a bus chosen for this process, maybe not its systemd's), or no
// socket at the default path.
func reloadBusAddr() string {
	if os.Getenv("RESIL_RELOAD_BUS") == "0" || os.Getenv("DBUS_SYSTEM_BUS_ADDRESS") != "" {
		return ""
	}
	if _, err := os.Stat(SystemBusSocket); err != nil {
		return ""
	}
	return "unix:path=" + SystemBusSocket
}

// identityProp is the manager property that tells two systemd instances
// apart (when each started, in µs).
const identityProp = "UserspaceTimestampMonotonic"

// takeBusPipe returns the bus connection for a reload, dialing it (and
// its JobRemoved match) when there is none yet, or nil when reloads stay
// on the private socket. The caller owns it until putBusPipe.
func (c *Conn) takeBusPipe(ctx context.Context) *pipe {
	c.pipeMu.Lock()
	p, addr := c.busPipe, c.busAddr
	c.busPipe = nil
	c.pipeMu.Unlock()
	if p != nil || addr == "" {
		return p
	}
	dctx, cancel := context.WithTimeout(ctx, busDialTimeout)
	defer cancel()
	p, err := dialPipe(dctx, addr, false, c.wire)
	if err == nil {
		if err = c.checkBus(dctx, p); err != nil {
			p.close()
		}
	}
	if err != nil {
		c.pipeMu.Lock()
		if ctx.Err() == nil { // not merely cancelled: no usable bus here
			c.busAddr = "" // the private socket from now on
		}
		c.pipeMu.Unlock()
		return nil
	}
	return p
}

// checkBus makes sure the systemd on the bus connection p is the one on
// the private socket, and adds the JobRemoved match rule.
func (c *Conn) checkBus(ctx context.Context, p *pipe) error {
	want, err := c.GetManagerPropertyContext(ctx, identityProp)
	if err != nil {
		return err
	}
	vals, errs, err := p.getBatch(ctx, []getCall{{path: systemdPath, iface: managerIface, name: identityProp}})
	switch {
	case err != nil:
		return err
	case errs[0] != nil:
		return errs[0]
	case vals[0] != want.Value():
		return fmt.Errorf("the bus's systemd (%s %v) is not the private socket's (%v)", identityProp, vals[0], want.Value())
	}
	stop := p.bound(ctx)
	defer stop()
	p.wbuf = p.appendCall(p.wbuf[:0], "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "org.freedesktop.DBus", jobRemovedMatch)
	_, err = p.exchange()
	return err
}

// noBusReloads keeps c's reloads and jobs off the bus for good (a watch
// started: the agent's reloads go on the watch's connection).
func (c *Conn) noBusReloads() {
	c.pipeMu.Lock()
	c.busAddr = ""
	p := c.busPipe
	c.busPipe = nil
	c.pipeMu.Unlock()
	if p != nil {
		p.close()
	}
}

// idleBusPipe returns the bus connection if a reload dialed it and no one
// uses it, else nil; the caller owns it until putBusPipe.
func (c *Conn) idleBusPipe() *pipe { return c.takeSlot(&c.busPipe) }

// putBusPipe keeps p for the next reload or jobs when ok (every reply
// read), else closes it (the next reload dials again).
func (c *Conn) putBusPipe(p *pipe, ok bool) {
	c.pipeMu.Lock()
	defer c.pipeMu.Unlock()
	if !ok || c.closed || c.busPipe != nil {
		p.close()
		return
	}
	c.busPipe = p
}

// closeBusPipe closes the bus connection, if any (Close).
func (c *Conn) closeBusPipe() {
	if p := c.idleBusPipe(); p != nil {
		p.close()
	}
}

// reloadOnBus is ReloadContext through the bus daemon: the private idle
// pipe closed first and dropped by systemd (pipe.closeAcked), then Reload.
// handled is false when there is no bus to use (nothing was sent).
func (c *Conn) reloadOnBus(ctx context.Context) (handled bool, err error) {
	p := c.takeBusPipe(ctx)
	if p == nil {
		return false, nil
	}
	c.closeIdlePipeAcked()
	err = p.call(ctx, systemdPath, managerIface, "Reload")
	var derr godbus.Error
	c.putBusPipe(p, err == nil || errors.As(err, &derr)) // an error reply leaves it clean
	if err != nil {
		return true, fmt.Errorf("daemon-reload: %w", err)
	}
	return true, nil
}

// runJobsOnBus is RunJobsContext on the bus connection a reload left
// idle, for a batch of at most busJobsMax jobs; ok is false (nothing
// sent) otherwise.
func (c *Conn) runJobsOnBus(ctx context.Context, jobs []Job, timeout time.Duration) (res []JobResult, ok bool, err error) {
	if len(jobs) > busJobsMax {
		return nil, false, nil
	}
	p := c.idleBusPipe()
	if p == nil {
		return nil, false, nil
	}
	res, clean, err := p.runJobs(ctx, jobs, timeout)
	c.putBusPipe(p, clean)
	return res, true, err
}
