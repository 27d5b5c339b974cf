package sdbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	godbus "github.com/godbus/dbus/v5"
)

// The daemon-reload of a command (no watch running) goes through the
// system bus daemon when there is one, with no connection of the command's
// left on systemd's private socket: PID 1 sends every unit's signals to
// every peer of its private socket, unconditionally, but to the bus only
// while some client there has called Subscribe. So on a private connection
// each reload had PID 1 build, and the command read, a signal or more per
// unit (UnitRemoved, UnitNew, then PropertiesChanged) for nothing; through
// the bus, with nobody subscribed, none. The restart jobs queued right
// after it go on the same connection while they are few (busJobsMax): a
// private connection dialed then would receive the reload's signals PID 1
// has not sent yet, and costs PID 1 about 2.5 ms to set up. A job's
// JobRemoved reaches its requester on the bus even unsubscribed (systemd
// tracks the sender of each job), through a match rule for it alone.
//
// Measured in a 100-service sandbox (`apply` after one manifest changed,
// write → restart job done): see the README's scale follow-ups.
//
// The bus connection is dialed at the first reload and kept until Close
// (an idle one costs PID 1 nothing: it sends the bus nothing unasked). A
// failed dial (no bus daemon, or it refuses) keeps this Conn's reloads on
// the private socket, as before.

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
// when there is none to try (RESIL_RELOAD_BUS=0 turns it off; a socket
// path that does not exist is none).
func reloadBusAddr() string {
	if os.Getenv("RESIL_RELOAD_BUS") == "0" {
		return ""
	}
	addr := systemBusAddress()
	path, err := pipeSocket(addr)
	if err != nil {
		return ""
	}
	if path[0] != '@' {
		if _, err := os.Stat(path); err != nil {
			return ""
		}
	}
	return addr
}

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
		stop := p.bound(dctx)
		p.wbuf = p.appendCall(p.wbuf[:0], "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "org.freedesktop.DBus", jobRemovedMatch)
		_, err = p.exchange()
		stop()
		if err != nil {
			p.close()
		}
	}
	if err != nil {
		c.pipeMu.Lock()
		c.busAddr = "" // no bus here: the private socket from now on
		c.pipeMu.Unlock()
		return nil
	}
	return p
}

// idleBusPipe returns the bus connection if a reload dialed it and no one
// uses it, else nil; the caller owns it until putBusPipe.
func (c *Conn) idleBusPipe() *pipe {
	c.pipeMu.Lock()
	defer c.pipeMu.Unlock()
	p := c.busPipe
	c.busPipe = nil
	return p
}

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
