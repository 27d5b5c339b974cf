package health

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Until tries c every interval until it passes or timeout has passed since
// it began (the initial delay included): one startup probe, as `reconciler
// probe` (a rendered ExecStartPost=) and the process backend's start phase
// run it. Each attempt is bounded by the interval (at least 1s) and by the
// time left. The error names the last failure.
func Until(ctx context.Context, c Checker, interval, timeout, initialDelay time.Duration) error {
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if initialDelay > 0 {
		t := time.NewTimer(initialDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("startup probe: no attempt within %s (initial delay %s)", timeout, initialDelay)
		case <-t.C:
		}
	}
	attempt := max(interval, time.Second)
	var last error
	for n := 1; ; n++ {
		actx, acancel := context.WithTimeout(ctx, attempt)
		err := c.Check(actx)
		acancel()
		if err == nil {
			return nil
		}
		last = err
		wait := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			wait.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("startup probe did not pass within %s (%d attempts): %w", timeout, n, last)
			}
			return fmt.Errorf("startup probe interrupted after %d attempts: %w", n, last)
		case <-wait.C:
		}
	}
}
