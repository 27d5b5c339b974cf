package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Files are reached through Root() (/proc/PID/root) with openat2 and
// RESOLVE_IN_ROOT: symlinks resolve as they would inside the sandbox, so an
// absolute link such as /var/run -> /run never leads to the host's /run.

// WriteFile writes data to path inside the sandbox (e.g.
// "/etc/systemd/system/demo.service"), creating missing parent directories
// (mode 0755). It writes a temporary file and renames it, so systemd never
// reads half a file. mode is applied exactly, regardless of the umask.
func (s *Sandbox) WriteFile(name string, data []byte, mode os.FileMode) error {
	dir, base, err := splitSandboxPath(name)
	if err != nil {
		return err
	}
	dfd, err := s.openDir(dir, true)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer unix.Close(dfd)

	tmp := fmt.Sprintf(".%s.sbx-tmp-%s", base, randomHex(6))
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(mode.Perm()))
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(mode.Perm())
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = unix.Renameat(dfd, tmp, dfd, base)
	}
	if werr != nil {
		_ = unix.Unlinkat(dfd, tmp, 0)
		return fmt.Errorf("write %s: %w", name, werr)
	}
	return nil
}

// ReadFile reads path inside the sandbox.
func (s *Sandbox) ReadFile(name string) ([]byte, error) {
	rel, err := relSandboxPath(name)
	if err != nil {
		return nil, err
	}
	rfd, err := s.openRoot()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer unix.Close(rfd)
	fd, err := openat2(rfd, rel, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return data, nil
}

// Remove removes the file or empty directory path inside the sandbox.
// Removing a path that does not exist is an error wrapping fs.ErrNotExist.
func (s *Sandbox) Remove(name string) error {
	dir, base, err := splitSandboxPath(name)
	if err != nil {
		return err
	}
	dfd, err := s.openDir(dir, false)
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	defer unix.Close(dfd)
	err = unix.Unlinkat(dfd, base, 0)
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EPERM) {
		err = unix.Unlinkat(dfd, base, unix.AT_REMOVEDIR)
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// openRoot opens Root() as an O_PATH directory.
func (s *Sandbox) openRoot() (int, error) {
	return unix.Open(s.Root(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// openDir opens dir (absolute, inside the sandbox) as an O_PATH directory,
// creating missing components with mode 0755 when mkdir is set.
func (s *Sandbox) openDir(dir string, mkdir bool) (int, error) {
	rfd, err := s.openRoot()
	if err != nil {
		return -1, err
	}
	rel, err := relSandboxPath(dir)
	if err != nil {
		unix.Close(rfd)
		return -1, err
	}
	if rel == "." {
		return rfd, nil
	}
	defer unix.Close(rfd)
	if fd, err := openat2(rfd, rel, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC); err == nil || !mkdir || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	// Walk component by component; each mkdirat gets a single name relative
	// to a directory opened in the root, so it cannot follow a symlink out.
	cur := "."
	for _, c := range strings.Split(rel, "/") {
		parent, err := openat2(rfd, cur, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
		if err != nil {
			return -1, err
		}
		err = unix.Mkdirat(parent, c, 0o755)
		unix.Close(parent)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, err
		}
		cur = path.Join(cur, c)
	}
	return openat2(rfd, rel, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
}

func openat2(dirfd int, rel string, flags int) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   uint64(flags),
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue // a rename raced the lookup; the kernel asks to retry
		}
		return fd, err
	}
}

// relSandboxPath turns an absolute sandbox path into a clean relative one
// ("." for the root).
func relSandboxPath(name string) (string, error) {
	if !path.IsAbs(name) || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("sandbox path %q: want an absolute path", name)
	}
	clean := path.Clean(name)
	if clean == "/" {
		return ".", nil
	}
	return clean[1:], nil
}

// splitSandboxPath splits an absolute sandbox path into its directory and
// base name; the root itself has no base name and is an error.
func splitSandboxPath(name string) (dir, base string, err error) {
	if !path.IsAbs(name) || strings.ContainsRune(name, 0) {
		return "", "", fmt.Errorf("sandbox path %q: want an absolute path", name)
	}
	clean := path.Clean(name)
	if clean == "/" {
		return "", "", fmt.Errorf("sandbox path %q: want a file, not the root", name)
	}
	return path.Dir(clean), path.Base(clean), nil
}
