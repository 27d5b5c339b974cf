package filestamp

import (
	"io/fs"
	"syscall"
	"time"
)

// Stamp identifies a file's content without reading it. The zero Stamp is
// none (the system gave no stat).
type Stamp struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64 // ns
}

// RacyWindow: a file changed this recently before it was read may change
// again and keep its stamp (see the package doc).
const RacyWindow = 2 * time.Second

// Of is fi's stamp (zero when fi carries no syscall.Stat_t).
func Of(fi fs.FileInfo) Stamp {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Stamp{}
	}
	return Stamp{Dev: uint64(st.Dev), Ino: st.Ino, Size: st.Size, //nolint:unconvert // Dev's type differs by arch
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
}

// IsZero reports whether s is no stamp.
func (s Stamp) IsZero() bool { return s == Stamp{} }

// Settled reports whether s, read by a scan that began at start, proves the
// content unchanged while it stays the same: a stamp at all, whose change
// time is older than start by more than window (RacyWindow; tests shorten
// it). A change time in the future (the clock set back) is not settled.
func (s Stamp) Settled(start time.Time, window time.Duration) bool {
	return !s.IsZero() && s.Ctime < start.Add(-window).UnixNano()
}
