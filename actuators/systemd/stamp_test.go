package systemd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"resil.dev/resil/actuators"
)

func TestRefreshStamp(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	e := newEnv(t, WithStampDir(dir), func(c *config) { c.now = func() time.Time { return now } })
	path := filepath.Join(dir, "stamp-report.timer")
	missed := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	step := actuators.Step{Op: actuators.OpRefreshStamp, Unit: "report.timer", Path: path,
		Props: map[string]string{"missed": strconv.FormatInt(missed.UnixMicro(), 10)}}

	// No stamp: systemd creates one at start and catches nothing up.
	if res, err := e.a.Apply(context.Background(), step); err != nil || res != actuators.Unchanged {
		t.Fatalf("missing stamp: %s %v", res, err)
	}
	old := missed.Add(-24 * time.Hour)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if res, err := e.a.Apply(context.Background(), step); err != nil || res != actuators.Changed {
		t.Fatalf("old stamp: %s %v", res, err)
	}
	if fi, _ := os.Stat(path); !fi.ModTime().Equal(now) {
		t.Errorf("stamp mtime %s, want %s", fi.ModTime(), now)
	}
	// Retried: the stamp is past the missed run now.
	if res, err := e.a.Apply(context.Background(), step); err != nil || res != actuators.Unchanged {
		t.Fatalf("retry: %s %v", res, err)
	}
	for name, bad := range map[string]actuators.Step{
		"outside stamp dir": {Op: actuators.OpRefreshStamp, Unit: "report.timer", Path: "/etc/passwd", Props: step.Props},
		"not a timer":       {Op: actuators.OpRefreshStamp, Unit: "report.service", Path: filepath.Join(dir, "stamp-report.service"), Props: step.Props},
		"no missed":         {Op: actuators.OpRefreshStamp, Unit: "report.timer", Path: path},
	} {
		if _, err := e.a.Apply(context.Background(), bad); !errors.Is(err, ErrInvalidStep) {
			t.Errorf("%s: err %v, want ErrInvalidStep", name, err)
		}
	}
}
