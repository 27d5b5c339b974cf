package desired

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// opened reports whether anything opened path while f ran (inotify
// IN_OPEN on path's inode, queued when the open happens).
func opened(t *testing.T, path string, f func()) bool {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	f()
	buf := make([]byte, 4096)
	n, err := unix.Read(fd, buf)
	if errors.Is(err, unix.EAGAIN) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// WriterOpen (Watch's check of a written manifest) opens nothing Load
// would refuse or not read: a file in a folder others may write to, a file
// of another owner, and - through a symlink or not - anything but a
// regular file (a FIFO here; a device or a tty in the attack: opening
// /dev/watchdog arms it, a tty becomes the agent's controlling terminal).
func TestWriterOpenOpensOnlyWhatLoadWould(t *testing.T) {
	base := t.TempDir()
	uid := os.Getuid()
	for _, tc := range []struct {
		name   string
		opts   Options
		setup  func(dir string) (path, target string)
		opened bool
	}{
		{name: "trusted file", opts: Options{OwnerUID: uid}, opened: true, setup: func(dir string) (string, string) {
			writeFiles(t, dir, map[string]string{"x.yaml": "a"})
			return filepath.Join(dir, "x.yaml"), filepath.Join(dir, "x.yaml")
		}},
		{name: "user-writable folder", opts: Options{OwnerUID: uid}, setup: func(dir string) (string, string) {
			writeFiles(t, dir, map[string]string{"x.yaml": "a"})
			chmod(t, dir, 0o777)
			return filepath.Join(dir, "x.yaml"), filepath.Join(dir, "x.yaml")
		}},
		{name: "sticky user-writable folder", opts: Options{OwnerUID: uid}, setup: func(dir string) (string, string) {
			writeFiles(t, dir, map[string]string{"x.yaml": "a"})
			chmod(t, dir, 0o1777)
			return filepath.Join(dir, "x.yaml"), filepath.Join(dir, "x.yaml")
		}},
		{name: "group-writable file", opts: Options{OwnerUID: uid}, setup: func(dir string) (string, string) {
			writeFiles(t, dir, map[string]string{"x.yaml": "a"})
			chmod(t, filepath.Join(dir, "x.yaml"), 0o664)
			return filepath.Join(dir, "x.yaml"), filepath.Join(dir, "x.yaml")
		}},
		{name: "fifo", opts: Options{Insecure: true}, setup: func(dir string) (string, string) {
			p := filepath.Join(dir, "x.yaml")
			if err := unix.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			return p, p
		}},
		{name: "symlink to a fifo", opts: Options{Insecure: true}, setup: func(dir string) (string, string) {
			p := filepath.Join(dir, "pipe")
			if err := unix.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			return symlink(t, p, filepath.Join(dir, "x.yaml")), p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := mkdir(t, filepath.Join(base, tc.name))
			path, target := tc.setup(dir)
			var busy, known bool
			got := opened(t, target, func() { busy, known = WriterOpen(path, tc.opts) })
			if got != tc.opened {
				t.Fatalf("opened %v, want %v", got, tc.opened)
			}
			if busy || !known {
				t.Fatalf("WriterOpen = %v, %v; want not busy, known", busy, known)
			}
		})
	}
}

// A busy manifest names the process that holds it open for writing
// (Set.BusyBy, read from /proc), so the operator knows what to close.
func TestLoadBusyFileNamesWriter(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.yaml": svcDoc("a", "/bin/true")})
	// The shell opens the file for appending, then becomes sleep with it.
	cmd := exec.Command("/bin/sh", "-c", `exec 3>>"$1"; exec sleep 30`, "sh", filepath.Join(dir, "a.yaml"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	want := fmt.Sprintf("PID %d (sleep)", cmd.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for { // until the shell has become sleep (writersOf keeps an answer a while)
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid)); string(comm) == "sleep\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the shell never became sleep")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		set, err := loadInsecure(t, dir)
		if err != nil {
			t.Fatal(err)
		}
		if set.Busy["a.yaml"] && set.BusyBy["a.yaml"] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Busy %v, BusyBy %q, want %q", set.Busy, set.BusyBy, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fdWrites reads an fdinfo file: written to when its flags say O_WRONLY or
// O_RDWR, and only on the inode asked for when the kernel prints one.
// printable keeps a process's self-chosen name from carrying control
// characters into a log line.
func TestFdWritesAndPrintable(t *testing.T) {
	for _, tc := range []struct {
		name, info string
		want       bool
	}{
		{"append", "pos:\t0\nflags:\t0102001\nmnt_id:\t24\nino:\t42\n", true},
		{"read-write", "pos:\t0\nflags:\t02\n", true}, // no ino line (before 5.14)
		{"read only", "pos:\t0\nflags:\t0100000\nino:\t42\n", false},
		{"another inode", "pos:\t0\nflags:\t01\nino:\t43\n", false},
		{"no flags", "pos:\t0\n", false},
	} {
		p := filepath.Join(t.TempDir(), "fdinfo")
		if err := os.WriteFile(p, []byte(tc.info), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := fdWrites(p, 42); got != tc.want {
			t.Errorf("%s: fdWrites = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := printable("vim\x1b[31m\nx\xff"); got != "vim?[31m?x?" {
		t.Errorf("printable = %q", got)
	}
}
