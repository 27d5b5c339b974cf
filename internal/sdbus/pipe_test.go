package sdbus

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"
)

// fakeServer answers Properties.Get calls read with godbus's decoder, with
// replies encoded by godbus (in both byte orders), a signal before every
// fifth reply, replies of a window in reverse order, and an error for a
// property it does not know.
func fakeServer(t *testing.T, conn net.Conn, props map[string]any) {
	t.Helper()
	r := bufio.NewReader(conn)
	var pending []*godbus.Message
	flush := func() {
		for i := len(pending) - 1; i >= 0; i-- { // reverse order
			call := pending[i]
			serial := call.Serial()
			name := call.Body[1].(string)
			var reply *godbus.Message
			if v, ok := props[name]; ok {
				reply = &godbus.Message{Type: godbus.TypeMethodReply, Headers: map[godbus.HeaderField]godbus.Variant{
					godbus.FieldReplySerial: godbus.MakeVariant(serial),
					godbus.FieldSignature:   godbus.MakeVariant(godbus.SignatureOf(godbus.MakeVariant(v))),
				}, Body: []any{godbus.MakeVariant(v)}}
			} else {
				reply = &godbus.Message{Type: godbus.TypeError, Headers: map[godbus.HeaderField]godbus.Variant{
					godbus.FieldReplySerial: godbus.MakeVariant(serial),
					godbus.FieldErrorName:   godbus.MakeVariant("org.freedesktop.DBus.Error.UnknownProperty"),
					godbus.FieldSignature:   godbus.MakeVariant(godbus.SignatureOf("")),
				}, Body: []any{"no " + name}}
			}
			var order binary.ByteOrder = binary.LittleEndian
			if serial%2 == 0 {
				order = binary.BigEndian
			}
			if serial%5 == 0 {
				sig := &godbus.Message{Type: godbus.TypeSignal, Headers: map[godbus.HeaderField]godbus.Variant{
					godbus.FieldPath:      godbus.MakeVariant(godbus.ObjectPath("/org/freedesktop/systemd1")),
					godbus.FieldInterface: godbus.MakeVariant("org.freedesktop.systemd1.Manager"),
					godbus.FieldMember:    godbus.MakeVariant("Reloading"),
					godbus.FieldSignature: godbus.MakeVariant(godbus.SignatureOf(true)),
				}, Body: []any{true}}
				if err := sig.EncodeTo(conn, order); err != nil {
					return
				}
			}
			if err := reply.EncodeTo(conn, order); err != nil {
				return
			}
		}
		pending = pending[:0]
	}
	for {
		msg, err := godbus.DecodeMessage(r)
		if err != nil {
			return
		}
		if msg.Type != godbus.TypeMethodCall || msg.Headers[godbus.FieldMember].Value() != "Get" ||
			msg.Headers[godbus.FieldDestination].Value() != "org.freedesktop.systemd1" || len(msg.Body) != 2 {
			t.Errorf("unexpected message %v", msg)
			return
		}
		pending = append(pending, msg)
		if r.Buffered() == 0 {
			flush()
		}
	}
}

func TestPipeGetBatch(t *testing.T) {
	props := map[string]any{
		"FragmentPath":           "/etc/systemd/system/a.service",
		"DropInPaths":            []string{"/etc/systemd/system/a.service.d/x.conf", "/run/y.conf"},
		"Triggers":               []string{},
		"NeedDaemonReload":       true,
		"NRestarts":              uint32(7),
		"ExecMainStatus":         int32(-3),
		"ExecMainStartTimestamp": uint64(1 << 50),
		"Path":                   godbus.ObjectPath("/x"),
		"Nice":                   int64(-2),
		"Byte":                   byte(9),
		"Ratio":                  1.5,
	}
	client, server := socketPair(t)
	go fakeServer(t, server, props)
	p := &pipe{conn: client, r: bufio.NewReader(client), wire: new(Wire)}
	var calls []getCall
	var want []any
	for range 350 { // several windows
		for name, v := range props {
			calls = append(calls, getCall{path: "/org/freedesktop/systemd1/unit/a_2eservice", iface: "org.freedesktop.systemd1.Unit", name: name})
			want = append(want, v)
		}
	}
	calls = append(calls, getCall{path: "/u", iface: "i", name: "Missing"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	vals, errs, err := p.getBatch(ctx, calls)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if errs[i] != nil || !reflect.DeepEqual(vals[i], want[i]) {
			t.Fatalf("call %d (%s): %#v, %v; want %#v", i, calls[i].name, vals[i], errs[i], want[i])
		}
	}
	var derr godbus.Error
	if last := len(calls) - 1; !errors.As(errs[last], &derr) || derr.Name != "org.freedesktop.DBus.Error.UnknownProperty" || vals[last] != nil {
		t.Errorf("unknown property: %#v, %v", vals[last], errs[last])
	}
	if got := p.wire.Calls(); got != uint64(len(calls)) {
		t.Errorf("wire counted %d calls, want %d", got, len(calls))
	}
	server.Close()
	if _, _, err := p.getBatch(ctx, calls[:1]); err == nil {
		t.Error("getBatch on a closed pipe: no error")
	}
}

// A batch ends at ctx's end when systemd does not answer.
func TestPipeGetBatchContext(t *testing.T) {
	client, server := socketPair(t)
	go func() { _, _ = bufio.NewReader(server).WriteTo(discard{}) }()
	p := &pipe{conn: client, r: bufio.NewReader(client), wire: new(Wire)}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := p.getBatch(ctx, []getCall{{path: "/u", iface: "i", name: "n"}}); err == nil {
		t.Fatal("no error without a reply")
	}
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// appendCall's bytes decode with godbus as the call it means.
func TestPipeAppendCall(t *testing.T) {
	p := &pipe{}
	b := p.appendCall(nil, "/org/freedesktop/systemd1/unit/a_2eservice", "org.freedesktop.DBus.Properties", "Get", "org.freedesktop.systemd1", "org.freedesktop.systemd1.Service", "MainPID")
	b = p.appendCall(b, "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello", "org.freedesktop.DBus")
	r := bufio.NewReader(bytes.NewReader(b))
	m, err := godbus.DecodeMessage(r)
	if err != nil {
		t.Fatal(err)
	}
	if m.Serial() != 1 || m.Headers[godbus.FieldMember].Value() != "Get" || !reflect.DeepEqual(m.Body, []any{"org.freedesktop.systemd1.Service", "MainPID"}) ||
		m.Headers[godbus.FieldPath].Value() != godbus.ObjectPath("/org/freedesktop/systemd1/unit/a_2eservice") {
		t.Errorf("first call decodes as %v", m)
	}
	m, err = godbus.DecodeMessage(r)
	if err != nil {
		t.Fatal(err)
	}
	if m.Serial() != 2 || m.Headers[godbus.FieldMember].Value() != "Hello" || len(m.Body) != 0 {
		t.Errorf("second call decodes as %v", m)
	}
}

// socketPair returns both ends of a unix stream socket (buffered, as the
// socket to systemd is; net.Pipe is not).
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestPipeSocket(t *testing.T) {
	for _, c := range []struct{ addr, want string }{
		{"unix:path=/run/dbus/system_bus_socket", "/run/dbus/system_bus_socket"},
		{"unix:path=/run/x,guid=0123", "/run/x"},
		{"unix:guid=0123,path=/run/x", "/run/x"},
		{"unix:abstract=/tmp/dbus-x;unix:path=/run/y", "@/tmp/dbus-x"},
		{"tcp:host=localhost,port=1", ""},
		{"unix:tmpdir=/tmp", ""},
	} {
		got, err := pipeSocket(c.addr)
		if got != c.want || (c.want == "") != errors.Is(err, errPipeAddress) {
			t.Errorf("pipeSocket(%q) = %q, %v; want %q", c.addr, got, err, c.want)
		}
	}
}

// TestPipeCloseAcked: closeAcked returns once the peer has closed its end
// (the peer first reads the half-close, then takes its time), skipping
// what the peer still sends meanwhile; a peer that never closes holds it
// only until the wait.
func TestPipeCloseAcked(t *testing.T) {
	for _, tc := range []struct {
		name      string
		peerClose bool
	}{
		{"peer closes after EOF", true},
		{"peer never closes", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			closed := make(chan struct{})
			served := make(chan struct{})
			go func() {
				defer close(served)
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				_, _ = c.Write(bytes.Repeat([]byte("s"), 100<<10)) // signals queued for the pipe
				if _, err := c.Read(make([]byte, 1)); err == nil {
					t.Error("peer read data, want EOF")
				}
				if !tc.peerClose {
					<-closed // until the client is gone
					return
				}
				time.Sleep(50 * time.Millisecond) // a busy systemd
				close(closed)
			}()
			conn, err := net.Dial("unix", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			p := &pipe{conn: conn, r: bufio.NewReader(conn)}
			start := time.Now()
			p.closeAcked(map[bool]time.Duration{true: time.Minute, false: 100 * time.Millisecond}[tc.peerClose])
			if !tc.peerClose && time.Since(start) > 30*time.Second {
				t.Errorf("closeAcked held %v past its 100ms wait", time.Since(start))
			}
			select {
			case <-closed:
				if !tc.peerClose {
					t.Fatal("peer closed, want it still open")
				}
			default:
				if tc.peerClose {
					t.Fatal("closeAcked returned before the peer closed its end")
				}
				close(closed)
			}
			if _, err := conn.Write([]byte("x")); err == nil {
				t.Error("connection still open after closeAcked")
			}
			<-served
		})
	}
}
