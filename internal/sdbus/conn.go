package sdbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// Default socket paths.
const (
	// PrivateSocket is systemd's own D-Bus socket (no bus daemon, no Hello).
	PrivateSocket = "/run/systemd/private"
	// SystemBusSocket is the system bus daemon's socket.
	SystemBusSocket = "/run/dbus/system_bus_socket"
)

const (
	systemdDest     = "org.freedesktop.systemd1"
	systemdPath     = godbus.ObjectPath("/org/freedesktop/systemd1")
	managerIface    = "org.freedesktop.systemd1.Manager"
	unitPathPrefix  = "/org/freedesktop/systemd1/unit/"
	propsIface      = "org.freedesktop.DBus.Properties"
	propsChanged    = propsIface + ".PropertiesChanged"
	errAlreadySubsc = "org.freedesktop.systemd1.AlreadySubscribed"
)

// Conn is one connection to systemd: the property pipe (pipe.go), which
// carries the reads (the small ones on the watch's connection while a
// watch runs, watch.go), and go-systemd's *dbus.Conn with the raw bus
// connection under it, dialed when first needed (the go-systemd methods
// the consumers use are in godbus.go; *Conn satisfies the consumer
// interfaces of this package and of actuators/systemd), for jobs, unit
// files and the three things go-systemd cannot do: counting every message
// on the wire (Wire), watching unit property-change signals without
// go-systemd's subscriber (WatchUnitSignals), and reading or setting
// manager properties with a context (GetManagerPropertyContext,
// SetManagerProperty).
//
// Close it with Close. ctx given to Dial bounds the dialing only: the
// connection lives until Close (go-systemd's *Context constructors close
// it when their ctx ends instead).
type Conn struct {
	// sdMu guards the go-systemd connection, dialed on its first use
	// (godbus.go): sd is go-systemd's *dbus.Conn; calls is the raw
	// connection under it (go-systemd's NewConnection dials one for calls
	// and one for signals; godbus makes them one). A command that only
	// reads (diff, apply with nothing to do) uses the property pipe alone
	// and never dials it: a connection to the private socket costs PID 1
	// about 2.5 ms.
	sdMu  sync.Mutex
	sd    *sddbus.Conn
	calls *godbus.Conn
	// sdRefs counts the calls and watches using sd; sdPinned keeps it
	// for good (a job whose result go-systemd sends later); sdIdle closes
	// it once unused on the private socket (see godbusIdle).
	sdRefs   int
	sdPinned bool
	sdIdle   *time.Timer
	private  bool
	wire     *Wire
	cancel   context.CancelFunc
	// life is the context the go-systemd connection lives in (cancelled
	// by Close).
	life context.Context
	// addr is where the property pipe (props.go) dials, for each batch;
	// pipeBatches counts the batches it carried (tests).
	addr        string
	pipeBatches atomic.Uint64
	// pipeMu guards the idle property pipe kept between calls
	// (pipepool.go), its timer, closed, watch, busAddr and busPipe.
	pipeMu    sync.Mutex
	pipeDials atomic.Uint64 // tests
	idlePipe  *pipe
	idleTimer *time.Timer
	closed    bool
	// warm is closed when Prewarm's dial is done (nil: none started).
	warm chan struct{}
	// watch is the running watch's connection (watch.go), nil if none.
	watch *watchConn
	// busAddr is the system bus a private Conn's reloads go through while
	// no watch runs ("" when none: busreload.go); busPipe is that
	// connection, kept idle between uses.
	busAddr string
	busPipe *pipe
}

// Wire counts D-Bus messages on the connection under a Conn, including
// the calls go-systemd makes on its own (AddMatch at connect) and the
// Hello of a bus connection. It is safe for concurrent use.
type Wire struct {
	calls      atomic.Uint64
	signals    atomic.Uint64
	watchCalls atomic.Uint64
	watchActs  atomic.Uint64
}

// WatchCalls returns the number of those calls sent on the watch's
// connection (watch.go).
func (w *Wire) WatchCalls() uint64 { return w.watchCalls.Load() }

// WatchActs returns the number of daemon-reloads and job calls among
// WatchCalls (reads left out).
func (w *Wire) WatchActs() uint64 { return w.watchActs.Load() }

// Calls returns the number of method calls sent.
func (w *Wire) Calls() uint64 { return w.calls.Load() }

// Signals returns the number of signals received (before any filtering).
func (w *Wire) Signals() uint64 { return w.signals.Load() }

func (w *Wire) outgoing(m *godbus.Message) {
	if m.Type == godbus.TypeMethodCall {
		w.calls.Add(1)
	}
}

func (w *Wire) incoming(m *godbus.Message) {
	if m.Type == godbus.TypeSignal {
		w.signals.Add(1)
	}
}

// Wire returns the message counters of c.
func (c *Conn) Wire() *Wire { return c.wire }

// Private reports whether c talks to systemd's private socket (no bus daemon).
func (c *Conn) Private() bool { return c.private }

// Dial connects to the host's systemd. As root it uses systemd's private
// socket (what dbus.NewSystemdConnectionContext does: EXTERNAL auth, no
// Hello), which works before the bus daemon is up; if that fails, or when
// not root, it uses the system bus (DBUS_SYSTEM_BUS_ADDRESS or
// /run/dbus/system_bus_socket; EXTERNAL auth, then Hello).
//
// Dialing is one connection, the property pipe, kept idle for the first
// call; the go-systemd connection is dialed by the first call that needs
// it (an address the pipe cannot dial: at once).
//
// Outcomes:
//   - (c, nil): connected; the caller owns c and must Close it.
//   - (nil, err): no connection; as root err names both attempts.
func Dial(ctx context.Context) (*Conn, error) {
	if os.Geteuid() == 0 {
		c, perr := DialPrivate(ctx, PrivateSocket)
		if perr == nil {
			return c, nil
		}
		c, berr := dialBusAddress(ctx, systemBusAddress())
		if berr == nil {
			return c, nil
		}
		return nil, errors.Join(perr, berr)
	}
	return dialBusAddress(ctx, systemBusAddress())
}

// DialBus connects through the bus daemon listening on the unix socket at
// path (EXTERNAL auth as the caller's uid, then Hello). Host-side tests use
// it with "/proc/PID/root/run/dbus/system_bus_socket" of a sandbox.
func DialBus(ctx context.Context, path string) (*Conn, error) {
	return dialBusAddress(ctx, "unix:path="+path)
}

// DialPrivate connects to systemd's private socket at path (EXTERNAL auth,
// no Hello: there is no bus daemon). systemd refuses peers outside its PID
// namespace, so a host process cannot use a sandbox's private socket.
func DialPrivate(ctx context.Context, path string) (*Conn, error) {
	return dial(ctx, "unix:path="+path, true)
}

func dialBusAddress(ctx context.Context, addr string) (*Conn, error) {
	return dial(ctx, addr, false)
}

func systemBusAddress() string {
	if a := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"); a != "" {
		return a
	}
	return "unix:path=" + SystemBusSocket
}

func dial(ctx context.Context, addr string, private bool) (*Conn, error) {
	// The go-systemd connection must outlive ctx (like
	// net.Dialer.DialContext), so it gets its own context, cancelled by
	// Close; ctx only bounds each dial.
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &Conn{private: private, wire: new(Wire), cancel: cancel, life: life, addr: addr}
	if private {
		c.busAddr = reloadBusAddr()
	}
	// Dialing proves systemd answers. The property pipe does it when it
	// can dial the address, and stays idle for the first call (most
	// commands start with a read); otherwise go-systemd's connection.
	p, err := dialPipe(ctx, addr, private, c.wire)
	switch {
	case err == nil:
		c.pipeDials.Add(1)
		c.putPipe(p, true)
		return c, nil
	case errors.Is(err, errPipeAddress):
		_, done, err := c.godbus(ctx)
		if err != nil {
			cancel()
			return nil, err
		}
		done()
		return c, nil
	}
	cancel()
	return nil, fmt.Errorf("connect to systemd at %s: %w", addr, err)
}

// bus returns the raw connection under the go-systemd one (go-systemd's
// calls and signals share it), dialing and counting a use as godbus does.
func (c *Conn) bus(ctx context.Context) (*godbus.Conn, func(), error) {
	c.sdMu.Lock()
	defer c.sdMu.Unlock()
	if _, err := c.godbusLocked(ctx); err != nil {
		return nil, nil, err
	}
	return c.calls, c.use(), nil
}

// godbusIdle is how long the go-systemd connection to the private socket
// stays open after its last use. systemd sends every signal to every
// connection on that socket, and godbus decodes each one (after a
// daemon-reload of 1000 units, over 2000 at about 25 µs): kept open by
// the agent for an enable or a probe long ago, it would cost that at every
// reload for nothing. The agent's reads, jobs and watch use connections of
// their own (the pipe, watch.go), so it is dialed only for the rarer calls
// (enable, disable, transient units, GetAll) and closed again. A bus
// connection stays: there a peer gets no signal it did not ask for.
const godbusIdle = time.Second

// use counts a use of the go-systemd connection; the returned func ends
// it. Called with sdMu held.
func (c *Conn) use() func() {
	c.sdRefs++
	if c.sdIdle != nil {
		c.sdIdle.Stop()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.sdMu.Lock()
			defer c.sdMu.Unlock()
			c.sdRefs--
			if c.sdRefs > 0 || c.sdPinned || !c.private || c.sd == nil || c.life.Err() != nil {
				return
			}
			if c.sdIdle == nil {
				c.sdIdle = time.AfterFunc(godbusIdle, c.closeIdleGodbus)
			} else {
				c.sdIdle.Reset(godbusIdle)
			}
		})
	}
}

// GodbusOpen reports whether the go-systemd connection is open (tests).
func (c *Conn) GodbusOpen() bool {
	c.sdMu.Lock()
	defer c.sdMu.Unlock()
	return c.sd != nil
}

// pin keeps the go-systemd connection open for good: a job queued with a
// result channel gets its result from a signal on it, later.
func (c *Conn) pin() {
	c.sdMu.Lock()
	c.sdPinned = true
	c.sdMu.Unlock()
}

// closeIdleGodbus closes the go-systemd connection if nothing uses it.
func (c *Conn) closeIdleGodbus() {
	c.sdMu.Lock()
	defer c.sdMu.Unlock()
	if c.sdRefs > 0 || c.sdPinned || c.sd == nil {
		return
	}
	c.sd.Close()
	c.sd, c.calls = nil, nil
}

// godbus returns the go-systemd connection, dialing it on the first call,
// and again once it closed (systemd closes every connection when it
// re-executes itself): a subscription's retry (observed/systemd's
// ErrDisconnected) then watches on the new one. A failed dial is returned
// and the next call dials again.
//
// The caller calls the returned func when done with it (see godbusIdle).
func (c *Conn) godbus(ctx context.Context) (*sddbus.Conn, func(), error) {
	c.sdMu.Lock()
	defer c.sdMu.Unlock()
	sd, err := c.godbusLocked(ctx)
	if err != nil {
		return nil, nil, err
	}
	return sd, c.use(), nil
}

// godbusLocked is godbus without the use count, with sdMu held.
func (c *Conn) godbusLocked(ctx context.Context) (*sddbus.Conn, error) {
	if c.sd != nil && c.calls.Connected() {
		return c.sd, nil
	}
	if c.sd != nil {
		c.sd.Close()
		c.sd, c.calls = nil, nil
	}
	if err := c.life.Err(); err != nil {
		return nil, fmt.Errorf("connect to systemd at %s: connection closed", c.addr)
	}
	// The connection lives until Close (c.life); while it is dialed, an
	// end of ctx closes it too (a hung handshake).
	life, cancel := context.WithCancel(c.life)
	detach := context.AfterFunc(ctx, cancel)
	var dialed []*godbus.Conn
	conn, err := sddbus.NewConnection(func() (*godbus.Conn, error) {
		// go-systemd dials twice, for calls and for signals. One
		// connection serves both: a connection to the private socket
		// costs PID 1 about 2.5 ms (TestSandboxCallCostsPID1), and there
		// systemd sends every signal to every connection, so two would
		// carry each one twice.
		if len(dialed) > 0 {
			dialed = append(dialed, dialed[0])
			return dialed[0], nil
		}
		bc, err := godbus.Dial(c.addr,
			godbus.WithContext(life),
			godbus.WithOutgoingInterceptor(c.wire.outgoing),
			godbus.WithIncomingInterceptor(c.wire.incoming))
		if err != nil {
			return nil, err
		}
		if err := bc.Auth([]godbus.Auth{godbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			bc.Close()
			return nil, err
		}
		if !c.private {
			if err := bc.Hello(); err != nil {
				bc.Close()
				return nil, err
			}
		}
		dialed = append(dialed, bc)
		return bc, nil
	})
	if !detach() && err == nil {
		conn.Close()
		err = ctx.Err()
	}
	if err == nil && len(dialed) != 2 {
		conn.Close()
		err = fmt.Errorf("go-systemd dialed %d connections, want 2", len(dialed))
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("connect to systemd at %s: %w", c.addr, err)
	}
	c.sd, c.calls = conn, dialed[0]
	return conn, nil
}

// Close closes the connections under c.
func (c *Conn) Close() {
	c.pipeMu.Lock()
	c.closed = true
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	warm := c.warm
	c.pipeMu.Unlock()
	if warm != nil {
		<-warm // Prewarm's dial; its pipe is closed, c being closed
	}
	c.closeIdlePipe()
	c.closeBusPipe()
	if w := c.watching(); w != nil {
		w.p.close() // its reader ends and closes the watch's channel, as godbus did
	}
	// First cancel: it ends a dial in progress (which holds sdMu), and
	// godbus checks it under sdMu, so no dial starts after it.
	c.cancel()
	c.sdMu.Lock()
	if c.sdIdle != nil {
		c.sdIdle.Stop()
	}
	if c.sd != nil {
		c.sd.Close()
	}
	c.sdMu.Unlock()
}

func (c *Conn) manager(bc *godbus.Conn) godbus.BusObject { return bc.Object(systemdDest, systemdPath) }

// GetManagerPropertyContext reads one org.freedesktop.systemd1.Manager
// property, bounded by ctx (go-systemd's GetManagerProperty takes none).
//
// It is sent on the property pipe when the pipe can dial the address (a
// read-only command then needs no other connection) and the value is of a
// type the pipe decodes; otherwise on the go-systemd connection.
func (c *Conn) GetManagerPropertyContext(ctx context.Context, name string) (godbus.Variant, error) {
	if p, err := c.takePipe(ctx); err == nil {
		vals, errs, err := p.getBatch(ctx, []getCall{{path: systemdPath, iface: managerIface, name: name}})
		c.putPipe(p, err == nil)
		switch {
		case err != nil:
			return godbus.Variant{}, fmt.Errorf("get manager property %s: %w", name, err)
		case errs[0] == nil:
			return godbus.MakeVariant(vals[0]), nil
		}
		var derr godbus.Error
		if errors.As(errs[0], &derr) {
			return godbus.Variant{}, fmt.Errorf("get manager property %s: %w", name, errs[0])
		}
		// A type the pipe does not decode: ask through godbus.
	} else if !errors.Is(err, errPipeAddress) {
		return godbus.Variant{}, fmt.Errorf("get manager property %s: %w", name, err)
	}
	bc, done, err := c.bus(ctx)
	if err != nil {
		return godbus.Variant{}, err
	}
	defer done()
	var v godbus.Variant
	err = c.manager(bc).CallWithContext(ctx, propsIface+".Get", 0, managerIface, name).Store(&v)
	if err != nil {
		return godbus.Variant{}, fmt.Errorf("get manager property %s: %w", name, err)
	}
	return v, nil
}

// GetAllPropertiesContext returns every property of every interface of a
// unit (Unit plus Service, Timer, ...) in one call, as go-systemd's method
// of the same name, which it shadows, does (the same map, values
// unwrapped from their variants), without go-systemd's reflective copy of
// the reply into an intermediate map: the decoded body is used as is
// (that copy was a third of the agent's CPU in a pass reading 100 units).
func (c *Conn) GetAllPropertiesContext(ctx context.Context, unit string) (map[string]any, error) {
	path := godbus.ObjectPath(unitPathPrefix + sddbus.PathBusEscape(unit))
	if !path.IsValid() {
		return nil, fmt.Errorf("invalid unit name: %q", unit)
	}
	bc, done, err := c.bus(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	call := bc.Object(systemdDest, path).CallWithContext(ctx, propsIface+".GetAll", 0, "")
	if call.Err != nil {
		return nil, call.Err
	}
	if len(call.Body) != 1 {
		return nil, fmt.Errorf("get properties of %s: reply has %d values, want 1", unit, len(call.Body))
	}
	props, ok := call.Body[0].(map[string]godbus.Variant)
	if !ok {
		return nil, fmt.Errorf("get properties of %s: reply is %T, want a{sv}", unit, call.Body[0])
	}
	out := make(map[string]any, len(props))
	for k, v := range props {
		out[k] = v.Value()
	}
	return out, nil
}

// SetManagerProperty sets one writable org.freedesktop.systemd1.Manager
// property at runtime (systemd 252: RuntimeWatchdogUSec, RebootWatchdogUSec,
// KExecWatchdogUSec, RuntimeWatchdogPreUSec, RuntimeWatchdogPreGovernor,
// ServiceWatchdogs; WatchdogDevice is read-only). The error of a read-only
// property is a godbus.Error named org.freedesktop.DBus.Error.PropertyReadOnly.
func (c *Conn) SetManagerProperty(ctx context.Context, name string, value godbus.Variant) error {
	bc, done, err := c.bus(ctx)
	if err != nil {
		return err
	}
	defer done()
	err = c.manager(bc).CallWithContext(ctx, propsIface+".Set", 0, managerIface, name, value).Err
	if err != nil {
		return fmt.Errorf("set manager property %s: %w", name, err)
	}
	return nil
}

// WatchUnitSignals delivers systemd's PropertiesChanged signals for unit
// objects (every interface: Unit, Service, Timer...) and the manager's
// signals (UnitNew, UnitRemoved, JobNew, JobRemoved, Reloading, ...) to ch
// until stop is called. On a bus it asks systemd to emit signals
// (Manager.Subscribe) and the bus to route them (AddMatch), on go-systemd's
// connection. On the private socket, where systemd sends every signal to
// every peer anyway, it reads a connection of its own by hand (watch.go):
// a PropertiesChanged there carries only the properties of the types it
// decodes (basic types, arrays of them, structs of them), and signals
// arrive a few ms late, gathered. Other signals may also arrive on ch;
// filter them.
//
// stop undoes the subscription and returns once nothing more is sent on ch;
// the caller keeps ownership of ch. If the connection closes, godbus closes
// ch. One watcher per Conn at a time.
//
// On the private socket the watch's connection also carries reloads, jobs
// and small reads of this Conn, whose replies its reader hands over in the
// order they come, after every signal sent before them: whoever receives
// from ch must not wait for a call of this Conn (it would wait for itself
// once ch is full).
//
// Outcomes:
//   - (stop, nil): watching.
//   - (nil, err): nothing registered.
func (c *Conn) WatchUnitSignals(ctx context.Context, ch chan<- *godbus.Signal) (stop func(), err error) {
	if _, err := pipeSocket(c.addr); err == nil && c.private {
		return c.watchRaw(ctx, ch) // watch.go
	}
	match := []godbus.MatchOption{
		godbus.WithMatchInterface(propsIface),
		godbus.WithMatchMember("PropertiesChanged"),
		godbus.WithMatchPathNamespace(godbus.ObjectPath(unitPathPrefix[:len(unitPathPrefix)-1])),
	}
	// The manager's own signals (UnitNew, UnitRemoved, JobRemoved,
	// Reloading) feed the observer's cache.
	managerMatch := []godbus.MatchOption{
		godbus.WithMatchInterface(managerIface),
		godbus.WithMatchObjectPath(systemdPath),
	}
	sig, release, err := c.bus(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch unit signals: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()
	sig.Signal(ch)
	if !c.private {
		if err := sig.AddMatchSignalContext(ctx, match...); err != nil {
			sig.RemoveSignal(ch)
			return nil, fmt.Errorf("watch unit signals: add match: %w", err)
		}
		if err := sig.AddMatchSignalContext(ctx, managerMatch...); err != nil {
			_ = sig.RemoveMatchSignalContext(context.WithoutCancel(ctx), match...)
			sig.RemoveSignal(ch)
			return nil, fmt.Errorf("watch unit signals: add match: %w", err)
		}
	}
	subscribed := true
	if err := c.manager(sig).CallWithContext(ctx, managerIface+".Subscribe", 0).Err; err != nil {
		var derr godbus.Error
		if !errors.As(err, &derr) || derr.Name != errAlreadySubsc {
			if !c.private {
				_ = sig.RemoveMatchSignalContext(context.WithoutCancel(ctx), match...)
				_ = sig.RemoveMatchSignalContext(context.WithoutCancel(ctx), managerMatch...)
			}
			sig.RemoveSignal(ch)
			return nil, fmt.Errorf("watch unit signals: subscribe: %w", err)
		}
		subscribed = false // someone else on this connection subscribed; leave it to them
	}
	ok = true
	return func() {
		defer release()
		bg := context.WithoutCancel(ctx)
		if subscribed {
			_ = c.manager(sig).CallWithContext(bg, managerIface+".Unsubscribe", 0).Err
		}
		if !c.private {
			_ = sig.RemoveMatchSignalContext(bg, match...)
			_ = sig.RemoveMatchSignalContext(bg, managerMatch...)
		}
		sig.RemoveSignal(ch)
	}, nil
}
