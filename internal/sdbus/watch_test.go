package sdbus

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	godbus "github.com/godbus/dbus/v5"
)

// encodeSignal encodes a signal with godbus, in the given byte order.
func encodeSignal(t *testing.T, order binary.ByteOrder, path, iface, member string, body ...any) []byte {
	t.Helper()
	msg := &godbus.Message{Type: godbus.TypeSignal, Headers: map[godbus.HeaderField]godbus.Variant{
		godbus.FieldPath:      godbus.MakeVariant(godbus.ObjectPath(path)),
		godbus.FieldInterface: godbus.MakeVariant(iface),
		godbus.FieldMember:    godbus.MakeVariant(member),
	}, Body: body}
	if len(body) > 0 {
		msg.Headers[godbus.FieldSignature] = godbus.MakeVariant(godbus.SignatureOf(body...))
	}
	var buf bytes.Buffer
	if err := msg.EncodeTo(&buf, order); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDecodeSignal: the signals the raw watch decodes by hand come out as
// godbus decodes them (the observer reads them either way); a property
// of a type it does not decode is left out, and the values after it are
// still read right; other signals are dropped.
func TestDecodeSignal(t *testing.T) {
	unitPath := "/org/freedesktop/systemd1/unit/web_2eservice"
	changed := map[string]godbus.Variant{
		"ActiveState": godbus.MakeVariant("active"),
		"SubState":    godbus.MakeVariant("running"),
		"Job": godbus.MakeVariant(struct {
			ID   uint32
			Path godbus.ObjectPath
		}{7, "/org/freedesktop/systemd1/job/7"}),
		"Conditions": godbus.MakeVariant([]struct {
			A string
			B bool
			C bool
			D string
			E int32
		}{{"ConditionPathExists", false, false, "/x", 1}}),
		"InvocationID":           godbus.MakeVariant([]byte{1, 2, 3}),
		"MainPID":                godbus.MakeVariant(uint32(4242)),
		"ExecMainStatus":         godbus.MakeVariant(int32(-1)),
		"ExecMainStartTimestamp": godbus.MakeVariant(uint64(1 << 40)),
		"Names":                  godbus.MakeVariant([]string{"web.service", "www.service"}),
		"CPUWeight":              godbus.MakeVariant(uint64(100)),
		"OOMScoreAdjust":         godbus.MakeVariant(int32(-900)),
		"CanStart":               godbus.MakeVariant(true),
		"Ratio":                  godbus.MakeVariant(0.5),
		"Env":                    godbus.MakeVariant(map[string]string{"A": "b"}),
		"Small":                  godbus.MakeVariant(uint16(3)),
		"Nested":                 godbus.MakeVariant(godbus.MakeVariant("inner")),
		"Result":                 godbus.MakeVariant("success"),
	}
	skipped := map[string]bool{"Conditions": true, "Env": true, "Nested": true}
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		for _, tc := range []struct {
			name                string
			path, iface, member string
			body                []any
			want                bool
		}{
			{"PropertiesChanged", unitPath, propsIface, "PropertiesChanged",
				[]any{"org.freedesktop.systemd1.Service", changed, []string{"ExecStart"}}, true},
			{"JobRemoved", string(systemdPath), managerIface, "JobRemoved",
				[]any{uint32(9), godbus.ObjectPath("/org/freedesktop/systemd1/job/9"), "web.service", "done"}, true},
			{"Reloading", string(systemdPath), managerIface, "Reloading", []any{true}, true},
			{"UnitNew", string(systemdPath), managerIface, "UnitNew", []any{"web.service", godbus.ObjectPath(unitPath)}, true},
			{"UnitFilesChanged", string(systemdPath), managerIface, "UnitFilesChanged", nil, true},
			{"a job object's PropertiesChanged", "/org/freedesktop/systemd1/job/9", propsIface, "PropertiesChanged",
				[]any{"org.freedesktop.systemd1.Job", map[string]godbus.Variant{"State": godbus.MakeVariant("running")}, []string{}}, false},
			{"another interface", unitPath, "org.example.Other", "Changed", []any{"x"}, false},
		} {
			raw := encodeSignal(t, order, tc.path, tc.iface, tc.member, tc.body...)
			p := &pipe{r: bufio.NewReader(bytes.NewReader(raw))}
			m, err := p.read()
			if err != nil {
				t.Fatalf("%s: read: %v", tc.name, err)
			}
			got := decodeSignal(m)
			if !tc.want {
				if got != nil {
					t.Errorf("%s: decoded %+v, want dropped", tc.name, got)
				}
				continue
			}
			if got == nil {
				t.Fatalf("%s (%v): dropped", tc.name, order)
			}
			ref, err := godbus.DecodeMessage(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			want := &godbus.Signal{Path: godbus.ObjectPath(tc.path), Name: tc.iface + "." + tc.member, Body: ref.Body}
			if tc.member == "PropertiesChanged" {
				all := ref.Body[1].(map[string]godbus.Variant)
				keep := map[string]godbus.Variant{}
				for k, v := range all {
					if !skipped[k] {
						keep[k] = v
					}
				}
				want.Body = []any{ref.Body[0], keep, ref.Body[2]}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s (%v):\n got  %#v\n want %#v", tc.name, order, got, want)
			}
		}
	}
}

// TestDecodeSignalCorrupt: a body altered at any byte never panics the
// watch's reader; a unit's PropertiesChanged it cannot decode still comes
// out (with no body: the observer reads that unit again).
func TestDecodeSignalCorrupt(t *testing.T) {
	raw := encodeSignal(t, binary.LittleEndian, "/org/freedesktop/systemd1/unit/web_2eservice", propsIface, "PropertiesChanged",
		"org.freedesktop.systemd1.Service", map[string]godbus.Variant{
			"MainPID": godbus.MakeVariant(uint32(1)),
			"Job": godbus.MakeVariant(struct {
				ID   uint32
				Path godbus.ObjectPath
			}{1, "/j/1"}),
			"Env": godbus.MakeVariant(map[string]string{"A": "b"}),
		}, []string{"X"})
	p := &pipe{r: bufio.NewReader(bytes.NewReader(raw))}
	m, err := p.read()
	if err != nil {
		t.Fatal(err)
	}
	body := m.body
	for i := range body {
		for _, v := range []byte{0, 0xff, '(', 'a', 'v', 0x7f} {
			c := m
			c.body = append([]byte{}, body...)
			c.body[i] = v
			s := decodeSignal(c) // must not panic
			if s == nil {
				t.Fatalf("byte %d = %#x: a unit's PropertiesChanged dropped", i, v)
			}
		}
	}
}
