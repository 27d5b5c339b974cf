package sdbus

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// fakePrivate is systemd's private socket as the pipe and the watch use
// it: EXTERNAL authentication, then Peer.Ping, Manager.ListUnitsByNames
// (every name loaded and active) and Properties.Get (MainPID; an error
// for any other property). The first ListUnitsByNames naming
// "drop.service" closes its connection unanswered.
type fakePrivate struct {
	t       *testing.T
	path    string
	dropped atomic.Bool
	mu      sync.Mutex
	conns   []net.Conn
	calls   map[string]int // member → calls answered
	wg      sync.WaitGroup
}

type fakeStatus struct {
	Name, Description, LoadState, ActiveState, SubState, Followed string
	Path                                                          godbus.ObjectPath
	JobID                                                         uint32
	JobType                                                       string
	JobPath                                                       godbus.ObjectPath
}

func newFakePrivate(t *testing.T) *fakePrivate {
	t.Helper()
	f := &fakePrivate{t: t, path: filepath.Join(t.TempDir(), "private"), calls: map[string]int{}}
	l, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			f.wg.Add(1)
			go func() { defer f.wg.Done(); f.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakePrivate) answered(member string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[member]
}

func (f *fakePrivate) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || !strings.Contains(line, "AUTH EXTERNAL") {
		return
	}
	if _, err := io.WriteString(c, "OK 0123456789abcdef0123456789abcdef\r\n"); err != nil {
		return
	}
	if line, err := r.ReadString('\n'); err != nil || line != "BEGIN\r\n" {
		return
	}
	for {
		m, err := godbus.DecodeMessage(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				f.t.Logf("fake: decode: %v", err)
			}
			return
		}
		if m.Type != godbus.TypeMethodCall {
			continue
		}
		member, _ := m.Headers[godbus.FieldMember].Value().(string)
		reply := &godbus.Message{Type: godbus.TypeMethodReply, Headers: map[godbus.HeaderField]godbus.Variant{
			godbus.FieldReplySerial: godbus.MakeVariant(m.Serial()),
		}}
		switch member {
		case "Ping":
		case "ListUnitsByNames":
			names, _ := m.Body[0].([]string)
			if len(names) > 0 && names[0] == "drop.service" && f.dropped.CompareAndSwap(false, true) {
				return // closes c, unanswered
			}
			var out []fakeStatus
			for _, n := range names {
				out = append(out, fakeStatus{Name: n, Description: n, LoadState: "loaded", ActiveState: "active", SubState: "running",
					Path: godbus.ObjectPath(unitPathPrefix + sddbus.PathBusEscape(n)), JobPath: "/"})
			}
			reply.Headers[godbus.FieldSignature] = godbus.MakeVariant(godbus.SignatureOf(out))
			reply.Body = []any{out}
		case "Get":
			if name, _ := m.Body[1].(string); name == "MainPID" {
				v := godbus.MakeVariant(uint32(4242))
				reply.Headers[godbus.FieldSignature] = godbus.MakeVariant(godbus.SignatureOf(v))
				reply.Body = []any{v}
			} else {
				reply.Type = godbus.TypeError
				reply.Headers[godbus.FieldErrorName] = godbus.MakeVariant("org.freedesktop.DBus.Error.UnknownProperty")
				reply.Headers[godbus.FieldSignature] = godbus.MakeVariant(godbus.SignatureOf(""))
				reply.Body = []any{"no " + name}
			}
		default:
			f.t.Errorf("fake systemd: unexpected call %s", member)
			return
		}
		f.mu.Lock()
		f.calls[member]++
		f.mu.Unlock()
		if err := reply.EncodeTo(c, binary.LittleEndian); err != nil {
			f.t.Logf("fake: encode: %v", err)
			return
		}
	}
}

// TestReadsOnWatch: while a watch runs on the private socket, a unit list
// and a property read go on the watch's connection; systemd's error comes
// back as it is (not read again elsewhere); a read whose connection closes
// before the reply is made again on a property pipe; a cancelled context
// sends nothing.
func TestReadsOnWatch(t *testing.T) {
	f := newFakePrivate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := DialPrivate(ctx, f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch := make(chan *godbus.Signal, 16)
	stop, err := c.WatchUnitSignals(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if _, ok := c.watching().p.conn.(*blockingConn); !ok {
		t.Errorf("watch connection is %T, want *blockingConn", c.watching().p.conn)
	}
	calls0, watch0 := c.Wire().Calls(), c.Wire().WatchCalls()
	list, err := c.ListUnitsByNamesContext(ctx, []string{"a.service", "b.service"})
	if err != nil || len(list) != 2 || list[1].Name != "b.service" || list[1].ActiveState != "active" {
		t.Fatalf("list: %v %+v", err, list)
	}
	p, err := c.GetUnitTypePropertyContext(ctx, "a.service", "Service", "MainPID")
	if err != nil || p.Value.Value() != uint32(4242) {
		t.Fatalf("MainPID: %v %v", err, p)
	}
	_, err = c.GetUnitTypePropertyContext(ctx, "a.service", "Service", "Nope")
	var derr godbus.Error
	if !errors.As(err, &derr) || derr.Name != "org.freedesktop.DBus.Error.UnknownProperty" {
		t.Errorf("unknown property: %v", err)
	}
	if dc, dw := c.Wire().Calls()-calls0, c.Wire().WatchCalls()-watch0; dc != 3 || dw != 3 {
		t.Errorf("%d calls, %d on the watch's connection; want 3 and 3", dc, dw)
	}
	if n := c.Wire().WatchActs(); n != 0 {
		t.Errorf("%d reloads or jobs counted for reads", n)
	}

	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	before := c.Wire().Calls()
	if _, err := c.ListUnitsByNamesContext(cctx, []string{"a.service"}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if d := c.Wire().Calls() - before; d != 0 {
		t.Errorf("cancelled: %d calls sent", d)
	}

	// The watch's connection closes under the read: read again on a pipe.
	list, err = c.ListUnitsByNamesContext(ctx, []string{"drop.service"})
	if err != nil || len(list) != 1 || list[0].Name != "drop.service" {
		t.Fatalf("list after the watch's connection closed: %v %+v", err, list)
	}
	if !f.dropped.Load() || f.answered("ListUnitsByNames") != 2 {
		t.Errorf("dropped %v, %d lists answered; want the first on the watch unanswered, the second answered", f.dropped.Load(), f.answered("ListUnitsByNames"))
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Error("a signal from the fake")
		}
	case <-time.After(10 * time.Second):
		t.Error("ch not closed after the watch's connection ended")
	}
}
