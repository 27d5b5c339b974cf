package sdbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	godbus "github.com/godbus/dbus/v5"
)

// pipeIdle is how long a property pipe stays open after a call, for the
// next one. A new connection to the private socket costs systemd about
// 2.5 ms of PID 1 (it sets up its whole object tree for every connection;
// TestSandboxCallCostsPID1, systemd 252), as much as 350 Gets; one
// observation makes two or three calls in a row. An idle pipe is closed after pipeIdle: systemd sends
// every signal to every connection on its private socket, and queues them
// for a reader that is not reading. Signals that arrived meanwhile are
// read and skipped by the next call.
const pipeIdle = 250 * time.Millisecond

// takePipe returns the idle pipe, or dials one. The caller owns it until
// putPipe.
func (c *Conn) takePipe(ctx context.Context) (*pipe, error) {
	c.pipeMu.Lock()
	warm := c.warm
	c.pipeMu.Unlock()
	if warm != nil {
		select {
		case <-warm:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c.pipeMu.Lock()
	p := c.idlePipe
	c.idlePipe = nil
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.pipeMu.Unlock()
	if p != nil {
		return p, nil
	}
	c.pipeDials.Add(1)
	return dialPipe(ctx, c.addr, c.private, c.wire)
}

// Prewarm dials the property pipe in the background, unless one is idle
// or being dialed, and keeps it idle (pipeIdle) for the next call. A new
// connection costs PID 1 about 2.5 ms; dialed while the caller does other
// work (a command loading its manifests, the agent's settle wait after a
// wake-up) it is ready when the observation begins, instead of that
// observation waiting for it. Calls meanwhile wait for it rather than
// dial a second; Close waits for it. A failed dial is left to the next
// call to retry.
func (c *Conn) Prewarm() {
	if _, err := pipeSocket(c.addr); err != nil {
		return
	}
	c.pipeMu.Lock()
	defer c.pipeMu.Unlock()
	if c.closed || c.warm != nil || c.idlePipe != nil {
		return
	}
	warm := make(chan struct{})
	c.warm = warm
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), prewarmTimeout)
		p, err := dialPipe(ctx, c.addr, c.private, c.wire)
		cancel()
		if err == nil {
			c.pipeDials.Add(1)
			c.putPipe(p, true)
		}
		c.pipeMu.Lock()
		c.warm = nil
		c.pipeMu.Unlock()
		close(warm)
	}()
}

// prewarmTimeout bounds Prewarm's dial.
const prewarmTimeout = 5 * time.Second

// putPipe keeps p as the idle pipe when ok (the call left it clean: every
// reply read), else closes it.
func (c *Conn) putPipe(p *pipe, ok bool) {
	if !ok {
		p.close()
		return
	}
	c.pipeMu.Lock()
	defer c.pipeMu.Unlock()
	if c.closed {
		p.close()
		return
	}
	if c.idlePipe != nil {
		c.idlePipe.close()
	}
	c.idlePipe = p
	if c.idleTimer == nil {
		c.idleTimer = time.AfterFunc(pipeIdle, c.closeIdlePipe)
	} else {
		c.idleTimer.Reset(pipeIdle)
	}
}

// closeIdlePipe closes the idle pipe, if any (pipeIdle passed, or Close).
func (c *Conn) closeIdlePipe() {
	if p := c.dropIdlePipe(); p != nil {
		p.close()
	}
}

// dropIdlePipe takes the idle pipe, if any, for the caller to close.
func (c *Conn) dropIdlePipe() *pipe { return c.takeSlot(&c.idlePipe) }

// takeSlot empties slot (c.idlePipe, c.busPipe) under pipeMu and returns
// what it held.
func (c *Conn) takeSlot(slot **pipe) *pipe {
	c.pipeMu.Lock()
	defer c.pipeMu.Unlock()
	p := *slot
	*slot = nil
	return p
}

// closeIdlePipeAcked is closeIdlePipe, waiting (at most
// reloadPeerWait) until systemd has dropped the connection: see
// pipe.closeAcked.
func (c *Conn) closeIdlePipeAcked() {
	if p := c.dropIdlePipe(); p != nil {
		p.closeAcked(reloadPeerWait)
	}
}

// reloadPeerWait bounds how long a reload waits for systemd to drop the
// idle pipe first.
const reloadPeerWait = 10 * time.Millisecond

// ReloadContext is the manager's Reload (daemon-reload), sent on the
// property pipe. A reload makes systemd send a signal for every unit to
// every connection on its private socket (UnitRemoved, then UnitNew, all
// before its reply: over 2000 at 1000 units). The pipe skips them reading
// their headers only; on the godbus connection each is decoded first
// (about 25 µs each) before the reply is seen. The godbus connection
// still decodes them meanwhile, as its signal watch must. (An A/B of
// edit -> active at 1000 units, 20 edits each: p50 1.81 s before, 1.79 s
// after, within this host's noise.) While a watch runs it goes on the
// watch's connection (watch.go); for a command, through the system bus
// daemon when it has this systemd (busreload.go). On an address the pipe
// does not dial it is go-systemd's call.
func (c *Conn) ReloadContext(ctx context.Context) error {
	if w := c.watching(); w != nil {
		if err := c.reloadOnWatch(ctx, w); !errors.Is(err, errWatchClosed) { // watch.go
			return err
		}
		// The watch's connection ended before the call was sent: the pipe.
	}
	if handled, err := c.reloadOnBus(ctx); handled { // busreload.go
		return err
	}
	p, err := c.takePipe(ctx)
	switch {
	case errors.Is(err, errPipeAddress):
		sd, done, err := c.godbus(ctx)
		if err != nil {
			return err
		}
		defer done()
		return sd.ReloadContext(ctx)
	case err != nil:
		return fmt.Errorf("daemon-reload: %w", err)
	}
	err = p.call(ctx, systemdPath, managerIface, "Reload")
	var derr godbus.Error
	c.putPipe(p, err == nil || errors.As(err, &derr)) // an error reply leaves it clean
	if err != nil {
		return fmt.Errorf("daemon-reload: %w", err)
	}
	return nil
}
