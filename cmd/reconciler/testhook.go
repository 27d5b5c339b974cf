package main

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"

	"resil.dev/resil/actuators"
)

// crashAfterStepEnv names the test hook of the torture suite
// (e2e/torture_test.go): set to k >= 1, the agent SIGKILLs itself right
// after the k-th step it runs (counted over the process's life), exactly as
// a kill -9 at that instant would. Not for production use.
const crashAfterStepEnv = "RESIL_TEST_CRASH_AFTER_STEP"

// crashAfterStep returns the reconcile.Config.AfterStep hook selected by
// RESIL_TEST_CRASH_AFTER_STEP: (nil, nil) when unset or empty, an error when
// it is not a positive integer.
func crashAfterStep() (func(int, actuators.Step), error) {
	v := os.Getenv(crashAfterStepEnv)
	if v == "" {
		return nil, nil
	}
	k, err := strconv.Atoi(v)
	if err != nil || k < 1 {
		return nil, fmt.Errorf("%s=%q: want a positive integer", crashAfterStepEnv, v)
	}
	var n atomic.Int64
	return func(int, actuators.Step) {
		if n.Add(1) == int64(k) {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL is not deliverable late; never run another step
		}
	}, nil
}
