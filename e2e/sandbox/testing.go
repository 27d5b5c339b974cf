package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ErrUnavailable is wrapped by the errors of Available (and of Start when
// Available fails): the host cannot run a sandbox at all.
var ErrUnavailable = errors.New("systemd sandbox unavailable")

// RequireEnv names the environment variable that, set to 1, makes New fail
// the test instead of skipping it when the host cannot run a sandbox. CI
// sets it, so that a broken runner does not pass silently.
const RequireEnv = "RESIL_E2E_REQUIRE"

// tools are the programs the sandbox runs on the host or inside.
var tools = []string{
	"unshare", "nsenter", "setpriv", "pivot_root", "mount", "umount",
	"chroot", "stat", "realpath", "mknod", "env",
	"/lib/systemd/systemd", "systemctl", "journalctl", "dbus-daemon",
}

// Available reports whether this host can run a sandbox: root, the tools
// (see Packages), a cgroup2 mount, and the namespaces and overlayfs over /
// (probed once, in a throw-away mount namespace). The error wraps
// ErrUnavailable.
func Available() error { return available() }

var available = sync.OnceValue(func() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (euid %d)", ErrUnavailable, os.Geteuid())
	}
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s (apt-get install %s)", ErrUnavailable, strings.Join(missing, ", "), Packages)
	}
	if _, err := cgroup2Mount(); err != nil {
		return err
	}
	return probe()
})

// probe mounts an overlay over / in new namespaces of every kind the
// sandbox uses. Nothing of it is visible on the host, and it does not start
// systemd.
func probe() error {
	dir, err := os.MkdirTemp("", "resil-sbx-probe-")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer os.RemoveAll(dir)
	const script = `set -e
mount -n -t tmpfs sbx-probe "$1"
mkdir "$1/u" "$1/w" "$1/m"
mount -n -t overlay -o "lowerdir=/,upperdir=$1/u,workdir=$1/w" sbx-probe "$1/m"
[ "$(stat -f -c %T "$1/m")" = overlayfs ]`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "unshare",
		"--mount", "--propagation", "private", "--pid", "--fork",
		"--uts", "--ipc", "--net", "--cgroup",
		"--", "/bin/sh", "-c", script, "sh", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: namespaces or overlayfs over / not permitted: %w: %s", ErrUnavailable, err, strings.TrimSpace(string(out)))
	}
	// The mounts lived in the probe's namespace only; dir/m must be empty.
	if entries, err := os.ReadDir(filepath.Join(dir, "m")); err == nil && len(entries) > 0 {
		return fmt.Errorf("%w: probe mount leaked to the host at %s", ErrUnavailable, dir)
	}
	return nil
}

// Missing is the one way a test of this repository gives up because a
// prerequisite is missing here (root, a program such as systemd-analyze or
// nc, zoneinfo, a sandbox): it skips t, or fails it when RESIL_E2E_REQUIRE=1,
// so that CI, and anyone who wants the whole suite, cannot pass with a test
// silently skipped. scripts/test-deps.sh installs the prerequisites.
// Skips that are not about the host (an opt-in benchmark, -short, a helper
// process) do not go through it.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("prerequisite missing: %s (%s=1: a missing prerequisite fails)", msg, RequireEnv)
	}
	t.Skipf("prerequisite missing: %s (%s=1 makes this a failure)", msg, RequireEnv)
}

// RequireRoot calls Missing unless the test runs as root; why says what
// needs it.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root (euid %d) %s", os.Geteuid(), why)
	}
}

// RequireProgram returns the path of a program, looked up in $PATH unless
// it is absolute, or calls Missing naming the Debian package that has it.
func RequireProgram(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s not found (apt-get install %s): %v", name, pkg, err)
	}
	return p
}

// RequireAvailable skips t when the host cannot run a sandbox (see
// Available), or fails it when RESIL_E2E_REQUIRE=1. For tests that call
// Start themselves; New calls it.
func RequireAvailable(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		Missing(t, "%v", err)
	}
}

// New starts a sandbox for t and stops it in t.Cleanup. It skips t when the
// host cannot run a sandbox (not root, no namespaces, no overlayfs, tools
// missing), or fails it when RESIL_E2E_REQUIRE=1. Boot is bounded by two
// minutes. Options.Logf defaults to t.Logf.
func New(t testing.TB, opts Options) *Sandbox {
	t.Helper()
	RequireAvailable(t)
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start sandbox: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop sandbox: %v", err)
		}
	})
	return s
}
