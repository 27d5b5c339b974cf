package systemd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"resil.dev/resil/actuators"
)

// DefaultStampDir is where systemd keeps Persistent= timer stamps.
const DefaultStampDir = "/var/lib/systemd/timers"

// WithStampDir sets the directory of timer stamps OpRefreshStamp may touch
// (default DefaultStampDir).
func WithStampDir(dir string) Option { return func(c *config) { c.stampDir = filepath.Clean(dir) } }

// refreshStamp sets the mtime of a persistent timer's stamp file to now, so
// that a timer started next reads "last trigger: now" and does not fire a
// run it missed by more than maxLateness. The path must be
// stampDir/stamp-UNIT with UNIT a .timer.
//
// Re-check: a stamp at or after Props["missed"] means the run happened
// (systemd updated it) or was already skipped: (Unchanged, nil). A missing
// stamp needs nothing either: systemd creates it with the current time and
// so catches nothing up. A timer that is already active has read its stamp;
// the planner orders this step before the start.
func (a *Applier) refreshStamp(s actuators.Step) (actuators.Result, error) {
	if err := checkUnit(s); err != nil {
		return actuators.Unchanged, err
	}
	want := filepath.Join(a.cfg.stampDir, "stamp-"+s.Unit)
	if filepath.Ext(s.Unit) != ".timer" || s.Path != want {
		return actuators.Unchanged, fmt.Errorf("%s: %w: stamp path %q, want %q", s.Op, ErrInvalidStep, s.Path, want)
	}
	missed, err := strconv.ParseInt(s.Props["missed"], 10, 64)
	if err != nil {
		return actuators.Unchanged, fmt.Errorf("%s: %w: missed %q", s.Op, ErrInvalidStep, s.Props["missed"])
	}
	fi, err := os.Stat(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return actuators.Unchanged, nil
	}
	if err != nil {
		return actuators.Unchanged, fmt.Errorf("refresh stamp %s: %w", s.Path, err)
	}
	if !fi.Mode().IsRegular() {
		return actuators.Unchanged, fmt.Errorf("refresh stamp %s: %w: not a regular file", s.Path, ErrInvalidStep)
	}
	if fi.ModTime().UnixMicro() >= missed {
		return actuators.Unchanged, nil
	}
	now := a.cfg.now()
	if err := os.Chtimes(s.Path, now, now); err != nil {
		return actuators.Unchanged, fmt.Errorf("refresh stamp %s: %w", s.Path, err)
	}
	return actuators.Changed, nil
}
