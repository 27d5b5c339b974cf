package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/reconcile"
)

// The hook contract: a storm alert's spec.alert.command runs with the
// RestartStorm event as RESIL_OBJECT, RESIL_REASON, RESIL_UNIT, RESIL_TYPE,
// RESIL_MESSAGE, RESIL_TIME (RFC 3339 UTC) and RESIL_COUNT in its
// environment and as one line of JSON on stdin, one hook at a time, each
// bounded by Config.HookTimeout. A failed hook is an AlertHookFailed event.
type hookJob struct {
	command []string
	event   reconcile.Event
}

// RunHooks runs alert commands one at a time until ctx is done.
func (k *Keeper) RunHooks(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-k.hooks:
			if err := runHook(ctx, j, k.hookTimeout); err != nil && ctx.Err() == nil {
				k.log.Warn("alert hook failed", zap.String("object", j.event.Object), zap.Error(err))
				k.events.Record(reconcile.Event{Type: reconcile.Warning, Reason: reconcile.ReasonAlertHookFailed, Object: j.event.Object,
					Unit: j.event.Unit, Message: fmt.Sprintf("alert hook %s: %v", j.command[0], err)})
			}
		}
	}
}

// runHook runs one alert command with the event as RESIL_* environment
// variables and as JSON on stdin, bounded by timeout.
func runHook(ctx context.Context, j hookJob, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, j.command[0], j.command[1:]...)
	// The hook runs in a process group of its own, and a timeout kills the
	// whole group: killing only the direct child (a shell) would leave what
	// it started (`sh -c 'sleep 301'`) running, orphaned, one per storm
	// window, and holding the output pipe, so Wait would return only after
	// WaitDelay. The group is killed while the leader is not yet reaped, so
	// its ID cannot have been reused.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill hook process group %d: %w", cmd.Process.Pid, err)
		}
		return nil
	}
	// Bounds the wait for output still held open by a process that left
	// the group (setsid), or by one a finished hook left behind.
	cmd.WaitDelay = 2 * time.Second
	e := j.event
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	cmd.Stdin = bytes.NewReader(append(data, '\n'))
	cmd.Env = append(os.Environ(),
		"RESIL_OBJECT="+e.Object, "RESIL_REASON="+string(e.Reason), "RESIL_UNIT="+e.Unit, "RESIL_TYPE="+string(e.Type),
		"RESIL_MESSAGE="+e.Message, "RESIL_TIME="+e.Time.UTC().Format(time.RFC3339), "RESIL_COUNT="+strconv.Itoa(e.Count))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if hctx.Err() == context.DeadlineExceeded {
			return fmt.Errorf("timed out after %s", timeout)
		}
		msg := strings.TrimSpace(out.String())
		if len(msg) > 200 {
			msg = msg[len(msg)-200:]
		}
		if msg != "" {
			return fmt.Errorf("%w: %s", err, msg)
		}
		return err
	}
	return nil
}
