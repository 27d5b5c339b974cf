package sandbox

import (
	"context"
	"fmt"
	"os"
	"strconv"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// SystemBusAddress returns the D-Bus address of the sandbox's system bus as
// reachable from the host: its dbus-daemon's socket under Root().
func (s *Sandbox) SystemBusAddress() string {
	return "unix:path=" + s.Root() + "/run/dbus/system_bus_socket"
}

// SystemdConn connects the calling (host) process to the sandbox's systemd
// through the sandbox's system bus (EXTERNAL auth, then Hello). The test
// process cannot use /run/systemd/private: systemd refuses peers outside
// its PID namespace. Processes started by Command can, with
// dbus.NewSystemdConnectionContext. Close the connection when done.
func (s *Sandbox) SystemdConn(ctx context.Context) (*sddbus.Conn, error) {
	addr := s.SystemBusAddress()
	conn, err := sddbus.NewConnection(func() (*dbus.Conn, error) {
		c, err := dbus.Dial(addr, dbus.WithContext(ctx))
		if err != nil {
			return nil, err
		}
		if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			c.Close()
			return nil, err
		}
		if err := c.Hello(); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("connect to systemd of %s via %s: %w", s.id, addr, err)
	}
	return conn, nil
}
