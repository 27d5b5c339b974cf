// Package sandbox boots a real systemd (252, Debian 12) as PID 1 of private
// namespaces, for end-to-end tests of the reconciler against the real thing.
//
// A sandbox is systemd running as PID 1 of new PID, mount, UTS, IPC, network
// and cgroup namespaces. Its root is an overlay whose lower layer is the
// host's root and whose upper layer is a tmpfs, with fresh tmpfs on /run,
// /tmp, /var/log/journal and /etc/systemd/system, a private /proc, /dev and
// cgroup2 tree, and the host's pty as /dev/console. systemd boots into
// sandbox.target (basic.target plus D-Bus); units that touch the kernel or
// start host services are masked. Nothing is written to the host except a
// state dir under os.TempDir() and a cgroup2 leaf, both removed by Stop.
//
// DANGER: systemd started against the host's real root wipes the host's
// /tmp (systemd-tmpfiles --remove). The embedded inner.sh runs only as PID 1
// of a new PID namespace, and refuses to exec systemd unless / is the
// overlay and /run and /tmp are the tmpfs it mounted itself (file system
// type and device number checked after pivot_root). Bind targets under /tmp
// and /var/tmp are refused.
//
// Typical use from a test in another package:
//
//	func TestAgent(t *testing.T) {
//		bin := t.TempDir()
//		build := exec.Command("go", "build", "-o", filepath.Join(bin, "agent"), "resil.dev/resil/cmd/agent")
//		if out, err := build.CombinedOutput(); err != nil {
//			t.Fatalf("build: %v\n%s", err, out)
//		}
//		// The host's /tmp (where t.TempDir lives) is hidden inside; bind the
//		// directory somewhere else.
//		sb := sandbox.New(t, sandbox.Options{
//			Binds: []sandbox.Bind{{Host: bin, Target: "/opt/resil", ReadOnly: true}},
//		})
//		ctx := context.Background()
//		if err := sb.WriteFile("/etc/systemd/system/demo.service", unit, 0o644); err != nil {
//			t.Fatal(err)
//		}
//		out, err := sb.Run(ctx, "/opt/resil/agent", "apply")
//		...
//		props, err := sb.Show(ctx, "demo.service", "ActiveState", "SubState")
//	}
//
// Command and Run join every namespace of the sandbox (nsenter), so a
// process they start can use /run/systemd/private
// (dbus.NewSystemdConnectionContext) and the system bus. From the test
// process itself, use SystemdConn: it goes through the sandbox's dbus-daemon,
// because systemd refuses its private socket to peers outside its PID
// namespace.
//
// Requirements: root, overlayfs, a cgroup2 mount (/sys/fs/cgroup or
// /sys/fs/cgroup/unified) and the Debian packages in Packages. New skips the
// test when they are missing, unless RESIL_E2E_REQUIRE=1 is set, which turns
// the skip into a failure (for CI).
//
// Missing is that rule for every test of the repository, sandbox or not: a
// test that cannot run for want of root, a program (RequireProgram), zoneinfo
// or a sandbox goes through it, so RESIL_E2E_REQUIRE=1 leaves no silent skip.
// scripts/test-deps.sh (run by make test) installs the packages.
//
// Several sandboxes can run side by side; each has its own id ("sbx-" and 8
// hex digits), used for its hostname, its mount sources, its cgroup and the
// container= variable.
package sandbox

// Packages lists the Debian 12 packages the sandbox needs on the host;
// scripts/test-deps.sh installs them (and what other tests need):
//
//   - systemd: PID 1, systemctl, journalctl, busctl
//   - dbus: the system bus inside the sandbox (dbus-daemon)
//   - util-linux: unshare, nsenter, setpriv, pivot_root
//   - mount: mount, umount
//   - coreutils: chroot, stat, env, mknod, realpath
//   - bsdutils: script, to get a console when debugging by hand
//   - procps: ps and friends, for debugging inside
const Packages = "systemd dbus util-linux bsdutils mount procps coreutils"
