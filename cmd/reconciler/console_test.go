package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/store"
)

var updateConsole = flag.Bool("update-console", false, "rewrite testdata/console.golden")

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time                       { return c.t }
func (c fixedClock) NewTicker(time.Duration) *time.Ticker { return time.NewTicker(time.Hour) }

// The console format of a pass, an event of each type, a skipped step and
// an error, against testdata/console.golden (go test -run TestConsoleGolden
// -update-console rewrites it). Applied steps print once (their event).
func TestConsoleGolden(t *testing.T) {
	for _, color := range []bool{false, true} {
		var buf bytes.Buffer
		core := newConsoleCore(zapcore.DebugLevel, zapcore.AddSync(&buf), color)
		log := zap.New(core, zap.WithClock(fixedClock{time.Date(2026, 12, 1, 14, 32, 5, 123e6, time.UTC)}))
		log.Info("agent starting", zap.String("backend", "process"), zap.String("manifests", "/etc/resil.d"))
		pass := log.Named("reconcile").With(zap.Uint64("pass", 3))
		pass.Info("step applied", zap.String("step", "restart web.service (unit file changed: Environment)"))
		ring := reconcile.NewRing(8, log)
		ring.Record(reconcile.Event{Type: reconcile.Normal, Reason: reconcile.ReasonApplied, Object: "Service/web", Unit: "web.service",
			Message: "restart web.service (unit file changed: Environment)"})
		pass.Error("step failed", zap.String("step", "start db.service (new unit)"), zap.Error(errors.New("job failed")))
		ring.Record(reconcile.Event{Type: reconcile.Warning, Reason: reconcile.ReasonApplyFailed, Object: "Service/db", Unit: "db.service",
			Step: "start db.service (new unit)", Message: "job failed"})
		ring.Record(reconcile.Event{Type: reconcile.Normal, Reason: reconcile.ReasonApplied, Message: "daemon-reload (unit files written)"})
		// A second identical restart is printed again, with its count; a
		// message of several lines stays on one.
		ring.Record(reconcile.Event{Type: reconcile.Normal, Reason: reconcile.ReasonApplied, Object: "Service/web", Unit: "web.service",
			Message: "restart web.service (unit file changed: Environment)"})
		ring.Record(reconcile.Event{Type: reconcile.Warning, Reason: reconcile.ReasonRevisionInvalid,
			Message: "revision 0123456789ab not deployed:\nweb.yaml:3:1: spec.comand: unknown field"})
		pass.Info("step skipped", zap.String("step", "start db2.service"), zap.String("why", "an earlier step for this unit failed"))
		log.Named("loop").Info("pass applied changes", zap.Duration("took", 41237*time.Microsecond), zap.Int("objects", 2), zap.Int("steps", 4), zap.Int("failed", 1))
		log.Named("reconcile").Warn("manifests have errors", zap.Int("broken_files", 1), zap.String("error", "web.yaml:3: spec.comand: unknown field"))
		name := "testdata/console.golden"
		if color {
			name = "testdata/console-color.golden"
		}
		if *updateConsole {
			if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), want) {
			t.Errorf("console output differs from %s (-update-console):\n%s", name, buf.String())
		}
	}
}

// syncWriter is a goroutine-safe bytes.Buffer.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// status --watch draws the table once, then again (after "---" when not a
// terminal) only when the agent's store changes.
func TestStatusWatchRedrawsOnChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, store.FileName)
	w, err := store.Open(path, store.Options{Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	put := func(observed string) {
		row := store.ObjectStatus{Object: "Service/web", Kind: "Service", Name: "web", Unit: "web.service", Desired: "running", Observed: observed,
			State: "Converged", Updated: time.Unix(1764600000, 0)}
		if err := w.PutStatus(ctx, []store.ObjectStatus{row}, store.Agent{LastPass: time.Unix(1764600000, 0), PID: 1, Backend: "process"}); err != nil {
			t.Fatal(err)
		}
	}
	put("absent")
	r, err := store.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out syncWriter
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- watchStatus(wctx, &out, r, nil, false, 10*time.Millisecond, "") }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "absent") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // several unchanged looks: no redraw
	if n := strings.Count(out.String(), "NAME"); n != 1 {
		t.Fatalf("%d tables before any change:\n%s", n, out.String())
	}
	put("active (running)")
	for !strings.Contains(out.String(), "active (running)") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := out.String(); strings.Count(got, "NAME") != 2 || !strings.Contains(got, "---\n") {
		t.Fatalf("want two tables separated by ---:\n%s", got)
	}
}
