package main

import (
	"context"
	"errors"

	"go.uber.org/zap"
)

func openProcess(ctx context.Context, g *globals, log *zap.Logger, readOnly bool) (*backend, error) {
	return nil, errors.New("process backend: not wired yet")
}
