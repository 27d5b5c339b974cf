package desired

import (
	"errors"

	"golang.org/x/sys/unix"
)

// takeReadLease tries a read lease on fd (opened O_RDONLY), which Linux
// refuses with EAGAIN while any process has the file open for writing.
// busy: some writer has it open. leased: the lease is held and must be
// released with releaseLease (closing fd releases it too). Neither: no
// lease can be taken here (EACCES when neither root nor the file's owner,
// EINVAL on filesystems without leases), so busy cannot be told.
func takeReadLease(fd int) (leased, busy bool) {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK)
	switch {
	case err == nil:
		return true, false
	case errors.Is(err, unix.EAGAIN):
		return false, true
	}
	return false, false
}

func releaseLease(fd int) {
	_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
}

// WriterOpen reports whether some process holds the manifest at path open
// for writing (its content may be half written). known is false when that
// cannot be told (no lease possible on this file or filesystem).
//
// The file is opened like Load opens it, through the checked walk with
// opts (openManifest): a path Load would refuse (a user-writable folder, a
// file of another owner) is never opened, nor is anything but a regular
// file (a symlink swapped to a device or a tty opens nothing): those are
// reported as not busy, and the load that follows reports them.
func WriterOpen(path string, opts Options) (busy, known bool) {
	fd, err := openManifest(path, opts)
	if err != nil {
		// errBusy: another process holds a write lease on it.
		return errors.Is(err, errBusy), true
	}
	defer unix.Close(fd)
	leased, busy := takeReadLease(fd)
	if leased {
		releaseLease(fd)
	}
	return busy, leased || busy
}
