package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// helperEnv makes the test binary, run inside a sandbox, act as a small
// D-Bus client instead of running tests (see TestDBusInside).
const helperEnv = "RESIL_SANDBOX_TEST_HELPER"

// hostMarker is a file in the host's /tmp that must survive every test:
// systemd's tmpfiles must never see the host's /tmp.
var hostMarker = filepath.Join(os.TempDir(), fmt.Sprintf("resil-sbx-marker-%d", os.Getpid()))

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		if err := runHelper(h); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	want := []byte("host /tmp must keep this\n")
	if err := os.WriteFile(hostMarker, want, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if got, err := os.ReadFile(hostMarker); err != nil || !bytes.Equal(got, want) {
		fmt.Fprintf(os.Stderr, "FAIL: host marker %s damaged: %q, %v\n", hostMarker, got, err)
		code = 1
	}
	os.Remove(hostMarker)
	os.Exit(code)
}

// runHelper runs inside the sandbox, started through Command.
func runHelper(name string) error {
	if name != "dbus" {
		return fmt.Errorf("unknown helper %q", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// The private socket, as the agent will use it.
	conn, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("private socket: %w", err)
	}
	defer conn.Close()
	st, err := conn.ListUnitsByNamesContext(ctx, []string{"sandbox.target"})
	if err != nil {
		return fmt.Errorf("list units: %w", err)
	}
	fmt.Printf("private: sandbox.target %s\n", st[0].ActiveState)

	// The system bus.
	bus, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("system bus: %w", err)
	}
	defer bus.Close()
	var owner string
	if err := bus.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, "org.freedesktop.systemd1").Store(&owner); err != nil {
		return fmt.Errorf("system bus: %w", err)
	}
	fmt.Printf("bus: org.freedesktop.systemd1 owned by %s\n", owner)
	return nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestBoot(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	sb := New(t, Options{})
	t.Logf("boot to running: %v", time.Since(begin).Round(time.Millisecond))
	ctx := ctxT(t)

	out, err := sb.Systemctl(ctx, "is-system-running")
	if err != nil || strings.TrimSpace(out) != "running" {
		t.Fatalf("is-system-running = %q, %v; want running", out, err)
	}
	for cmd, want := range map[string]string{
		"hostname":                         sb.ID(),
		"stat -f -c %T /":                  "overlayfs",
		"stat -f -c %T /run":               "tmpfs",
		"stat -f -c %T /tmp":               "tmpfs",
		"cat /proc/1/comm":                 "systemd",
		"systemctl is-active dbus.service": "active",
		"systemctl get-default":            "sandbox.target",
	} {
		f := strings.Fields(cmd)
		got, err := sb.Run(ctx, f[0], f[1:]...)
		if err != nil || strings.TrimSpace(got) != want {
			t.Errorf("%s = %q, %v; want %q", cmd, got, err, want)
		}
	}
	// The sandbox's /tmp is its own: the host's marker is not there.
	if out, err := sb.Run(ctx, "test", "-e", hostMarker); err == nil {
		t.Errorf("host marker %s visible inside the sandbox: %s", hostMarker, out)
	}
	if _, err := sb.ReadFile(hostMarker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile(%s) = %v; want not exist", hostMarker, err)
	}
	bootID, err := sb.ReadFile("/proc/sys/kernel/random/boot_id")
	hostBootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil || bytes.Equal(bootID, hostBootID) {
		t.Errorf("boot_id inside = %q, %v; want a private one (host %q)", bootID, err, hostBootID)
	}
	if got, err := sb.Run(ctx, "grep", "^CapBnd", "/proc/1/status"); err != nil || strings.Contains(got, "000001ffffffffff") {
		t.Errorf("PID 1 bounding set = %q, %v; want capabilities dropped", got, err)
	}
}

const demoUnit = `[Unit]
Description=sandbox test unit

[Service]
ExecStart=/bin/sh -c 'echo hello-from-demo; exec sleep infinity'
`

func TestUnitLifecycle(t *testing.T) {
	t.Parallel()
	sb := New(t, Options{})
	ctx := ctxT(t)

	if err := sb.WriteFile("/etc/systemd/system/sbx-demo.service", []byte(demoUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	var reloads []time.Duration
	for range 5 {
		begin := time.Now()
		if _, err := sb.Systemctl(ctx, "daemon-reload"); err != nil {
			t.Fatal(err)
		}
		reloads = append(reloads, time.Since(begin))
	}
	slices.Sort(reloads)
	t.Logf("daemon-reload (systemctl via nsenter, generators masked): median %v, min %v, max %v",
		reloads[len(reloads)/2].Round(time.Millisecond), reloads[0].Round(time.Millisecond), reloads[len(reloads)-1].Round(time.Millisecond))

	if _, err := sb.Systemctl(ctx, "start", "sbx-demo.service"); err != nil {
		t.Fatal(err)
	}
	props, err := sb.Show(ctx, "sbx-demo.service", "ActiveState", "SubState", "LoadState", "NoSuchProperty")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ActiveState": "active", "SubState": "running", "LoadState": "loaded"}
	for k, v := range want {
		if props[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, props[k], v, props)
		}
	}
	if _, ok := props["NoSuchProperty"]; ok {
		t.Errorf("Show returned an unknown property: %v", props)
	}
	all, err := sb.Show(ctx, "sbx-demo.service")
	if err != nil || all["Id"] != "sbx-demo.service" || len(all) < 50 {
		t.Errorf("Show without props: %d properties, Id %q, %v", len(all), all["Id"], err)
	}

	// journald captures stdout; give it a moment to flush.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := sb.Journal(ctx, "-u", "sbx-demo.service", "-o", "cat")
		if err == nil && strings.Contains(out, "hello-from-demo") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journal of sbx-demo.service = %q, %v; want hello-from-demo", out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if _, err := sb.Systemctl(ctx, "stop", "sbx-demo.service"); err != nil {
		t.Fatal(err)
	}
	if p, err := sb.Show(ctx, "sbx-demo.service", "ActiveState"); err != nil || p["ActiveState"] != "inactive" {
		t.Errorf("after stop: %v, %v; want inactive", p, err)
	}
	if err := sb.Remove("/etc/systemd/system/sbx-demo.service"); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.ReadFile("/etc/systemd/system/sbx-demo.service"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile after Remove: %v, want not exist", err)
	}
}

func TestRunGenerators(t *testing.T) {
	t.Parallel()
	sb := New(t, Options{RunGenerators: true})
	ctx := ctxT(t)
	var reloads []time.Duration
	for range 5 {
		begin := time.Now()
		if _, err := sb.Systemctl(ctx, "daemon-reload"); err != nil {
			t.Fatal(err)
		}
		reloads = append(reloads, time.Since(begin))
	}
	slices.Sort(reloads)
	t.Logf("daemon-reload (systemctl via nsenter, host generators run): median %v",
		reloads[len(reloads)/2].Round(time.Millisecond))
	// Generators ran (they write below /run/systemd), the host service's
	// generator stayed masked.
	if out, err := sb.Run(ctx, "ls", "/run/systemd/generator"); err != nil {
		t.Errorf("no generator output: %v", err)
	} else if strings.Contains(out, "postgresql") {
		t.Errorf("postgresql-generator ran: %s", out)
	}
}

func TestBinds(t *testing.T) {
	t.Parallel()
	rw := t.TempDir()
	ro := t.TempDir()
	file := filepath.Join(t.TempDir(), "config.yaml")
	for p, data := range map[string]string{
		filepath.Join(rw, "from-host-before"): "before\n",
		filepath.Join(ro, "readonly"):         "ro\n",
		file:                                  "key: value\n",
	} {
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sb := New(t, Options{Binds: []Bind{
		{Host: rw, Target: "/srv/shared"},
		{Host: ro, Target: "/opt/resil/ro", ReadOnly: true},
		{Host: file, Target: "/etc/resil/config.yaml", ReadOnly: true},
		// /var/run is a symlink to /run: the target resolves inside.
		{Host: rw, Target: "/var/run/resil-shared"},
	}})
	ctx := ctxT(t)

	for p, want := range map[string]string{
		"/srv/shared/from-host-before":       "before",
		"/opt/resil/ro/readonly":             "ro",
		"/etc/resil/config.yaml":             "key: value",
		"/run/resil-shared/from-host-before": "before",
	} {
		if got, err := sb.Run(ctx, "cat", p); err != nil || strings.TrimSpace(got) != want {
			t.Errorf("cat %s = %q, %v; want %q", p, got, err, want)
		}
	}
	if _, err := os.Stat("/run/resil-shared"); err == nil {
		t.Errorf("bind target /var/run/resil-shared was created on the host's /run")
	}

	// Inside to host.
	if _, err := sb.Run(ctx, "sh", "-c", "echo inside > /srv/shared/from-inside"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(rw, "from-inside")); err != nil || string(got) != "inside\n" {
		t.Errorf("host sees %q, %v; want inside", got, err)
	}
	// Host to inside, while running.
	if err := os.WriteFile(filepath.Join(rw, "from-host-after"), []byte("after\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := sb.Run(ctx, "cat", "/srv/shared/from-host-after"); err != nil || strings.TrimSpace(got) != "after" {
		t.Errorf("inside sees %q, %v; want after", got, err)
	}
	// Read-only stays read-only.
	if out, err := sb.Run(ctx, "sh", "-c", "echo x > /opt/resil/ro/new"); err == nil {
		t.Errorf("write to read-only bind succeeded: %q", out)
	}
	if _, err := os.Stat(filepath.Join(ro, "new")); err == nil {
		t.Errorf("write to read-only bind reached the host")
	}
}

func TestWriteFileResolvesInside(t *testing.T) {
	t.Parallel()
	sb := New(t, Options{})
	ctx := ctxT(t)
	name := fmt.Sprintf("resil-sbx-escape-%d", os.Getpid())

	// /var/run -> /run is an absolute symlink; it must lead to the
	// sandbox's /run, not the host's.
	if err := sb.WriteFile("/var/run/"+name+"/f", []byte("inside\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/" + name); err == nil {
		os.RemoveAll("/run/" + name)
		t.Fatalf("WriteFile through /var/run wrote to the host's /run")
	}
	if got, err := sb.Run(ctx, "stat", "-c", "%a %s", "/run/"+name+"/f"); err != nil || strings.TrimSpace(got) != "600 7" {
		t.Errorf("stat inside = %q, %v; want 600 7", got, err)
	}
	got, err := sb.ReadFile("/run/" + name + "/f")
	if err != nil || string(got) != "inside\n" {
		t.Errorf("ReadFile = %q, %v", got, err)
	}
	if err := sb.WriteFile("relative", nil, 0o644); err == nil {
		t.Errorf("WriteFile accepted a relative path")
	}
}

func TestDBusInside(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Run a host-built Go binary inside: bind its directory.
	sb := New(t, Options{Binds: []Bind{{Host: filepath.Dir(exe), Target: "/opt/resil-test", ReadOnly: true}}})
	ctx := ctxT(t)

	cmd := sb.Command(ctx, "/opt/resil-test/"+filepath.Base(exe))
	cmd.Env = append(cmd.Env, helperEnv+"=dbus")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	for _, want := range []string{"private: sandbox.target active", "bus: org.freedesktop.systemd1 owned by :1."} {
		if !strings.Contains(string(out), want) {
			t.Errorf("helper output %q lacks %q", out, want)
		}
	}
}

func TestSystemdConnFromHost(t *testing.T) {
	t.Parallel()
	sb := New(t, Options{})
	ctx := ctxT(t)
	if err := sb.WriteFile("/etc/systemd/system/sbx-host.service", []byte(demoUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	conn, err := sb.SystemdConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.ReloadContext(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	if _, err := conn.StartUnitContext(ctx, "sbx-host.service", "replace", done); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r != "done" {
			t.Fatalf("start job: %s", r)
		}
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	st, err := conn.ListUnitsByNamesContext(ctx, []string{"sbx-host.service"})
	if err != nil || len(st) != 1 || st[0].ActiveState != "active" {
		t.Fatalf("ListUnitsByNames = %+v, %v; want active", st, err)
	}
}

func TestSideBySide(t *testing.T) {
	t.Parallel()
	a := New(t, Options{})
	b := New(t, Options{})
	ctx := ctxT(t)
	if a.PID() == b.PID() || a.ID() == b.ID() {
		t.Fatalf("same sandbox twice: %s/%d %s/%d", a.ID(), a.PID(), b.ID(), b.PID())
	}
	if err := a.WriteFile("/etc/systemd/system/sbx-only-a.service", []byte(demoUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Systemctl(ctx, "start", "sbx-only-a.service"); err != nil {
		t.Fatal(err)
	}
	pa, err := a.Show(ctx, "sbx-only-a.service", "ActiveState", "LoadState")
	if err != nil || pa["ActiveState"] != "active" {
		t.Errorf("a: %v, %v; want active", pa, err)
	}
	pb, err := b.Show(ctx, "sbx-only-a.service", "ActiveState", "LoadState")
	if err != nil || pb["LoadState"] != "not-found" {
		t.Errorf("b: %v, %v; want not-found", pb, err)
	}
	ha, _ := a.Run(ctx, "hostname")
	hb, _ := b.Run(ctx, "hostname")
	if strings.TrimSpace(ha) != a.ID() || strings.TrimSpace(hb) != b.ID() {
		t.Errorf("hostnames %q %q, want %s %s", ha, hb, a.ID(), b.ID())
	}
}

func TestStopCleansUp(t *testing.T) {
	t.Parallel()
	RequireAvailable(t)
	dir := t.TempDir()
	sb, err := Start(ctxT(t), Options{Logf: t.Logf, Binds: []Bind{{Host: dir, Target: "/srv/x"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Systemctl(ctxT(t), "start", "systemd-tmpfiles-clean.service"); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := sb.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop (poweroff, wait, clean up): %v", time.Since(begin).Round(time.Millisecond))
	if err := sb.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	assertGone(t, sb)
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("bound host dir gone: %v", err)
	}
}

func TestStopKillsStubborn(t *testing.T) {
	t.Parallel()
	RequireAvailable(t)
	sb, err := Start(ctxT(t), Options{Logf: t.Logf, StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Ignores SIGTERM: systemd would wait TimeoutStopSec (90s) for it.
	unit := "[Service]\nExecStart=/bin/sh -c 'trap \"\" TERM; while :; do sleep 1; done'\n"
	if err := sb.WriteFile("/etc/systemd/system/sbx-stubborn.service", []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Systemctl(ctxT(t), "start", "sbx-stubborn.service"); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := sb.Stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("stop took %v with StopTimeout 1s", d)
	}
	assertGone(t, sb)
}

// assertGone checks that a stopped sandbox left nothing on the host.
func assertGone(t *testing.T, sb *Sandbox) {
	t.Helper()
	pid, id := sb.PID(), sb.ID()
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("systemd (pid %d) still exists", pid)
	}
	if leftovers := processesIn(t, id); len(leftovers) > 0 {
		t.Errorf("processes left in %s's cgroup: %v", id, leftovers)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, "sbx-") {
			t.Errorf("sandbox mount on the host: %s", l)
		}
	}
	base, err := cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, id)); err == nil {
		t.Errorf("cgroup %s left behind", filepath.Join(base, id))
	}
	if _, err := os.Stat(filepath.Join(os.TempDir(), "resil-"+id)); err == nil {
		t.Errorf("state dir left behind")
	}
	if _, err := os.Stat(hostMarker); err != nil {
		t.Errorf("host marker: %v", err)
	}
}

// processesIn returns host PIDs whose cgroup path names the sandbox id.
func processesIn(t *testing.T, id string) []string {
	t.Helper()
	paths, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), "/"+id+"/") {
			out = append(out, filepath.Base(filepath.Dir(p)))
		}
	}
	sort.Strings(out)
	return out
}

// The tests below need no root.

func TestSeed(t *testing.T) {
	files := seed(seedSpec{
		ID:         "sbx-00000000",
		MachineID:  strings.Repeat("ab", 16),
		HostUnits:  []string{"postgresql.service", "remote-fs.target", "dbus.service", "apt-daily.timer", "getty@tty1.service"},
		Generators: []string{"systemd-fstab-generator", "postgresql-generator"},
	})
	got := map[string]string{}
	for _, f := range files {
		got[f.Path] = f.Link
	}
	for path, link := range map[string]string{
		"etc/systemd/system/default.target":                     "sandbox.target",
		"etc/systemd/system/postgresql.service":                 "/dev/null",
		"etc/systemd/system/apt-daily.timer":                    "/dev/null",
		"etc/systemd/system/getty@tty1.service":                 "/dev/null",
		"etc/systemd/system/systemd-sysctl.service":             "/dev/null",
		"etc/systemd/system/systemd-journald-audit.socket":      "/dev/null",
		"etc/systemd/system-generators/systemd-fstab-generator": "/dev/null",
		"etc/systemd/system-generators/postgresql-generator":    "/dev/null",
		"etc/systemd/system/sandbox.target":                     "",
		"etc/systemd/journald.conf.d/resil-sandbox.conf":        "",
	} {
		if l, ok := got[path]; !ok || l != link {
			t.Errorf("%s: link %q, present %v; want link %q", path, l, ok, link)
		}
	}
	for _, p := range []string{"etc/systemd/system/remote-fs.target", "etc/systemd/system/dbus.service"} {
		if _, ok := got[p]; ok {
			t.Errorf("%s masked; want it left alone", p)
		}
	}
	if !slices.IsSortedFunc(files, func(a, b seedFile) int { return strings.Compare(a.Path, b.Path) }) {
		t.Errorf("seed not sorted")
	}

	run := seed(seedSpec{ID: "x", MachineID: "y", Generators: []string{"systemd-fstab-generator", "postgresql-generator"}, RunGenerators: true})
	for _, f := range run {
		if f.Path == "etc/systemd/system-generators/systemd-fstab-generator" {
			t.Errorf("RunGenerators still masks systemd-fstab-generator")
		}
	}
}

func TestBindScript(t *testing.T) {
	got := string(bindScript([]resolvedBind{
		{Host: "/tmp/a b", Target: "/srv/it's", Dir: true},
		{Host: "/etc/x.yaml", Target: "/etc/y.yaml", ReadOnly: true},
	}))
	want := `# generated by package sandbox: one bind() call per Bind
bind '/tmp/a b' '/srv/it'\''s' dir rw
bind '/etc/x.yaml' '/etc/y.yaml' file ro
`
	if got != want {
		t.Errorf("bindScript:\n%s\nwant:\n%s", got, want)
	}
}

func TestResolveBindsRejects(t *testing.T) {
	dir := t.TempDir()
	for _, b := range []Bind{
		{Host: dir, Target: "relative"},
		{Host: dir, Target: "/"},
		{Host: dir, Target: "/a/../b"},
		{Host: dir, Target: "/tmp/x"},
		{Host: dir, Target: "/var/tmp"},
		{Host: filepath.Join(dir, "missing"), Target: "/a"},
	} {
		if _, err := resolveBinds([]Bind{b}); err == nil {
			t.Errorf("resolveBinds(%+v) = nil error", b)
		}
	}
	if _, err := Start(context.Background(), Options{MaskGenerators: true, RunGenerators: true}); err == nil {
		t.Errorf("Start accepted MaskGenerators with RunGenerators")
	}
}
