package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"resil.dev/resil/actuators"
	"resil.dev/resil/internal/ownmark"
)

// Applier executes planner steps against a Supervisor. Every op re-checks
// before acting and is idempotent: a step that already took effect returns
// (actuators.Unchanged, nil).
type Applier struct {
	s *Supervisor
}

var _ actuators.Applier = (*Applier)(nil)

// NewApplier returns the applier of s. File ops work whether or not s is
// running; unit ops wait until Run has loaded the units and fail once it returned.
func NewApplier(s *Supervisor) *Applier { return &Applier{s: s} }

// Apply executes one step. Outcomes:
//
//	(Changed, nil)   - the step changed something
//	(Unchanged, nil) - nothing to do (already so)
//	(Unchanged, err) - it failed; for start and restart err names the unit's
//	                   Result ("unit worker.service failed: exit-code")
//
// Write and remove only touch files directly in the units dir, and never a
// file without resil's ownership marker. Unit ops wait for the unit: start
// until the process runs (simple), sent READY=1 (notify) or exited
// successfully (oneshot); stop until the process group's leader exited.
func (a *Applier) Apply(ctx context.Context, st actuators.Step) (actuators.Result, error) {
	switch st.Op {
	case actuators.OpWriteFile:
		return a.writeFile(st)
	case actuators.OpRemoveFile:
		return a.removeFile(st)
	case actuators.OpDaemonReload:
		changed, err := a.s.daemonReload(ctx)
		if changed {
			return actuators.Changed, err
		}
		return actuators.Unchanged, err
	case actuators.OpEnable:
		if err := a.checkUnit(st.Unit); err != nil {
			return actuators.Unchanged, err
		}
		if a.s.isEnabled(st.Unit) {
			return actuators.Unchanged, nil
		}
		if err := a.s.makeDirs(); err != nil {
			return actuators.Unchanged, fmt.Errorf("enable %s: %w", st.Unit, err)
		}
		if err := a.s.writeFile(a.s.enabledPath(st.Unit), nil, 0o644); err != nil {
			a.s.forgetDirs()
			return actuators.Unchanged, fmt.Errorf("enable %s: %w", st.Unit, err)
		}
		return actuators.Changed, nil
	case actuators.OpDisable:
		if err := a.checkUnit(st.Unit); err != nil {
			return actuators.Unchanged, err
		}
		err := os.Remove(a.s.enabledPath(st.Unit))
		if errors.Is(err, os.ErrNotExist) {
			return actuators.Unchanged, nil
		}
		if err != nil {
			return actuators.Unchanged, fmt.Errorf("disable %s: %w", st.Unit, err)
		}
		return actuators.Changed, nil
	case actuators.OpStart, actuators.OpStop, actuators.OpRestart, actuators.OpResetFailed:
		if err := a.checkUnit(st.Unit); err != nil {
			return actuators.Unchanged, err
		}
		res, err := a.s.command(ctx, st.Unit, st.Op)
		if err != nil {
			return res, fmt.Errorf("%s %s: %w", st.Op, st.Unit, err)
		}
		return res, nil
	case actuators.OpRefreshStamp:
		// Only the stamp Observe reported for that timer.
		if err := a.checkUnit(st.Unit); err != nil {
			return actuators.Unchanged, err
		}
		if st.Path != a.s.stampPath(st.Unit) {
			return actuators.Unchanged, fmt.Errorf("%s %s: stamp %q is not the unit's (%s)", st.Op, st.Unit, st.Path, a.s.stampPath(st.Unit))
		}
		if err := os.MkdirAll(filepath.Dir(st.Path), 0o755); err != nil {
			return actuators.Unchanged, fmt.Errorf("%s %s: %w", st.Op, st.Unit, err)
		}
		if err := a.s.writeStamp(st.Unit, a.s.now()); err != nil {
			return actuators.Unchanged, fmt.Errorf("%s %s: %w", st.Op, st.Unit, err)
		}
		return actuators.Changed, nil
	case actuators.OpSetManager:
		return actuators.Unchanged, fmt.Errorf("%s: not supported by the process backend", st.Op)
	}
	return actuators.Unchanged, fmt.Errorf("unknown op %q", st.Op)
}

func (a *Applier) checkUnit(name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("bad unit name %q", name)
	}
	return nil
}

// path resolves a step path, which must name a file directly in the units dir.
func (a *Applier) path(st actuators.Step) (string, error) {
	p := st.Path
	if p == "" {
		p = filepath.Join(a.s.unitDir, st.Unit)
	}
	p = filepath.Clean(p)
	if filepath.Dir(p) != a.s.unitDir {
		return "", fmt.Errorf("%s %s: path outside %s", st.Op, p, a.s.unitDir)
	}
	return p, nil
}

func (a *Applier) writeFile(st actuators.Step) (actuators.Result, error) {
	p, err := a.path(st)
	if err != nil {
		return actuators.Unchanged, err
	}
	old, err := os.ReadFile(p)
	if err == nil && bytes.Equal(old, st.Data) {
		return actuators.Unchanged, nil
	}
	if err == nil {
		if _, owned := ownmark.IsOwned(old); !owned {
			return actuators.Unchanged, fmt.Errorf("write %s: file exists and is not owned by resil", p)
		}
	}
	if err := a.s.makeDirs(); err != nil {
		return actuators.Unchanged, fmt.Errorf("write %s: %w", p, err)
	}
	if err := a.s.writeFile(p, st.Data, 0o644); err != nil {
		a.s.forgetDirs()
		return actuators.Unchanged, fmt.Errorf("write %s: %w", p, err)
	}
	return actuators.Changed, nil
}

func (a *Applier) removeFile(st actuators.Step) (actuators.Result, error) {
	p, err := a.path(st)
	if err != nil {
		return actuators.Unchanged, err
	}
	old, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return actuators.Unchanged, nil
	}
	if err != nil {
		return actuators.Unchanged, fmt.Errorf("remove %s: %w", p, err)
	}
	if _, owned := ownmark.IsOwned(old); !owned {
		return actuators.Unchanged, fmt.Errorf("remove %s: not owned by resil", p)
	}
	if err := os.Remove(p); err != nil {
		return actuators.Unchanged, fmt.Errorf("remove %s: %w", p, err)
	}
	_ = os.Remove(p + ".enabled") // like a dangling wants/ symlink: goes with the unit
	return actuators.Changed, nil
}
