package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tortureBackend is what the torture suite needs from a backend: an agent
// to start and kill, the CLI, and the backend's artefacts (unit files,
// enablement, temp files, a foreign unit) read from the host.
type tortureBackend interface {
	name() string
	// root is the host directory holding the manifests symlink "cur" and
	// the rev-N directories it points to (git-sync layout).
	root() string
	// startAgent starts `reconciler run` with extra environment variables.
	startAgent(env ...string) *tortureAgent
	// cli runs the reconciler CLI with the backend's flags and returns
	// stdout, stderr and the exit code.
	cli(args ...string) (string, string, int)
	// unitFile and enabled report whether NAME's unit file and its
	// enablement artefact exist.
	unitFile(name string) bool
	enabled(name string) bool
	// tempFiles lists temporary files left in the unit dir, state dir and
	// the agent's TMPDIR.
	tempFiles() []string
	// foreignCheck reports what changed about the foreign unit set up at
	// the start ("" when untouched).
	foreignCheck() string
}

// tortureAgent is one `reconciler run`: its process, the tail of its
// output, and how to kill -9 it.
type tortureAgent struct {
	cmd     *exec.Cmd
	out     *tailBuffer
	done    chan struct{}
	err     error
	hostPID func() int // host PID of the agent itself (0 when not known yet)
}

// kill9 SIGKILLs the agent and waits for it to exit.
func (a *tortureAgent) kill9(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-a.done:
			return
		default:
		}
		if pid := a.hostPID(); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent's PID not found within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("agent did not exit within 30s of SIGKILL")
	}
}

// stop sends SIGTERM (without --stop-on-exit the services keep running)
// and waits; SIGKILL after 30s.
func (a *tortureAgent) stop(t *testing.T) {
	t.Helper()
	select {
	case <-a.done:
		return
	default:
	}
	if pid := a.hostPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		t.Errorf("agent did not exit within 30s of SIGTERM; killing it")
		a.kill9(t)
	}
}

// exited reports whether the agent has exited.
func (a *tortureAgent) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// startTortureAgent starts cmd with its output in a tail buffer.
func startTortureAgent(t *testing.T, cmd *exec.Cmd, hostPID func(*exec.Cmd) int) *tortureAgent {
	t.Helper()
	a := &tortureAgent{cmd: cmd, out: &tailBuffer{max: 128 << 10}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = a.out, a.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	a.hostPID = func() int { return hostPID(cmd) }
	go func() {
		a.err = cmd.Wait()
		close(a.done)
	}()
	return a
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("cache drift")) {
		tortureCacheDrifts.Add(1)
		fmt.Fprintf(os.Stderr, "torture agent: %s\n", bytes.TrimSpace(p))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

// tail returns the last n lines.
func (b *tailBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(b.buf), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tortureTempName reports whether a file name looks like a temp file (renameio's
// ".NAME123", "NAME.tmp").
func tortureTempName(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".tmp") || strings.Contains(name, ".tmp.")
}

// tortureTempFiles lists temp-looking files below dir (all files when all).
func tortureTempFiles(dir string, all bool) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		if all || tortureTempName(d.Name()) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// --- process backend: the agent directly on this host ---

type procTorture struct {
	t       *testing.T
	dir     string // root: cur, rev-N
	state   string
	tmp     string // the agent's TMPDIR
	run     string
	foreign int // PID of a process resil does not own
}

func newProcTorture(t *testing.T, run string) *procTorture {
	t.Helper()
	base := t.TempDir()
	b := &procTorture{t: t, dir: filepath.Join(base, "m"), state: filepath.Join(base, "state"), tmp: filepath.Join(base, "tmp"), run: run}
	for _, d := range []string{b.dir, b.state, b.tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A foreign process: started before the agent, not resil's.
	cmd := exec.Command("/bin/sleep", "1000000")
	cmd.Env = []string{"TORTURE_RUN=" + run, "TORTURE_FOREIGN=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.foreign = cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	t.Cleanup(func() {
		// Everything this run started (the services outlive their agents).
		for _, p := range scanTortureProcs(run) {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	})
	return b
}

func (b *procTorture) name() string { return "process" }
func (b *procTorture) root() string { return b.dir }

func (b *procTorture) flags() []string {
	return []string{"--backend", "process", "--manifests", filepath.Join(b.dir, "cur"), "--state-dir", b.state, "--owner-check", "on"}
}

func (b *procTorture) startAgent(env ...string) *tortureAgent {
	args := append([]string{"run"}, b.flags()...)
	// Restarts all at once (run paces them by default): the invariant
	// checked is "what runs is what the files say", which a rollout holds
	// back on purpose (its kill -9 safety: TestRolloutResumesAfterAgentKill9Systemd).
	args = append(args, "--settle", "20ms", "--resync", "1s", "--log-format", "console", "--max-parallel-restarts", "0")
	cmd := exec.Command(filepath.Join(agentDir, "reconciler"), args...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=" + b.tmp}, env...)
	return startTortureAgent(b.t, cmd, func(c *exec.Cmd) int { return c.Process.Pid })
}

func (b *procTorture) cli(args ...string) (string, string, int) {
	cmd := exec.Command(filepath.Join(agentDir, "reconciler"), append(args, b.flags()...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=" + b.tmp}
	return runCLI(b.t, cmd)
}

func (b *procTorture) unitFile(name string) bool {
	_, err := os.Lstat(filepath.Join(b.state, "units", name+".service"))
	return err == nil
}

func (b *procTorture) enabled(name string) bool {
	_, err := os.Lstat(filepath.Join(b.state, "units", name+".enabled"))
	return err == nil
}

func (b *procTorture) tempFiles() []string {
	return append(tortureTempFiles(b.state, false), tortureTempFiles(b.tmp, true)...)
}

func (b *procTorture) foreignCheck() string {
	for _, p := range scanTortureProcs(b.run) {
		if p.pid == b.foreign {
			return ""
		}
	}
	return fmt.Sprintf("foreign process %d is gone", b.foreign)
}

// --- systemd backend: the agent inside the e2e sandbox ---

const (
	tortureForeignUnit = "torture-foreign.service"
	tortureAgentTmp    = "/var/lib/resil-tmp"
)

type sdTorture struct {
	e           *env
	run         string
	foreignFile []byte
	foreignPID  int
}

func newSDTorture(t *testing.T, run string, timeout time.Duration) *sdTorture {
	t.Helper()
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	e.ctx = ctx
	b := &sdTorture{e: e, run: run}
	if err := os.Remove(filepath.Join(e.host, "m")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sb.Run(ctx, "mkdir", "-p", tortureAgentTmp); err != nil {
		t.Fatal(err)
	}
	// A foreign unit, enabled and running before the agent starts.
	b.foreignFile = []byte(fmt.Sprintf("[Unit]\nDescription=not resil's\n[Service]\nExecStart=/bin/sleep 1000000\nEnvironment=TORTURE_RUN=%s TORTURE_FOREIGN=1\n[Install]\nWantedBy=multi-user.target\n", run))
	if err := e.sb.WriteFile("/etc/systemd/system/"+tortureForeignUnit, b.foreignFile, 0o644); err != nil {
		t.Fatal(err)
	}
	e.systemctl("daemon-reload")
	e.systemctl("enable", "--now", tortureForeignUnit)
	waitFor(t, "the foreign unit's process", 30*time.Second, func() bool {
		for _, p := range scanTortureProcs(run) {
			if p.env["TORTURE_FOREIGN"] == "1" {
				b.foreignPID = p.pid
				return true
			}
		}
		return false
	})
	return b
}

func (b *sdTorture) name() string { return "systemd" }
func (b *sdTorture) root() string { return b.e.host }

func (b *sdTorture) flags() []string {
	return []string{"--manifests", hostMount + "/cur", "--owner-check", "on"}
}

func (b *sdTorture) startAgent(env ...string) *tortureAgent {
	args := append([]string{"run", "--backend", "systemd", "--state-dir", "/var/lib/resil", "--resync", "1s", "--settle", "50ms",
		"--log-format", "console", "--max-parallel-restarts", "0"}, b.flags()...) // all at once, as procTorture
	cmd := b.e.sb.Command(b.e.ctx, agentBin, args...)
	cmd.Env = append(cmd.Env, "TMPDIR="+tortureAgentTmp)
	cmd.Env = append(cmd.Env, env...)
	// nsenter forks for the PID namespace: the agent is its only child.
	return startTortureAgent(b.e.t, cmd, func(c *exec.Cmd) int {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.Process.Pid, c.Process.Pid))
		if err != nil {
			return 0
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			return 0
		}
		pid, _ := strconv.Atoi(f[0])
		return pid
	})
}

func (b *sdTorture) cli(args ...string) (string, string, int) {
	return b.e.reconciler(append(args, b.flags()...)...)
}

func (b *sdTorture) path(p string) string { return b.e.sb.Root() + p }

func (b *sdTorture) unitFile(name string) bool {
	_, err := os.Lstat(b.path("/etc/systemd/system/" + name + ".service"))
	return err == nil
}

func (b *sdTorture) enabled(name string) bool {
	_, err := os.Lstat(b.path("/etc/systemd/system/multi-user.target.wants/" + name + ".service"))
	return err == nil
}

func (b *sdTorture) tempFiles() []string {
	var out []string
	ents, _ := os.ReadDir(b.path("/etc/systemd/system"))
	for _, e := range ents {
		if tortureTempName(e.Name()) {
			out = append(out, "/etc/systemd/system/"+e.Name())
		}
	}
	out = append(out, tortureTempFiles(b.path("/var/lib/resil"), false)...)
	return append(out, tortureTempFiles(b.path(tortureAgentTmp), true)...)
}

func (b *sdTorture) foreignCheck() string {
	var problems []string
	if data, err := os.ReadFile(b.path("/etc/systemd/system/" + tortureForeignUnit)); err != nil || !bytes.Equal(data, b.foreignFile) {
		problems = append(problems, fmt.Sprintf("unit file changed or gone (%v)", err))
	}
	if _, err := os.Lstat(b.path("/etc/systemd/system/multi-user.target.wants/" + tortureForeignUnit)); err != nil {
		problems = append(problems, "no longer enabled")
	}
	found := false
	for _, p := range scanTortureProcs(b.run) {
		found = found || p.pid == b.foreignPID
	}
	if !found {
		problems = append(problems, fmt.Sprintf("process %d is gone", b.foreignPID))
	}
	if len(problems) == 0 {
		return ""
	}
	return "foreign unit " + tortureForeignUnit + ": " + strings.Join(problems, "; ")
}

// --- processes, read from the host's /proc (both backends) ---

// tortureProc is a process of a torture run: a service (TORTURE_SVC set)
// or the foreign one.
type tortureProc struct {
	pid int
	uid int
	env map[string]string
}

func (p tortureProc) String() string {
	vars := make([]string, 0, len(p.env))
	for k := range p.env {
		if strings.HasPrefix(k, "TORTURE_") && k != "TORTURE_RUN" {
			vars = append(vars, k+"="+p.env[k])
		}
	}
	sort.Strings(vars)
	return fmt.Sprintf("pid %d uid %d %s", p.pid, p.uid, strings.Join(vars, " "))
}

// scanTortureProcs returns the live processes whose environment carries
// TORTURE_RUN=run.
func scanTortureProcs(run string) []tortureProc {
	marker := []byte("TORTURE_RUN=" + run + "\x00")
	ents, _ := os.ReadDir("/proc")
	var out []tortureProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(data, marker) {
			continue
		}
		p := tortureProc{pid: pid, uid: -1, env: map[string]string{}}
		for _, kv := range bytes.Split(data, []byte{0}) {
			if k, v, ok := strings.Cut(string(kv), "="); ok {
				p.env[k] = v
			}
		}
		if st, err := os.ReadFile("/proc/" + e.Name() + "/status"); err == nil {
			for _, l := range strings.Split(string(st), "\n") {
				if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
					p.uid, _ = strconv.Atoi(f[1])
				}
				if f := strings.Fields(l); len(f) > 1 && f[0] == "State:" && f[1] == "Z" {
					p.uid = -2 // zombie: gone
				}
			}
		}
		if p.uid < 0 {
			continue // a zombie, or gone between the two reads
		}
		out = append(out, p)
	}
	return out
}
