package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
	"gopkg.in/natefinch/lumberjack.v2"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

func TestLogRotationNoLineLost(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	logf := filepath.Join(h.dir, "logs", "chatty.log")
	os.MkdirAll(filepath.Dir(logf), 0o755)
	backups := 20
	h.run()
	// ~2.3 MB of numbered lines to stdout and stderr, then a crash mid-line.
	const n = 150000
	h.install(service("chatty", desired.ServiceSpec{
		Command: sh(fmt.Sprintf(`seq 1 %d | sed 's/^/line-/'; seq 1 1000 | sed 's/^/err-/' >&2; printf 'partial-no-newline'; kill -9 $$`, n)),
		Logs:    &desired.Logs{Stdout: logf, MaxSize: "1M", MaxBackups: &backups},
		Restart: &desired.RestartSpec{Policy: desired.RestartNever}}), false)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "chatty.service"})
	h.waitUnit("chatty.service", "crash", func(u *observed.Unit) bool { return u.ActiveState == "failed" })
	if u := h.unit("chatty.service"); u.Result != ResultSignal || u.ExecMainStatus != 9 {
		t.Fatalf("crash result: %+v", u)
	}
	var all []string
	waitFor(t, "all lines", func() bool {
		files, _ := filepath.Glob(filepath.Join(filepath.Dir(logf), "chatty*.log"))
		all = nil
		for _, f := range files {
			all = append(all, lines(t, f)...)
		}
		return len(all) >= n+1000+1
	})
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(logf), "chatty*.log"))
	if len(files) < 2 {
		t.Fatalf("no rotation: %v", files)
	}
	seen := map[string]int{}
	for _, l := range all {
		seen[l]++
	}
	for i := 1; i <= n; i++ {
		if seen["line-"+strconv.Itoa(i)] != 1 {
			t.Fatalf("line-%d seen %d times", i, seen["line-"+strconv.Itoa(i)])
		}
	}
	if seen["err-1000"] != 1 || seen["partial-no-newline"] != 1 {
		t.Fatalf("stderr or partial last line lost: err-1000 %d, partial %d", seen["err-1000"], seen["partial-no-newline"])
	}
	if len(all) != n+1000+1 {
		t.Fatalf("%d lines, want %d", len(all), n+1001)
	}
}

// Rotated files beyond maxBackups are removed by the writer itself, as the
// folder's owner for a user's folder (lumberjack's own clean-up ran as
// root by path on a goroutine of its own; it is off).
func TestLogRotationKeepsMaxBackups(t *testing.T) {
	base := logsBase(t)
	dir := filepath.Join(base, "alice")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 1234, 1234); err != nil {
		t.Fatal(err)
	}
	// Not lumberjack's: left alone.
	other := filepath.Join(dir, "app-notes.log")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var l logFiles
	defer l.close()
	two := 2
	w, err := l.get(filepath.Join(dir, "app.log"), &desired.Logs{MaxSize: "1M", MaxBackups: &two})
	if err != nil {
		t.Fatal(err)
	}
	if w.as == nil {
		t.Fatal("a user's folder written as root")
	}
	line := []byte(strings.Repeat("x", 1023) + "\n")
	for range 5 * 1024 {
		if err := w.writeLine(line); err != nil {
			t.Fatal(err)
		}
	}
	backups, _ := filepath.Glob(filepath.Join(dir, "app-*.log"))
	var rotated []string
	for _, b := range backups {
		if b != other {
			rotated = append(rotated, b)
		}
		var st unix.Stat_t
		if err := unix.Stat(b, &st); err != nil || (b != other && st.Uid != 1234) {
			t.Errorf("%s: owner %d (%v), want the folder's", b, st.Uid, err)
		}
	}
	if len(rotated) != 2 {
		t.Fatalf("rotated files %v, want 2", rotated)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("a file not lumberjack's removed: %v", err)
	}
}

// linesOf collects what copyLines writes.
type linesOf struct{ got []string }

func (l *linesOf) writeLine(b []byte) error {
	l.got = append(l.got, string(b))
	return nil
}

// copyLines keeps lines whole up to maxLine (its buffer grows from 4 KiB),
// cuts longer ones into maxLine pieces, and ends a last unterminated line.
func TestCopyLines(t *testing.T) {
	long := strings.Repeat("a", 20<<10)
	huge := strings.Repeat("b", maxLine+10)
	tests := []struct {
		name, in string
		want     []string
	}{
		{"short lines", "one\ntwo\n", []string{"one\n", "two\n"}},
		{"unterminated", "one\ntwo", []string{"one\n", "two\n"}},
		{"line above the first buffer", "x\n" + long + "\ny\n", []string{"x\n", long + "\n", "y\n"}},
		{"line above maxLine", huge + "\nz\n", []string{huge[:maxLine] + "\n", huge[maxLine:] + "\n", "z\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w linesOf
			copyLines(strings.NewReader(tt.in), &w)
			if len(w.got) != len(tt.want) {
				t.Fatalf("%d lines, want %d", len(w.got), len(tt.want))
			}
			for i := range w.got {
				if w.got[i] != tt.want[i] {
					t.Fatalf("line %d: %d bytes, want %d", i, len(w.got[i]), len(tt.want[i]))
				}
			}
		})
	}
}

// A process whose stderr follows stdout gets one FIFO, as fd 1 and fd 2
// (systemd's StandardError=inherit); a stderr file of its own gets a
// second. Either way every line reaches its file, also from a process the
// next agent adopted, which reads each FIFO once.
func TestOutputFIFOs(t *testing.T) {
	tests := []struct {
		name      string
		stderr    bool // logs.stderr set
		fifos     int
		outWant   []string
		errWant   []string
		sameFifos bool
	}{
		{name: "stderr follows stdout", fifos: 1, outWant: []string{"o1", "e1", "o2", "e2"}, sameFifos: true},
		{name: "stderr file of its own", stderr: true, fifos: 2, outWant: []string{"o1", "o2"}, errWant: []string{"e1", "e2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			logs := &desired.Logs{Stdout: filepath.Join(dir, "logs", "out.log")}
			if tc.stderr {
				logs.Stderr = filepath.Join(dir, "logs", "err.log")
			}
			// It prints one line to each stream, then again once go exists.
			gate := filepath.Join(dir, "go")
			obj := service("talk", desired.ServiceSpec{
				Command: sh(fmt.Sprintf(`echo o1; echo e1 >&2; while [ ! -e %s ]; do sleep 0.02; done; echo o2; echo e2 >&2; exec sleep 1000`, gate)),
				Logs:    logs, Restart: &desired.RestartSpec{Policy: desired.RestartNever}})
			h1 := newHarness(t, dir, Options{})
			h1.install(obj, true)
			h1.run()
			u := h1.waitUnit("talk.service", "running", isActive)
			rec := readTable(t, dir)["talk.service"]
			if (rec.Stderr == rec.Stdout) != tc.sameFifos {
				t.Fatalf("row stdout %s, stderr %s", rec.Stdout, rec.Stderr)
			}
			fifos, _ := filepath.Glob(filepath.Join(dir, "run", "talk.service.*"))
			if len(fifos) != tc.fifos {
				t.Fatalf("FIFOs %v, want %d", fifos, tc.fifos)
			}
			for _, fd := range []string{"1", "2"} {
				l, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(int(u.MainPID)), "fd", fd))
				if err != nil || (l != rec.Stdout && l != rec.Stderr) || (fd == "2" && l != rec.Stderr) {
					t.Fatalf("fd %s: %s %v (row %s, %s)", fd, l, err, rec.Stdout, rec.Stderr)
				}
			}
			waitFor(t, "first lines", func() bool {
				n := len(lines(t, logs.Stdout))
				if tc.stderr {
					n += len(lines(t, logs.Stderr))
				}
				return n == 2
			})
			h1.abandon()
			h2 := newHarness(t, dir, Options{})
			h2.run()
			if u2 := h2.waitUnit("talk.service", "adopted", isActive); u2.MainPID != u.MainPID {
				t.Fatalf("not adopted: pid %d, want %d", u2.MainPID, u.MainPID)
			}
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			check := func(path string, want []string) bool {
				if len(want) == 0 {
					return true
				}
				got := lines(t, path)
				if len(got) != len(want) {
					return false
				}
				seen := map[string]bool{}
				for _, l := range got {
					seen[l] = true
				}
				for _, w := range want {
					if !seen[w] {
						t.Fatalf("%s: %q, want %q", path, got, want)
					}
				}
				return true
			}
			waitFor(t, "every line in its file", func() bool {
				return check(logs.Stdout, tc.outWant) && check(logs.Stderr, tc.errWant)
			})
			if tc.stderr {
				return
			}
			if _, err := os.Stat(filepath.Join(dir, "logs", "err.log")); !os.IsNotExist(err) {
				t.Fatalf("stderr file written: %v", err)
			}
		})
	}
}

// The rotation settings follow the manifest: the writer of a path is kept
// for the agent's life, and a later get (a process started from a changed
// manifest) brings its maxSize and maxBackups (they stayed the first ones).
func TestLogFilesTakeChangedRotation(t *testing.T) {
	var l logFiles
	defer l.close()
	path := filepath.Join(t.TempDir(), "x.log")
	one := 1
	w, err := l.get(path, &desired.Logs{MaxSize: "1M", MaxBackups: &one})
	if err != nil {
		t.Fatal(err)
	}
	if w.lj.MaxSize != 1 || w.backups != 1 {
		t.Fatalf("first: %d MB, %d backups", w.lj.MaxSize, w.backups)
	}
	ten := 10
	w2, err := l.get(path, &desired.Logs{MaxSize: "5M", MaxBackups: &ten})
	if err != nil {
		t.Fatal(err)
	}
	if w2.lj != w.lj || w.lj.MaxSize != 5 || w.backups != 10 {
		t.Fatalf("after the change: same writer %v, %d MB, %d backups", w2.lj == w.lj, w.lj.MaxSize, w.backups)
	}
}

// logsBase returns a folder every user may traverse (t.TempDir is 0700).
func logsBase(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return base
}

func TestLogIdentity(t *testing.T) {
	base := logsBase(t)
	// mk makes a folder with an owner and mode.
	mk := func(t *testing.T, path string, uid, gid int, mode os.FileMode) {
		t.Helper()
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	ln := func(t *testing.T, target, path string, uid int) {
		t.Helper()
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(path, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	testLogIdentity(t, filepath.Join(base, "cases"), mk, ln)
}

func testLogIdentity(t *testing.T, base string, mk func(*testing.T, string, int, int, os.FileMode), ln func(*testing.T, string, string, int)) {
	if err := os.Mkdir(base, 0o755); err != nil {
		t.Fatal(err)
	}
	sticky := os.ModeSticky | 0o777
	// Another user's FIFO at the name would block root's open: the
	// kernel's sticky protections cover only opens that may create.
	stickyFile := logAccess{uid: nobody, gid: nobody}
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the log file's path
		want  logAccess                             // dir, dev, ino, rest not compared
	}{
		{"root only", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, 0o755)
			return d + "/x.log"
		}, logAccess{root: true}},
		{"a user's", func(t *testing.T, d string) string {
			mk(t, d, 1234, 4321, 0o755)
			return d + "/x.log"
		}, logAccess{uid: 1234, gid: nobody}},
		// /var/log/mysql is mysql:adm: the user's own group, not adm.
		{"a user's, another group", func(t *testing.T, d string) string {
			mk(t, d, 1, 4, 0o750)
			return d + "/x.log"
		}, logAccess{uid: 1, gid: 1}},
		{"a user's, folders to create", func(t *testing.T, d string) string {
			mk(t, d, 1234, 4321, 0o700)
			return d + "/a/b/x.log"
		}, logAccess{uid: 1234, gid: nobody}},
		{"root's, group may write", func(t *testing.T, d string) string {
			mk(t, d, 0, 4, 0o775)
			return d + "/x.log"
		}, logAccess{uid: nobody, gid: 4}},
		{"root's, anyone may write", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, 0o777)
			return d + "/x.log"
		}, logAccess{uid: nobody, gid: nobody}},
		// root's, in a folder of a user's: the user may swap it.
		{"root's in a user's", func(t *testing.T, d string) string {
			mk(t, d, 1234, 4321, 0o755)
			mk(t, d+"/sub", 0, 0, 0o755)
			return d + "/sub/x.log"
		}, logAccess{uid: 1234, gid: nobody}},
		// Ubuntu's /var/log (root:syslog 0775) above /var/log/app: the
		// group may swap app; root writes through app held open.
		{"root's below a folder its group may write", func(t *testing.T, d string) string {
			mk(t, d, 0, 4, 0o775)
			mk(t, d+"/app", 0, 0, 0o755)
			return d + "/app/x.log"
		}, logAccess{root: true, pinned: true}},
		// root's, in a sticky folder anyone may write: nobody else may
		// rename it away.
		{"root's in a sticky one", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, sticky)
			mk(t, d+"/sub", 0, 0, 0o755)
			return d + "/sub/x.log"
		}, logAccess{root: true}},
		// A folder to create in a sticky folder: another user may create
		// it first (their own, where the kernel protects nothing).
		{"to create in a sticky one", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, sticky)
			return d + "/new/x.log"
		}, logAccess{uid: nobody, gid: nobody}},
		{"the file in a sticky one", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, sticky)
			return d + "/x.log"
		}, stickyFile},
		// A user's symlink leads to a folder of root's: the user may
		// point it anywhere.
		{"a user's symlink", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, 0o755)
			mk(t, d+"/real", 0, 0, 0o755)
			ln(t, "real", d+"/link", 1234)
			return d + "/link/x.log"
		}, logAccess{uid: 1234, gid: nobody}},
		// root's symlink to a user's folder (/var/log/app -> /home/alice/logs).
		{"root's symlink to a user's", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, 0o755)
			mk(t, d+"/home", 1234, 4321, 0o755)
			mk(t, d+"/home/logs", 0, 0, 0o755)
			ln(t, d+"/home/logs", d+"/link", 0)
			return d + "/link/x.log"
		}, logAccess{uid: 1234, gid: nobody}},
		{"root's symlink to root's", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, 0o755)
			mk(t, d+"/real", 0, 0, 0o755)
			ln(t, "../"+filepath.Base(d)+"/real", d+"/link", 0)
			return d + "/link/x.log"
		}, logAccess{root: true}},
		// Sticky, but only a group may write: the kernel protects such a
		// folder only with protected_regular=2 and protected_fifos=2.
		{"the file in a sticky one a group may write", func(t *testing.T, d string) string {
			mk(t, d, 0, 4, os.ModeSticky|0o770)
			return d + "/x.log"
		}, logAccess{uid: nobody, gid: 4}},
		// The log file itself: a user's file (made before the agent, in
		// a sticky folder), root's symlink to a user's file, a user's
		// symlink, and root's own file.
		{"a user's file in a sticky one", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, sticky)
			if err := os.WriteFile(d+"/x.log", nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(d+"/x.log", 1234, 4321); err != nil {
				t.Fatal(err)
			}
			return d + "/x.log"
		}, logAccess{uid: 1234, gid: nobody}},
		{"root's symlink to a user's file", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, 0o755)
			mk(t, d+"/home", 1234, 4321, 0o755)
			ln(t, d+"/home/app.log", d+"/x.log", 0)
			return d + "/x.log"
		}, logAccess{uid: 1234, gid: nobody}},
		{"a user's symlink as the file", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, sticky)
			ln(t, "/etc/passwd", d+"/x.log", 1234)
			return d + "/x.log"
		}, logAccess{uid: 1234, gid: nobody}},
		// Two users: alice's symlink into bob's files (his
		// authorized_keys); writing as bob would let alice act as him.
		{"a user's symlink to another user's file", func(t *testing.T, d string) string {
			mk(t, d, 1234, 4321, 0o755)
			mk(t, d+"/bob", 1235, 1235, 0o755)
			ln(t, d+"/bob/keys", d+"/x.log", 1234)
			if err := os.WriteFile(d+"/bob/keys", nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(d+"/bob/keys", 1235, 1235); err != nil {
				t.Fatal(err)
			}
			return d + "/x.log"
		}, logAccess{uid: nobody, gid: nobody}},
		{"a user's folder in another user's", func(t *testing.T, d string) string {
			mk(t, d, 1234, 4321, 0o777)
			mk(t, d+"/sub", 1235, 1235, 0o755)
			return d + "/sub/x.log"
		}, logAccess{uid: nobody, gid: nobody}},
		{"root's file", func(t *testing.T, d string) string {
			mk(t, d, 0, 0, 0o755)
			if err := os.WriteFile(d+"/x.log", nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return d + "/x.log"
		}, logAccess{root: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.setup(t, filepath.Join(base, strings.ReplaceAll(c.name, " ", "-")))
			got, err := logIdentity(path)
			if err != nil {
				t.Fatal(err)
			}
			got.dir, got.dev, got.ino, got.rest = "", 0, 0, ""
			if got != c.want {
				t.Errorf("logIdentity = %+v, want %+v", got, c.want)
			}
		})
	}
}

// A log path naming a folder is refused, directly or through a symlink.
func TestLogIdentityRefusesFolder(t *testing.T) {
	base := logsBase(t)
	if err := os.Mkdir(filepath.Join(base, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d/..", filepath.Join(base, "up")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(base, "d"), filepath.Join(base, "up")} {
		if _, err := logIdentity(p); err == nil || !strings.Contains(err.Error(), "is a folder") {
			t.Errorf("logIdentity(%s) = %v, want a folder refused", p, err)
		}
	}
}

// Ubuntu's /var/log is root:syslog 0775: its group may swap
// /var/log/app for a symlink to /etc. The agent writes app's log as root
// (nobody could not write app) through app held open: lines and rotation
// stay in app. When app is removed and made again, the next failed write
// finds the new folder.
func TestLogFilePinnedBelowAFolderOthersMayWrite(t *testing.T) {
	base := logsBase(t)
	varlog, app, etc := filepath.Join(base, "varlog"), filepath.Join(base, "varlog", "app"), filepath.Join(base, "etc")
	for _, d := range []string{varlog, app, etc} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(varlog, 0, 4); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(varlog, 0o775); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(app, "app.log")
	w := openWriter(t, path, &desired.Logs{})
	mustWrite(t, w, "one\n")
	// The group swaps app for a symlink to etc.
	if err := os.Rename(app, app+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(etc, app); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, "two\n")
	w.mu.Lock()
	err := w.lj.Rotate()
	w.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, "three\n")
	if ents, _ := os.ReadDir(etc); len(ents) != 0 {
		t.Fatalf("written through the swapped folder: %v", ents)
	}
	if got := strings.Join(globLines(t, app+".old/app*.log"), " "); got != "one two three" {
		t.Fatalf("lines in the folder held open: %q, want \"one two three\"", got)
	}
	// The operator removes the folder and makes it again.
	if err := os.Remove(app); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(app + ".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(app, 0o755); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.lj.Close() // rotation: the next write creates the file
	w.mu.Unlock()
	mustWrite(t, w, "four\n")
	if b, err := os.ReadFile(path); err != nil || string(b) != "four\n" {
		t.Fatalf("after the folder was made again: %q, %v", b, err)
	}
}

// globLines returns the lines of the files matching pattern, oldest
// (lumberjack's backups sort first, the current file last) first.
func globLines(t *testing.T, pattern string) []string {
	t.Helper()
	files, _ := filepath.Glob(pattern)
	sort.Slice(files, func(i, j int) bool {
		return !strings.HasSuffix(files[i], "/app.log") && strings.HasSuffix(files[j], "/app.log") || files[i] < files[j] && strings.HasSuffix(files[i], "/app.log") == strings.HasSuffix(files[j], "/app.log")
	})
	var out []string
	for _, f := range files {
		out = append(out, lines(t, f)...)
	}
	return out
}

// A service's own log folder: the service may swap its log file for a
// symlink. The agent (root) writes there as the folder's owner, so the
// symlink gives nothing the owner could not write itself; a plain file is
// created and owned by that user.
func TestLogFileInAUsersFolderWrittenAsThatUser(t *testing.T) {
	base := logsBase(t)
	dir := usersLogFolder(t, base)
	secret := filepath.Join(base, "secret")
	if err := os.WriteFile(secret, []byte("root only\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "app.log")
	if err := os.Symlink(secret, path); err != nil {
		t.Fatal(err)
	}
	core, logged := observer.New(zap.InfoLevel)
	l := logFiles{log: zap.New(core)}
	defer l.close()
	w, err := l.get(path, &desired.Logs{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.writeLine([]byte("planted\n")); err == nil {
		t.Errorf("a write through the service's symlink to a file of root's succeeded")
	}
	if b, _ := os.ReadFile(secret); string(b) != "root only\n" {
		t.Fatalf("root's file written through the service's symlink: %q", b)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, "line\n")
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "line\n" || st.Uid != nobody {
		t.Errorf("log file %q owned by %d, want \"line\\n\" owned by %d", b, st.Uid, nobody)
	}
	var msgs []string
	for _, e := range logged.All() {
		msgs = append(msgs, e.Message)
	}
	if len(msgs) != 2 || !strings.HasPrefix(msgs[0], "log file write failed") || msgs[1] != "log file written again" {
		t.Errorf("agent log %q, want the failure once, then the recovery", msgs)
	}
}

// A log's identity is decided again while the agent runs: a folder that
// is chowned to a user after the first write is then written as that
// user (the root writer would otherwise keep appending, and rotating, by
// path in a folder the user controls).
func TestLogIdentityDecidedAgain(t *testing.T) {
	recheckEveryWrite(t)
	base := logsBase(t)
	dir := filepath.Join(base, "app")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "app.log")
	core, logged := observer.New(zap.InfoLevel)
	l := logFiles{log: zap.New(core)}
	defer l.close()
	w, err := l.get(path, &desired.Logs{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, "as root\n")
	// The operator hands the folder to the service's user, who replaces
	// the file.
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, "as the user\n")
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("no new log file (still writing to the removed one?): %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "as the user\n" || st.Uid != nobody {
		t.Errorf("log file %q owned by %d, want \"as the user\\n\" owned by %d", b, st.Uid, nobody)
	}
	if n := logged.FilterMessage("log file identity changed").Len(); n != 1 {
		t.Errorf("%d identity changes logged, want 1", n)
	}
	// Unchanged since: no more changes.
	mustWrite(t, w, "again\n")
	if n := logged.FilterMessage("log file identity changed").Len(); n != 1 {
		t.Errorf("%d identity changes logged, want 1", n)
	}
}

// A log file moved away (logrotate without copytruncate, with or without
// create: a new file at the path) is opened anew at its path at the next
// identity check.
func TestLogFileMovedAwayOpenedAgain(t *testing.T) {
	recheckEveryWrite(t)
	for _, create := range []bool{false, true} {
		t.Run(fmt.Sprintf("create=%v", create), func(t *testing.T) {
			path := filepath.Join(logsBase(t), "app.log")
			w := openWriter(t, path, &desired.Logs{})
			mustWrite(t, w, "one\n")
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			if create {
				if err := os.WriteFile(path, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			mustWrite(t, w, "two\n")
			a, _ := os.ReadFile(path + ".1")
			b, _ := os.ReadFile(path)
			if string(a) != "one\n" || string(b) != "two\n" {
				t.Errorf("moved file %q, new file %q; want \"one\\n\", \"two\\n\"", a, b)
			}
		})
	}
}

// usersLogFolder makes base/app, a log folder the service's user (nobody)
// owns, and returns it.
func usersLogFolder(t *testing.T, base string) string {
	t.Helper()
	dir := filepath.Join(base, "app")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return dir
}

// usersFIFO makes a FIFO at path that the service's user (nobody) owns.
func usersFIFO(t *testing.T, path string, mode uint32) {
	t.Helper()
	if err := unix.Mkfifo(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
}

// recheckEveryWrite makes writeLine decide the identity at every line.
func recheckEveryWrite(t *testing.T) {
	old := identityRecheck
	identityRecheck = 0
	t.Cleanup(func() { identityRecheck = old })
}

// A FIFO at a log's name in a folder others may write (here the service
// user's) neither blocks the writer nor takes the lines: the write fails
// at once; a regular file there again is written.
func TestLogFIFORefused(t *testing.T) {
	dir := usersLogFolder(t, logsBase(t))
	path := filepath.Join(dir, "app.log")
	usersFIFO(t, path, 0o644) // the user made it
	w := openWriter(t, path, &desired.Logs{})
	done := make(chan error, 1)
	go func() { done <- w.writeLine([]byte("line\n")) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("write to a FIFO: %v, want refused", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the write blocked on the FIFO")
	}
	removeThenWrite(t, w, path, "again\n")
}

// An open that blocks on a FIFO (one made after the check) is released:
// its read end is opened by a second thread of the same identity.
func TestFSThreadReleasesBlockedFIFOOpen(t *testing.T) {
	shortFIFOWait(t)
	dir := logsBase(t)
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "fifo")
	usersFIFO(t, path, 0o600)
	th, err := startFSThread(nobody, nobody)
	if err != nil {
		t.Fatal(err)
	}
	defer th.stop()
	done := make(chan error, 1)
	go func() {
		done <- th.doUnblocking(func() error {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				f.Close()
			}
			return err
		}, path)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the open stayed blocked on the FIFO")
	}
}

// A path that can no longer be decided (a folder put at the log file's
// name) stops the writes, and closes the file, until it can: the old
// identity is not kept.
func TestLogIdentityUndecidedStopsWrites(t *testing.T) {
	recheckEveryWrite(t)
	path := filepath.Join(logsBase(t), "app.log")
	w := openWriter(t, path, &desired.Logs{})
	mustWrite(t, w, "one\n")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := w.writeLine([]byte("two\n")); err == nil || !strings.Contains(err.Error(), "is a folder") {
		t.Fatalf("write with a folder at the name: %v, want refused", err)
	}
	if b, _ := os.ReadFile(path + ".1"); string(b) != "one\n" {
		t.Errorf("the moved file got %q: the old file was kept open", b)
	}
	removeThenWrite(t, w, path, "three\n")
}

// prune leaves names that only look like lumberjack's alone, and does not
// panic on short ones.
func TestLogPruneOddNames(t *testing.T) {
	dir := logsBase(t)
	path := filepath.Join(dir, "a..-")
	keep := []string{"a.-", "a..--", "a.-2026-12-01T10-00-00.000", "a..-x", "a.-2026-12-01T10-00-00.000.gz"}
	for _, n := range keep {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := []string{"a.-2026-12-01T10-00-00.000.-", "a.-2026-12-02T10-00-00.000.-.gz", "a.-2026-12-03T10-00-00.000.-"}
	for _, n := range old {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w := &fileWriter{path: path, lj: &lumberjack.Logger{Filename: path}, backups: 1, log: zap.NewNop()}
	w.prune()
	for _, n := range keep {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s removed", n)
		}
	}
	for i, n := range old {
		if _, err := os.Stat(filepath.Join(dir, n)); (err == nil) != (i == len(old)-1) {
			t.Errorf("%s: %v (only the newest backup stays)", n, err)
		}
	}
}

// Rotated files an earlier agent left beyond maxBackups are pruned at the
// first write: an agent restarted often may never write maxSize itself.
func TestLogPrunedAtFirstWrite(t *testing.T) {
	dir := logsBase(t)
	for _, n := range []string{"app-2026-12-01T10-00-00.000.log", "app-2026-12-02T10-00-00.000.log", "app-2026-12-03T10-00-00.000.log"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var l logFiles
	defer l.close()
	one := 1
	w, err := l.get(filepath.Join(dir, "app.log"), &desired.Logs{MaxSize: "1M", MaxBackups: &one})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, "line\n")
	if got, _ := filepath.Glob(filepath.Join(dir, "app-*.log")); len(got) != 1 || filepath.Base(got[0]) != "app-2026-12-03T10-00-00.000.log" {
		t.Errorf("backups after the first write %v, want only the newest", got)
	}
}

// A write that stays blocked (the writer's open file is a FIFO whose
// reader stopped reading, swapped in between the check and the open) is
// left to its thread: the writer returns, starts over with a new thread
// and file, and writes the regular file at the path again.
func TestLogWriteBlockedAbandoned(t *testing.T) {
	shortFIFOWait(t)
	recheckEveryWrite(t)
	dir := usersLogFolder(t, logsBase(t))
	path := filepath.Join(dir, "app.log")
	usersFIFO(t, path, 0o644)
	reader, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := openWriter(t, path, &desired.Logs{})
	// lumberjack opens the FIFO (the race won), then a regular file
	// takes its name: the path looks right, the open file is the FIFO.
	w.mu.Lock()
	err = w.as.do(func() error { _, err := w.lj.Write([]byte("x\n")); return err })
	w.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".new", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path+".new", nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.file = [2]uint64{} // as if the file was checked before the swap
	w.mu.Unlock()
	identityRecheck = time.Hour // keep the writer on its open FIFO
	line := []byte(strings.Repeat("x", 4095) + "\n")
	done := make(chan error, 1)
	go func() {
		var err error
		for range 64 { // 256 KiB: more than a pipe holds
			if err = w.writeLine(line); err != nil {
				break
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errWriteBlocked) {
			t.Fatalf("writes into a full FIFO: %v, want errWriteBlocked", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the writer stayed blocked")
	}
	unix.Close(reader) // the abandoned write fails with EPIPE and its thread ends
	identityRecheck = 0
	mustWrite(t, w, "again\n")
	if b, _ := os.ReadFile(path); string(b) != "again\n" {
		t.Errorf("log file %q, want \"again\\n\"", b)
	}
}

// removeThenWrite removes what is at path, writes line and expects a new
// file holding just that line.
func removeThenWrite(t *testing.T, w *fileWriter, path, line string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := w.writeLine([]byte(line)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != line {
		t.Errorf("log file %q, want %q", b, line)
	}
}

// shortFIFOWait makes doUnblocking act after 50 ms.
func shortFIFOWait(t *testing.T) {
	old := fifoWait
	fifoWait = 50 * time.Millisecond
	t.Cleanup(func() { fifoWait = old })
}

// openWriter is the writer logFiles gives for path, closed at the test's end.
func openWriter(t *testing.T, path string, logs *desired.Logs) *fileWriter {
	t.Helper()
	var l logFiles
	t.Cleanup(l.close)
	w, err := l.get(path, logs)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// mustWrite writes line and fails the test if that fails.
func mustWrite(t *testing.T, w *fileWriter, line string) {
	t.Helper()
	if err := w.writeLine([]byte(line)); err != nil {
		t.Fatal(err)
	}
}
