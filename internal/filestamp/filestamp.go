package filestamp

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
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

// Read reads the file at path, at most max bytes (a larger file is an
// error, not cut short), and returns it with the stat of the same open
// file: the bytes and the stat (its Stamp, its times) describe one inode
// even when the path is replaced meanwhile.
func Read(path string, max int64) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("stat %s: %w", path, err)
	}
	// Sized from the stat, as os.ReadFile does: one read and the EOF.
	buf := bytes.NewBuffer(make([]byte, 0, min(fi.Size(), max)+512))
	if _, err := buf.ReadFrom(io.LimitReader(f, max+1)); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(buf.Len()) > max {
		return nil, nil, fmt.Errorf("read %s: larger than %d bytes", path, max)
	}
	return buf.Bytes(), fi, nil
}
