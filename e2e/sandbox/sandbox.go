package sandbox

import (
	"bufio"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

//go:embed inner.sh
var innerScript []byte

// Bind is a bind mount from the host into the sandbox, set up before
// pivot_root. Host is a file or directory on the host (symlinks resolved on
// the host); Target is an absolute path inside the sandbox (symlinks
// resolved inside the sandbox). Missing target directories, or an empty
// target file, are created in the overlay. Changes on either side are seen
// on the other, unless ReadOnly, which makes the mount read-only. Targets
// under /tmp and /var/tmp are refused: systemd-tmpfiles empties /tmp at
// boot, and would reach through the bind into the host's files.
type Bind struct {
	Host     string
	Target   string
	ReadOnly bool
}

// Options configure Start. The zero value boots a sandbox with generators
// masked.
type Options struct {
	Binds []Bind

	// MaskGenerators masks every systemd generator, which makes each
	// daemon-reload faster (here ~40 ms instead of ~100 ms; more on slower
	// hosts). It is the default: setting it is the same as leaving it
	// unset, and says so explicitly.
	MaskGenerators bool
	// RunGenerators lets the host's generators run inside the sandbox
	// (except those of host services, such as postgresql-generator). It
	// conflicts with MaskGenerators.
	RunGenerators bool

	// StopTimeout bounds the clean poweroff in Stop before SIGKILL.
	// Zero means 10s.
	StopTimeout time.Duration

	// Logf, when set, receives a line per lifecycle event (booted, stopped,
	// failed units when degraded). New sets it to t.Logf.
	Logf func(format string, args ...any)
}

// Sandbox is a running systemd in its own namespaces. Its methods are safe
// for concurrent use.
type Sandbox struct {
	id      string
	state   string // host dir: inner.sh, seed/, binds.sh, boot_id, root/, layers/
	cgroup  string // host cgroup2 dir of this sandbox; its payload/ holds systemd
	opts    Options
	cmd     *exec.Cmd // unshare; its only child is systemd
	pid     int       // host PID of systemd
	pidfd   int       // pidfd of pid, -1 when unknown
	master  *os.File  // pty master; /dev/console inside
	console *ring

	exited     chan struct{} // closed when cmd has been waited for
	exitErr    error         // cmd.Wait's result, valid after exited
	readerDone chan struct{} // closed when the console reader returns

	stopOnce sync.Once
	stopErr  error
}

const (
	// sigPoweroff is SIGRTMIN+4, systemd's "poweroff" signal. glibc's
	// SIGRTMIN is 34 (the kernel's 32 and 33 are taken by NPTL).
	sigPoweroff = syscall.Signal(34 + 4)

	defaultStopTimeout = 10 * time.Second
	pollInterval       = 25 * time.Millisecond

	// innerPath is PATH for everything run inside.
	innerPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// droppedCaps are removed from systemd's bounding set, so that nothing in
// the sandbox can load modules, set the host's clock, reach raw I/O or
// kexec, or read the host's kernel log.
var droppedCaps = []string{
	"sys_module", "sys_time", "sys_rawio", "sys_boot", "syslog",
	"mac_admin", "mac_override", "wake_alarm", "block_suspend", "mknod",
}

// Start boots a sandbox and returns once `systemctl is-system-running`
// reports running or degraded (failed units are passed to Logf). It polls
// until then, bounded by ctx only.
//
// Outcomes:
//   - (s, nil): systemd is up; call s.Stop when done.
//   - (nil, err): nothing is left behind (no process, mount, cgroup or
//     state dir); err includes the tail of the console when systemd was
//     started. Errors from Available wrap ErrUnavailable.
func Start(ctx context.Context, opts Options) (*Sandbox, error) {
	if opts.MaskGenerators && opts.RunGenerators {
		return nil, errors.New("sandbox: MaskGenerators and RunGenerators both set")
	}
	if err := Available(); err != nil {
		return nil, err
	}
	binds, err := resolveBinds(opts.Binds)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = defaultStopTimeout
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}

	s := &Sandbox{
		id:         "sbx-" + randomHex(4),
		opts:       opts,
		pidfd:      -1,
		console:    &ring{max: 64 << 10},
		exited:     make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	begin := time.Now()
	if err := s.start(ctx, binds); err != nil {
		if serr := s.Stop(); serr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", serr))
		}
		return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	s.opts.Logf("sandbox %s: booted in %v (pid %d)", s.id, time.Since(begin).Round(time.Millisecond), s.pid)
	return s, nil
}

func (s *Sandbox) start(ctx context.Context, binds []resolvedBind) error {
	if err := s.prepareHost(binds); err != nil {
		return err
	}
	master, slave, slavePath, err := openPTY()
	if err != nil {
		return err
	}
	s.master = master
	go func() {
		defer close(s.readerDone)
		_, _ = s.master.WriteTo(s.console)
	}()

	s.cmd = exec.Command("unshare",
		"--mount", "--propagation", "private", "--pid", "--fork",
		"--uts", "--ipc", "--net", "--kill-child",
		"--", "/bin/sh", filepath.Join(s.state, "inner.sh"), "stage1")
	s.cmd.Env = []string{
		"PATH=" + innerPath,
		"SBX_ID=" + s.id,
		"SBX_STATE=" + s.state,
		"SBX_CGROUP=" + filepath.Join(s.cgroup, "payload"),
		"SBX_CONSOLE=" + slavePath,
		"SBX_DROPCAPS=-" + strings.Join(droppedCaps, ",-"),
	}
	s.cmd.Stdin, s.cmd.Stdout, s.cmd.Stderr = slave, slave, slave
	s.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:  true,
		Setctty: true,
		Ctty:    0,
		// If the test binary dies, unshare dies, and --kill-child takes
		// systemd and with it the whole PID namespace.
		Pdeathsig: syscall.SIGKILL,
	}
	err = s.cmd.Start()
	slave.Close()
	if err != nil {
		close(s.exited)
		return fmt.Errorf("start unshare: %w", err)
	}
	go func() {
		s.exitErr = s.cmd.Wait()
		close(s.exited)
	}()

	if err := s.findSystemd(ctx); err != nil {
		return s.withConsole(err)
	}
	if err := s.waitRunning(ctx); err != nil {
		return s.withConsole(err)
	}
	return nil
}

// prepareHost creates the state dir and the cgroup leaf.
func (s *Sandbox) prepareHost(binds []resolvedBind) error {
	state := filepath.Join(os.TempDir(), "resil-"+s.id)
	if strings.ContainsAny(state, ",:= \t\n\\'\"") {
		return fmt.Errorf("state dir %q: overlayfs options cannot carry this path; set TMPDIR", state)
	}
	if err := os.Mkdir(state, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	s.state = state

	cgBase, err := cgroup2Mount()
	if err != nil {
		return err
	}
	cg := filepath.Join(cgBase, s.id)
	if err := os.Mkdir(cg, 0o755); err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	s.cgroup = cg
	if err := os.Mkdir(filepath.Join(cg, "payload"), 0o755); err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}

	for _, d := range []string{"root", "layers", "seed"} {
		if err := os.Mkdir(filepath.Join(state, d), 0o755); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	files := seed(seedSpec{
		ID:            s.id,
		MachineID:     randomHex(16),
		HostUnits:     enabledHostUnits("/etc/systemd/system"),
		Generators:    hostGeneratorNames(),
		RunGenerators: s.opts.RunGenerators,
	})
	if err := writeSeed(filepath.Join(state, "seed"), files); err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		"inner.sh": innerScript,
		"binds.sh": bindScript(binds),
		"boot_id":  []byte(newUUID() + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(state, name), data, 0o644); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	return nil
}

// findSystemd waits for unshare's child (PID 1 inside, systemd once
// inner.sh has exec'd it) and for that child to become systemd.
func (s *Sandbox) findSystemd(ctx context.Context) error {
	children := fmt.Sprintf("/proc/%d/task/%d/children", s.cmd.Process.Pid, s.cmd.Process.Pid)
	for {
		if s.pid == 0 {
			if b, err := os.ReadFile(children); err == nil {
				if f := strings.Fields(string(b)); len(f) > 0 {
					pid, err := strconv.Atoi(f[0])
					if err != nil {
						return fmt.Errorf("parse %s: %w", children, err)
					}
					fd, err := unix.PidfdOpen(pid, 0)
					if err != nil {
						return fmt.Errorf("pidfd of sandbox init %d: %w", pid, err)
					}
					s.pid, s.pidfd = pid, fd
				}
			}
		}
		if s.pid != 0 {
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", s.pid)); err == nil && filepath.Base(exe) == "systemd" {
				return nil
			}
		}
		select {
		case <-s.exited:
			return s.exitError("inner stages exited before systemd started")
		case <-ctx.Done():
			return fmt.Errorf("wait for systemd to start: %w", context.Cause(ctx))
		case <-time.After(pollInterval):
		}
	}
}

// waitRunning polls `systemctl is-system-running` until the system is
// running or degraded.
func (s *Sandbox) waitRunning(ctx context.Context) error {
	var last string
	for {
		out, _ := s.Run(ctx, "systemctl", "is-system-running")
		last = strings.TrimSpace(out)
		switch last {
		case "running":
			return nil
		case "degraded":
			failed, _ := s.Systemctl(ctx, "--failed", "--no-legend", "--plain")
			s.opts.Logf("sandbox %s: degraded, failed units:\n%s", s.id, failed)
			return nil
		case "maintenance", "stopping":
			return fmt.Errorf("systemd is %s", last)
		}
		// Anything else is transient: "initializing", "starting", an error
		// before the bus is up, or "offline" before /run/systemd/system
		// exists.
		select {
		case <-s.exited:
			return s.exitError("systemd exited during boot")
		case <-ctx.Done():
			return fmt.Errorf("wait for running (last state %q): %w", last, context.Cause(ctx))
		case <-time.After(pollInterval):
		}
	}
}

// exitError describes unshare's exit; call it after exited is closed.
func (s *Sandbox) exitError(what string) error {
	if s.exitErr == nil {
		return fmt.Errorf("%s: exit status 0", what)
	}
	return fmt.Errorf("%s: %w", what, s.exitErr)
}

// withConsole appends the console's last lines to err.
func (s *Sandbox) withConsole(err error) error {
	lines := strings.Split(strings.ReplaceAll(strings.TrimSpace(s.console.String()), "\r", ""), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return fmt.Errorf("%w\nconsole:\n%s", err, strings.Join(lines, "\n"))
}

// ID returns the sandbox's id, e.g. "sbx-0123abcd": its hostname, the
// container= variable of its PID 1 and the name of its cgroup.
func (s *Sandbox) ID() string { return s.id }

// PID returns the host PID of the sandbox's systemd.
func (s *Sandbox) PID() int { return s.pid }

// Root returns the sandbox's root as seen from the host: "/proc/PID/root".
// Absolute symlinks under it resolve against the host's root; prefer
// WriteFile and ReadFile, which resolve them inside the sandbox.
func (s *Sandbox) Root() string { return fmt.Sprintf("/proc/%d/root", s.pid) }

// Console returns the last 64 KiB written to the sandbox's /dev/console:
// the inner stages' errors and systemd's boot messages.
func (s *Sandbox) Console() string { return strings.ReplaceAll(s.console.String(), "\r", "") }

// Command returns a command that runs name inside all of the sandbox's
// namespaces (nsenter -t PID -m -p -u -i -n -C), with the sandbox's root
// and working directory and a small environment (PATH, LANG=C.UTF-8,
// SYSTEMD_COLORS=0, SYSTEMD_PAGER=cat); set Env to change it. The process
// stays in the test's cgroup, outside systemd's tree.
func (s *Sandbox) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append([]string{
		"-t", strconv.Itoa(s.pid), "-m", "-p", "-u", "-i", "-n", "-C", "-r", "-w", "--", name,
	}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Env = []string{"PATH=" + innerPath, "LANG=C.UTF-8", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=cat"}
	// nsenter forks for the PID namespace; if ctx kills nsenter, the child
	// may keep the output pipes open for a while.
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Run runs name inside the sandbox (see Command) and returns its combined
// output. The error, if any, includes the command line and the output.
func (s *Sandbox) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := s.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("run %s in %s: %w: %s", strings.Join(append([]string{name}, args...), " "), s.id, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Systemctl runs systemctl inside the sandbox (see Run).
func (s *Sandbox) Systemctl(ctx context.Context, args ...string) (string, error) {
	return s.Run(ctx, "systemctl", append([]string{"--no-pager"}, args...)...)
}

// Show returns `systemctl show` of unit: the listed properties, or all of
// them when props is empty. Unknown properties are absent from the map; a
// unit that does not exist reads as LoadState=not-found, not as an error.
func (s *Sandbox) Show(ctx context.Context, unit string, props ...string) (map[string]string, error) {
	// Timestamps in UTC, whatever the host's zone: tests compare them
	// with schedules written in UTC.
	args := []string{"show", "--timestamp=utc"}
	if len(props) > 0 {
		args = append(args, "--property="+strings.Join(props, ","))
	}
	args = append(args, "--", unit)
	// stdout only: systemctl warns on stderr ("changed on disk").
	cmd := s.Command(ctx, "systemctl", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("run systemctl %s in %s: %w: %s", strings.Join(args, " "), s.id, err, strings.TrimSpace(stderr.String()))
	}
	out := string(stdout)
	m := make(map[string]string)
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m, sc.Err()
}

// Journal runs journalctl --no-pager inside the sandbox with args, e.g.
// ("-u", "demo.service", "-o", "cat").
func (s *Sandbox) Journal(ctx context.Context, args ...string) (string, error) {
	return s.Run(ctx, "journalctl", append([]string{"--no-pager"}, args...)...)
}

// Stop powers the sandbox off: SIGRTMIN+4 to its systemd, SIGKILL to the
// whole PID namespace after Options.StopTimeout. It then waits for all of
// it to exit and removes the cgroup subtree and the state dir. Stop is
// idempotent; later calls return the first call's result.
func (s *Sandbox) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Sandbox) stop() error {
	begin := time.Now()
	var errs []error
	if s.cmd != nil && s.cmd.Process != nil {
		errs = append(errs, s.kill())
	}
	if s.master != nil {
		// All slave ends are gone with the namespace, so the reader sees EIO
		// soon; close the master anyway to wake it.
		select {
		case <-s.readerDone:
		case <-time.After(time.Second):
		}
		s.master.Close()
		<-s.readerDone
	}
	if s.pidfd >= 0 {
		unix.Close(s.pidfd)
		s.pidfd = -1
	}
	if s.cgroup != "" {
		errs = append(errs, removeCgroup(s.cgroup, 5*time.Second))
	}
	if s.state != "" {
		errs = append(errs, removeState(s.state))
	}
	err := errors.Join(errs...)
	if s.pid != 0 {
		s.opts.Logf("sandbox %s: stopped in %v", s.id, time.Since(begin).Round(time.Millisecond))
	}
	return err
}

// kill powers systemd off, escalates to SIGKILL, and waits for unshare,
// which reaps systemd before it exits.
func (s *Sandbox) kill() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if s.pidfd >= 0 {
		// pidfd: never signals a recycled PID.
		_ = unix.PidfdSendSignal(s.pidfd, sigPoweroff, nil, 0)
	} else {
		// systemd not found yet: unshare --kill-child takes the inner stage.
		_ = s.cmd.Process.Kill()
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(s.opts.StopTimeout):
	}
	s.opts.Logf("sandbox %s: no poweroff after %v, killing", s.id, s.opts.StopTimeout)
	if s.pidfd >= 0 {
		// SIGKILL to PID 1 of a PID namespace kills the whole namespace.
		_ = unix.PidfdSendSignal(s.pidfd, unix.SIGKILL, nil, 0)
		select {
		case <-s.exited:
			return nil
		case <-time.After(10 * time.Second):
		}
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("sandbox %s: unshare (pid %d) did not exit after SIGKILL", s.id, s.cmd.Process.Pid)
	}
}

// removeCgroup removes dir and the cgroups below it, deepest first,
// retrying while the kernel still counts exiting processes.
func removeCgroup(dir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var dirs []string
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if err == nil {
			for i := len(dirs) - 1; i >= 0; i-- {
				if rerr := unix.Rmdir(dirs[i]); rerr != nil && !errors.Is(rerr, unix.ENOENT) {
					err = fmt.Errorf("remove cgroup %s: %w", dirs[i], rerr)
					break
				}
			}
		}
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(pollInterval)
	}
}

// removeState removes the state dir, but only when nothing is mounted
// below it in the host's mount namespace: a bind leaked there would make
// RemoveAll delete host files.
func removeState(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("check mounts before removing %s: %w", dir, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			return fmt.Errorf("state dir %s: %s is mounted on the host, not removing", dir, f[4])
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove state dir: %w", err)
	}
	return nil
}

// cgroup2Mount returns where the cgroup2 hierarchy is mounted: /sys/fs/cgroup
// on a unified host, /sys/fs/cgroup/unified on a hybrid one.
func cgroup2Mount() (string, error) {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: no cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified", ErrUnavailable)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
