// Package sandbox boots a real systemd (252, Debian 12) as PID 1 of private
// PID, mount, UTS, IPC, network and cgroup namespaces, for end-to-end tests
// of the reconciler against the real thing. The root is an overlay (host
// root below, tmpfs above) with fresh tmpfs on /run, /tmp, /var/log/journal
// and /etc/systemd/system; systemd boots into sandbox.target (basic.target
// plus D-Bus) with kernel-touching units masked. The host keeps only a state
// dir under os.TempDir() and a cgroup2 leaf, both removed by Stop.
//
// DANGER: systemd against the host's real root wipes the host's /tmp.
// inner.sh execs systemd only as PID 1 of a new PID namespace, after
// checking that / is its overlay and /run and /tmp its own tmpfs; bind
// targets under /tmp and /var/tmp are refused.
//
// Use (see e2e/helpers_test.go for the full version):
//
//	// go build -o BIN/reconciler resil.dev/resil/cmd/reconciler, then:
//	sb := sandbox.New(t, sandbox.Options{ // t.TempDir is hidden inside: bind BIN
//		Binds: []sandbox.Bind{{Host: bin, Target: "/opt/resil", ReadOnly: true}},
//	})
//	out, err := sb.Run(ctx, "/opt/resil/reconciler", "apply", "--manifests", dir)
//	props, err := sb.Show(ctx, "demo.service", "ActiveState", "SubState")
//
// Command and Run join every namespace (nsenter), so what they start can use
// /run/systemd/private. The test process itself uses the system bus
// (SystemdConn, or sdbus.DialBus on Root()+"/run/dbus/system_bus_socket"):
// systemd refuses its private socket to peers outside its PID namespace.
//
// Missing is the one way any test of the repository gives up for want of
// root, a program, zoneinfo or a sandbox: it skips, or fails when
// RESIL_E2E_REQUIRE=1, so CI has no silent skip. scripts/test-deps.sh
// installs Packages. Sandboxes run side by side, each with its own id.
//
// Files:
//   - sandbox.go: Options, Bind, Start/Stop, Command, Run, Systemctl, Show,
//     Journal.
//   - testing.go: New (a sandbox per test), Available, Missing, Require*.
//   - seed.go: the unit tree copied in before boot (sandbox.target, masks).
//   - inner.sh: PID 1's setup inside the namespaces, then exec systemd.
//   - fs.go: WriteFile, ReadFile, Remove through Root(); symlinks resolve
//     inside the sandbox, never to the host.
//   - dbus.go: SystemBusAddress, SystemdConn. pty.go: the console.
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
