package process

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeInheritedOnExec marks every descriptor above stderr close-on-exec
// and returns how many were not. Go opens its own with O_CLOEXEC, but
// what the agent inherited without it (a shell's `7>>file`, a parent's
// socket or pipe) would otherwise reach every service it starts: a
// manifest's process must get stdin, stdout and stderr and nothing of the
// agent's (systemd closes them all as well). Supervised processes get
// their descriptors from ForkExec's Files, which dup2 clears of the flag.
func closeInheritedOnExec() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue // the directory's own descriptor is closed already
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC); err == nil {
			n++
		}
	}
	return n
}
