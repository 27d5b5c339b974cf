package sdbus

// Tests against a real systemd 252 booted by e2e/sandbox. They skip when the
// host cannot run a sandbox (not root, no namespaces or overlayfs), unless
// RESIL_E2E_REQUIRE=1. Dial's private-socket path as root is covered from
// inside a sandbox by actuators/systemd's TestSandboxPrivateSocket.

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
)

func TestSandboxPrivateSocketFromHost(t *testing.T) {
	sb := sandbox.New(t, sandbox.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialPrivate(ctx, filepath.Join(sb.Root(), "run/systemd/private"))
	if err == nil {
		_, err = c.ListUnitsByNamesContext(ctx, []string{"dbus.service"})
		c.Close()
	}
	if err == nil {
		t.Fatal("the private socket answered a host peer; update the package doc and SYSTEMD-SANDBOX.md")
	}
	t.Logf("as documented: %v", err)
}
