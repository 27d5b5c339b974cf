package sdbustest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
	"resil.dev/resil/internal/sdbus"
)

// DialSandbox is the real thing beside Fake: a connection from the test
// process (on the host) to the systemd of sb, through the sandbox's bus
// daemon (sdbus.DialBus; systemd refuses its private socket to a peer
// outside its PID namespace). It fails t if the bus does not answer within
// 10 s, and closes the connection in t.Cleanup.
func DialSandbox(t testing.TB, sb *sandbox.Sandbox) *sdbus.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := sdbus.DialBus(ctx, filepath.Join(sb.Root(), "run/dbus/system_bus_socket"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}
