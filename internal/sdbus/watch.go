package sdbus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	godbus "github.com/godbus/dbus/v5"
)

// watchRaw is WatchUnitSignals on systemd's private socket: a connection
// of its own (dialed as the property pipe is), read by one goroutine that
// parses every message's header and decodes the body only of the signals
// the observer uses: PropertiesChanged of unit objects and the manager's
// own. systemd sends every signal to every peer of that socket: after a
// daemon-reload of 1000 units over 2000 at once, and go-systemd's
// connection decodes each one by reflection (about 25 µs and a dozen
// allocations), a hundred milliseconds of the agent's CPU per reload,
// taken from PID 1's share of a small host while it reloads.
//
// The values kept are those of the types decodeValue handles (every basic
// type, arrays of a basic type, structs of basic types): the properties
// the observer reads are all of them. A property of another type (an
// array of structs, a dictionary) is left out of the changed map.
//
// stop closes the connection and returns once its goroutine has ended;
// if the connection fails first, the goroutine closes ch, as godbus does.
func (c *Conn) watchRaw(ctx context.Context, ch chan<- *godbus.Signal) (stop func(), err error) {
	c.noBusReloads() // busreload.go: the agent reloads on this connection
	p, err := dialPipe(ctx, c.addr, true, c.wire)
	if err != nil {
		return nil, fmt.Errorf("watch unit signals: %w", err)
	}
	if err := p.blocking(); err != nil { // see blockingConn
		p.close()
		return nil, fmt.Errorf("watch unit signals: %w", err)
	}
	w := &watchConn{p: p, replies: map[uint32]*watchCall{}, jobs: map[string]*watchCall{}, wake: make(chan struct{}, 1)}
	stopped := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		defer func() {
			c.pipeMu.Lock()
			if c.watch == w {
				c.watch = nil // calls go on the pipe again
			}
			c.pipeMu.Unlock()
			w.fail()
		}()
		for {
			if p.r.Buffered() == 0 {
				// Let a burst gather: see watchGather.
				select {
				case <-stopped:
				case <-w.wake:
				case <-time.After(w.gather()):
				}
			}
			m, err := p.read()
			if err != nil {
				select {
				case <-stopped:
				default:
					close(ch) // the connection failed: Subscribe re-dials
				}
				return
			}
			if m.typ == msgMethodReturn || m.typ == msgError {
				w.replied(m)
				continue
			}
			if m.typ != msgSignal {
				continue
			}
			s := decodeSignal(m)
			if s == nil {
				continue
			}
			if m.member == "JobRemoved" && len(s.Body) == 4 {
				path, _ := s.Body[1].(godbus.ObjectPath)
				result, _ := s.Body[3].(string)
				w.jobRemoved(string(path), result)
			}
			select {
			case ch <- s:
			case <-stopped:
				return
			}
		}
	}()
	c.pipeMu.Lock()
	c.watch = w
	c.pipeMu.Unlock()
	return func() {
		c.pipeMu.Lock()
		if c.watch == w {
			c.watch = nil
		}
		c.pipeMu.Unlock()
		close(stopped)
		p.close()
		<-exited
	}, nil
}

// watchConn is the watch's connection while it runs, which also carries
// the agent's daemon-reloads and jobs (ReloadContext, RunJobsContext) and
// its small reads (ListUnitsByNamesContext, one property's Get):
// systemd sends every signal to every connection on its private socket,
// so a reload with the property pipe open would have PID 1 send each of
// its thousands of signals twice to the agent; on this connection, with
// the idle pipe closed first, once. Its reader hands each reply to its
// call and each JobRemoved to the job it ends.
type watchConn struct {
	p *pipe
	// mu guards writes (p.wbuf, p.serial) and what follows.
	mu      sync.Mutex
	closed  bool
	replies map[uint32]*watchCall // by serial
	jobs    map[string]*watchCall // by job object path, once queued
	// wake ends the reader's gathering pause once a call is sent: its
	// reply is read as soon as it comes.
	wake chan struct{}
}

// callKind is what a call on the watch connection is, for send.
type callKind uint8

const (
	callPlain  callKind = iota // a reply only
	callJob                    // a reply, then the job's JobRemoved
	callReload                 // a daemon-reload: a reply only
)

// watchCall is one call on a watchConn: its reply and, for a job, the
// result JobRemoved gives. Both are buffered to 1 and closed, unsent, when
// the connection ends.
type watchCall struct {
	reply chan message
	job   chan string // nil unless a job call
	gone  bool        // forgotten: no one waits (guarded by watchConn.mu)
}

// Errors of calls on the watch connection: errWatchClosed, nothing was
// sent (or, from a read, no reply came: read again elsewhere);
// errReplyLost, a reload was sent and no reply came (it may have run).
var (
	errWatchClosed = errors.New("systemd connection closed")
	errReplyLost   = errors.New("systemd connection closed before the reply (the call may have run)")
)

// gather is how long the reader waits before reading again (see
// watchGather): shorter while a call waits for its reply or a job for
// its end.
func (w *watchConn) gather() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.replies) > 0 || len(w.jobs) > 0 {
		return watchGather / 8
	}
	return watchGather
}

// send writes the calls build appends (each by p.appendCall or
// appendMethodCall) in one write and returns them registered; build
// returns, per call it appended, its kind. The reader, if it was letting
// signals gather, reads at once.
func (w *watchConn) send(build func(b []byte) ([]byte, []callKind)) ([]*watchCall, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, errWatchClosed
	}
	first := w.p.serial + 1
	var kinds []callKind
	w.p.wbuf, kinds = build(w.p.wbuf[:0])
	n := len(kinds)
	if w.p.serial-first+1 != uint32(n) {
		return nil, fmt.Errorf("watch connection: %d calls built, %d described", w.p.serial-first+1, n)
	}
	calls := make([]*watchCall, n)
	for i := range calls {
		calls[i] = &watchCall{reply: make(chan message, 1)}
		if kinds[i] == callJob {
			calls[i].job = make(chan string, 1)
		}
		if kinds[i] != callPlain {
			w.p.wire.watchActs.Add(1)
		}
		w.replies[first+uint32(i)] = calls[i]
	}
	w.p.wire.calls.Add(uint64(n))
	w.p.wire.watchCalls.Add(uint64(n))
	if _, err := w.p.conn.Write(w.p.wbuf); err != nil {
		for i := range calls {
			delete(w.replies, first+uint32(i))
		}
		return nil, err
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return calls, nil
}

// call sends the one call build appends (by p.appendCall or
// appendMethodCall) on the watch connection and returns its reply.
//
// ctx bounds the wait for the reply, not the write (the watch's
// connection has no deadlines): a call is small and systemd reads its
// connections' calls as they come.
func (w *watchConn) call(ctx context.Context, build func(b []byte) []byte) (message, error) {
	if err := ctx.Err(); err != nil {
		return message{}, err
	}
	calls, err := w.send(func(b []byte) ([]byte, []callKind) { return build(b), []callKind{callPlain} })
	if err != nil {
		return message{}, err
	}
	return calls[0].await(ctx)
}

// readOnWatchFailed reports whether a read that failed on the watch connection
// with err should be made again on a property pipe: the connection
// failed (the call may not have been answered), not systemd nor ctx.
func readOnWatchFailed(ctx context.Context, err error) bool {
	var derr godbus.Error
	return err != nil && !errors.As(err, &derr) && ctx.Err() == nil
}

// replied hands a reply to its call; a job call's job is then known by
// its path.
func (w *watchConn) replied(m message) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.replies[m.replySerial]
	if c == nil {
		return
	}
	delete(w.replies, m.replySerial)
	if c.job != nil && !c.gone && m.typ == msgMethodReturn && m.sig == "o" {
		d := decoder{b: m.body, order: m.order}
		if path := d.string(); d.err == nil {
			w.jobs[path] = c
		}
	}
	c.reply <- m
}

// jobRemoved hands a JobRemoved's result to the job it ends.
func (w *watchConn) jobRemoved(path, result string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c := w.jobs[path]; c != nil {
		delete(w.jobs, path)
		c.job <- result
	}
}

// forget drops the jobs of calls no one waits for any more.
func (w *watchConn) forget(calls []*watchCall) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range calls {
		c.gone = true
	}
	for path, c := range w.jobs {
		if c.gone {
			delete(w.jobs, path)
		}
	}
}

// fail ends every call waiting: the connection is gone.
func (w *watchConn) fail() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	for serial, c := range w.replies {
		close(c.reply)
		if c.job != nil {
			close(c.job)
		}
		delete(w.replies, serial)
	}
	for path, c := range w.jobs {
		close(c.job)
		delete(w.jobs, path)
	}
}

// await returns the reply of c, a godbus.Error for an error reply.
func (c *watchCall) await(ctx context.Context) (message, error) {
	select {
	case m, ok := <-c.reply:
		if !ok {
			return m, errWatchClosed
		}
		if m.typ == msgError {
			return m, godbus.Error{Name: m.errName, Body: m.errBody}
		}
		return m, nil
	case <-ctx.Done():
		return message{}, ctx.Err()
	}
}

// watching returns the watch connection, if a watch runs.
func (c *Conn) watching() *watchConn {
	c.pipeMu.Lock()
	defer c.pipeMu.Unlock()
	return c.watch
}

// reloadOnWatch is ReloadContext on the watch connection, the idle pipe
// closed first and dropped by systemd (see watchConn, pipe.closeAcked).
func (c *Conn) reloadOnWatch(ctx context.Context, w *watchConn) error {
	c.closeIdlePipeAcked()
	calls, err := w.send(func(b []byte) ([]byte, []callKind) {
		return w.p.appendCall(b, systemdPath, managerIface, "Reload", systemdDest), []callKind{callReload}
	})
	if err != nil {
		return err // errWatchClosed: nothing sent, ReloadContext takes the pipe
	}
	if _, err := calls[0].await(ctx); err != nil {
		var derr godbus.Error
		switch {
		case errors.As(err, &derr):
			return derr
		case errors.Is(err, errWatchClosed):
			// Sent: not errWatchClosed, which would have ReloadContext
			// reload again on the pipe.
			return fmt.Errorf("daemon-reload: %w", errReplyLost)
		}
		return fmt.Errorf("daemon-reload: %w", err)
	}
	return nil
}

// runJobsOnWatch is RunJobsContext on the watch connection.
func (c *Conn) runJobsOnWatch(ctx context.Context, w *watchConn, jobs []Job, timeout time.Duration) ([]JobResult, error) {
	res := make([]JobResult, len(jobs))
	var kinds []jobCall
	calls, err := w.send(func(b []byte) ([]byte, []callKind) {
		b, kinds = w.p.appendJobCalls(b, jobs)
		ck := make([]callKind, len(kinds))
		for i, k := range kinds {
			if !k.get {
				ck[i] = callJob
			}
		}
		return b, ck
	})
	switch {
	case errors.Is(err, errWatchClosed):
		return nil, err // nothing sent: RunJobsContext takes the pipe
	case err != nil:
		return notQueued(len(jobs), err), nil
	}
	defer w.forget(calls)
	results := make([]<-chan string, len(jobs))
	for c, call := range calls {
		i := kinds[c].job
		m, err := call.await(ctx)
		var derr godbus.Error
		switch {
		case kinds[c].get && (err == nil || errors.As(err, &derr)):
			setMainStart(&res[i], jobs[i].Unit, m, err)
			continue
		case errors.As(err, &derr):
			res[i].Err = derr
			continue
		case err != nil:
			return res, fmt.Errorf("queue jobs: %w", err)
		}
		path, err := jobReply(m, jobs[i])
		if err != nil {
			res[i].Err = err
			continue
		}
		res[i].ID = jobID(path)
		results[i] = call.job
	}
	return res, awaitJobs(ctx, res, results, timeout)
}

// watchGather is how long the watch waits before reading again once it
// has read everything that had arrived. systemd writes each signal on its
// own (a reload: a few per unit, back to back); read as they come, each
// one wakes the reader's thread and then the observer's, thousands of
// wake-ups that take turns with PID 1 on a small host's CPUs while it
// reloads. Read after a short wait they come in a few large reads. A
// signal is a hint that wakes a pass after its settle delay (100 ms by
// default): a few ms more are nothing there.
const watchGather = 2 * time.Millisecond

// decodeSignal returns the signal m as godbus would deliver it, or nil
// when it is none the observer uses (or its body does not decode).
func decodeSignal(m message) *godbus.Signal {
	d := decoder{b: m.body, order: m.order}
	var body []any
	switch {
	case m.member == "PropertiesChanged" && m.iface == propsIface && strings.HasPrefix(m.path, unitPathPrefix) && m.sig == "sa{sv}as":
		iface := d.string()
		changed := map[string]godbus.Variant{}
		n := int(d.uint32())
		d.align(8)
		end := d.pos + n
		for d.err == nil && d.pos < end {
			d.align(8)
			key := d.string()
			sig := d.signature()
			if v, ok := d.value(sig); ok {
				g, err := signatureOf(sig)
				if err != nil {
					return nil
				}
				changed[key] = godbus.MakeVariantWithSignature(v, g)
			}
		}
		inv, _ := d.value("as")
		body = []any{iface, changed, inv}
	case m.path == string(systemdPath) && m.iface == managerIface:
		for rest := m.sig; rest != "" && d.err == nil; {
			t := firstType(rest)
			rest = rest[len(t):]
			v, ok := d.value(t)
			if !ok {
				return nil
			}
			body = append(body, v)
		}
	default:
		return nil
	}
	if d.err != nil {
		if m.member == "PropertiesChanged" {
			body = nil // still a change of that unit: its cache entry is read again
		} else {
			return nil
		}
	}
	return &godbus.Signal{Path: godbus.ObjectPath(m.path), Name: m.iface + "." + m.member, Body: body}
}

// signatures caches parsed signatures (string → godbus.Signature): a
// reload's signals carry thousands of properties of a dozen signatures.
var signatures sync.Map

// signatureOf is godbus.ParseSignature, cached.
func signatureOf(sig string) (godbus.Signature, error) {
	if g, ok := signatures.Load(sig); ok {
		return g.(godbus.Signature), nil
	}
	g, err := godbus.ParseSignature(sig)
	if err == nil {
		signatures.Store(sig, g)
	}
	return g, err
}

// value decodes one value of signature sig as the Go type godbus gives
// it; a type it does not decode is skipped and ok is false.
func (d *decoder) value(sig string) (v any, ok bool) {
	if sig == "" || firstType(sig) != sig {
		d.fail("signature %q is not one complete type", sig)
		return nil, false
	}
	switch sig[0] {
	case 'y':
		return d.byte(), true
	case 'b':
		return d.uint32() != 0, true
	case 'n':
		return int16(d.uint16()), true
	case 'q':
		return d.uint16(), true
	case 'i':
		return int32(d.uint32()), true
	case 'u':
		return d.uint32(), true
	case 'h':
		return godbus.UnixFDIndex(d.uint32()), true
	case 'x':
		return int64(d.uint64()), true
	case 't':
		return d.uint64(), true
	case 'd':
		return math.Float64frombits(d.uint64()), true
	case 's':
		return d.string(), true
	case 'o':
		return godbus.ObjectPath(d.string()), true
	case 'g':
		g, err := godbus.ParseSignature(d.signature())
		if err != nil {
			d.fail("signature value: %w", err)
		}
		return g, d.err == nil
	case 'a':
		switch sig {
		case "as":
			return arrayOf(d, 4, func() string { return d.string() }), true
		case "ao":
			return arrayOf(d, 4, func() godbus.ObjectPath { return godbus.ObjectPath(d.string()) }), true
		case "ay":
			n := int(d.uint32())
			return append([]byte{}, d.take(n)...), true
		case "au":
			return arrayOf(d, 4, func() uint32 { return d.uint32() }), true
		case "ai":
			return arrayOf(d, 4, func() int32 { return int32(d.uint32()) }), true
		case "at":
			return arrayOf(d, 8, func() uint64 { return d.uint64() }), true
		case "ax":
			return arrayOf(d, 8, func() int64 { return int64(d.uint64()) }), true
		}
	case '(':
		inner := sig[1 : len(sig)-1]
		if basicOnly(inner) {
			d.align(8)
			var out []any
			for rest := inner; rest != "" && d.err == nil; {
				t := rest[:1]
				rest = rest[1:]
				v, _ := d.value(t)
				out = append(out, v)
			}
			return out, d.err == nil
		}
	}
	d.skip(sig)
	return nil, false
}

// arrayOf decodes an array whose elements (aligned to align) elem reads.
func arrayOf[T any](d *decoder, align int, elem func() T) []T {
	n := int(d.uint32())
	d.align(align)
	end := d.pos + n
	if n < 0 || end > len(d.b) {
		d.fail("array of %d bytes past the end of the message", n)
		return nil
	}
	out := []T{}
	for d.err == nil && d.pos < end {
		out = append(out, elem())
	}
	return out
}

// skip moves past one value of the complete type sig.
func (d *decoder) skip(sig string) {
	if d.err != nil {
		return
	}
	if sig == "" || firstType(sig) != sig {
		d.fail("signature %q is not one complete type", sig)
		return
	}
	switch sig[0] {
	case 'y':
		d.take(1)
	case 'n', 'q':
		d.uint16()
	case 'b', 'i', 'u', 'h':
		d.uint32()
	case 'x', 't', 'd':
		d.uint64()
	case 's', 'o':
		d.string()
	case 'g':
		d.signature()
	case 'v':
		d.skip(d.signature())
	case 'a':
		n := int(d.uint32())
		d.align(alignOf(sig[1]))
		d.take(n)
	case '(', '{':
		d.align(8)
		for rest := sig[1 : len(sig)-1]; rest != "" && d.err == nil; {
			t := firstType(rest)
			if t == "" {
				d.fail("bad signature %q", sig)
				return
			}
			rest = rest[len(t):]
			d.skip(t)
		}
	default:
		d.fail("type %q", sig)
	}
}

func (d *decoder) uint16() uint16 {
	d.align(2)
	if v := d.take(2); v != nil {
		return d.order.Uint16(v)
	}
	return 0
}

// alignOf is the alignment of values of type code t.
func alignOf(t byte) int {
	switch t {
	case 'y', 'g', 'v':
		return 1
	case 'n', 'q':
		return 2
	case 'x', 't', 'd', '(', '{':
		return 8
	}
	return 4
}

// firstType returns the first complete type of signature sig ("" if it is
// malformed).
func firstType(sig string) string {
	if sig == "" {
		return ""
	}
	switch sig[0] {
	case 'a':
		t := firstType(sig[1:])
		if t == "" {
			return ""
		}
		return sig[:1+len(t)]
	case '(', '{':
		closer := byte(')')
		if sig[0] == '{' {
			closer = '}'
		}
		for i := 1; i < len(sig); {
			if sig[i] == closer {
				return sig[:i+1]
			}
			t := firstType(sig[i:])
			if t == "" {
				return ""
			}
			i += len(t)
		}
		return ""
	case ')', '}':
		return ""
	}
	return sig[:1]
}

// basicOnly reports whether sig is a sequence of basic type codes.
func basicOnly(sig string) bool {
	for i := 0; i < len(sig); i++ {
		if !strings.ContainsRune("ybnqiuxtdsogh", rune(sig[i])) {
			return false
		}
	}
	return sig != ""
}
