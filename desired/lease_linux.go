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

// WriterOpen reports whether some process holds the regular file at path
// open for writing (its content may be half written). known is false when
// that cannot be told (no lease possible on this file or filesystem).
// A missing or non-regular path is reported as not busy.
func WriterOpen(path string) (busy, known bool) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, true
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		// EWOULDBLOCK: another process holds a write lease on it.
		return errors.Is(err, unix.EWOULDBLOCK), true
	}
	defer unix.Close(fd)
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, true
	}
	leased, busy := takeReadLease(fd)
	if leased {
		releaseLease(fd)
	}
	return busy, leased || busy
}
