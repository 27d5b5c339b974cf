package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/actuators"
	sdapply "resil.dev/resil/actuators/systemd"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/internal/sdbus"
	sdobserve "resil.dev/resil/observed/systemd"
)

// errReadOnly guards diff: its backend must never act.
var errReadOnly = errors.New("read-only backend: diff never applies steps")

type readOnlyApplier struct{}

func (readOnlyApplier) Apply(context.Context, actuators.Step) (actuators.Result, error) {
	return actuators.Unchanged, errReadOnly
}

// openSystemd opens one long-lived D-Bus connection (the private socket as
// root, the system bus otherwise) shared by the observer and the applier.
func openSystemd(ctx context.Context, g *globals, log *zap.Logger, readOnly bool) (*backend, error) {
	conn, err := sdbus.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("systemd backend: %w", err)
	}
	// The first observation's connection, dialed while the command opens
	// the state dir and loads the manifests.
	conn.Prewarm()
	obs := sdobserve.New(conn, g.unitDir, sdobserve.WithManagerConf(filepath.Join(g.managerDir, ownmark.WatchdogFile)), sdobserve.WithProcessCheck())
	// The applier tells the observer about its own jobs, so that their
	// signals do not wake another pass (one pass per edit).
	app := sdapply.New(conn, g.unitDir, g.managerDir, log.Named("systemd"), sdapply.WithOwnJobs(obs))
	be := &backend{
		Name: "systemd", UnitDir: g.unitDir, ManagerDir: g.managerDir,
		Render: agentRenderOptions().Render, MarkProcessSince: true, RestartJournal: true, RunMemory: true, Observer: obs, Applier: app,
		Prepare: conn.Prewarm, Close: func() {
			conn.Close()
			w := conn.Wire()
			log.Debug("systemd connection closed", zap.Uint64("calls", w.Calls()), zap.Uint64("signals", w.Signals()))
		},
	}
	if readOnly {
		be.Applier = readOnlyApplier{}
		return be, nil
	}
	// A kill -9 between renameio's create and rename leaves a temporary
	// file beside the unit; the agent that takes over removes it.
	if n, err := app.RemoveTempFiles(); err != nil || n > 0 {
		log.Info("temporary files of a killed agent removed", zap.Int("removed", n), zap.Error(err))
	}
	watch := func(ctx context.Context, wake func()) error {
		// State-change signals are hints: when they fail, the periodic resync
		// still converges, so log, wait and subscribe again.
		for {
			err := obs.Subscribe(ctx, wake)
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("systemd subscription ended, retrying", zap.Error(err))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(5 * time.Second):
			}
		}
	}
	if conn.Private() {
		// systemd sends every signal to each private connection, job
		// results (JobRemoved) included: only run needs the watch.
		be.Watches = append(be.Watches, watch)
	} else {
		// On a bus systemd emits signals only while someone subscribed,
		// and job results come as signals: every acting command watches.
		be.Background = append(be.Background, watch)
	}
	// Exec probes run as transient units: systemd switches to the
	// service's user, the agent keeps no capability (its unit has none).
	be.ProbeRunner = transientProbes{sdapply.NewProbeRunner(conn)}
	be.Reset = func(ctx context.Context, unit string, start bool) error {
		ops := []actuators.Op{actuators.OpResetFailed, actuators.OpStart}
		if !start {
			ops = ops[:1]
		}
		for _, op := range ops {
			if _, err := app.Apply(ctx, actuators.Step{Op: op, Unit: unit, Reason: "reconciler reset"}); err != nil {
				return err
			}
		}
		return nil
	}
	return be, nil
}

// systemdAnswers reports whether systemd answers on D-Bus.
func systemdAnswers(ctx context.Context) bool {
	conn, err := sdbus.Dial(ctx)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
