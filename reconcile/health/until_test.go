package health

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// countdown fails until its count runs out.
type countdown struct{ left int }

func (c *countdown) Check(context.Context) error {
	if c.left > 0 {
		c.left--
		return errors.New("not yet")
	}
	return nil
}

func TestUntil(t *testing.T) {
	tests := []struct {
		name    string
		fails   int
		timeout time.Duration
		wantErr string
	}{
		{"passes at once", 0, time.Second, ""},
		{"passes after failures", 3, 5 * time.Second, ""},
		{"times out", 1000, 200 * time.Millisecond, "did not pass within 200ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Until(context.Background(), &countdown{tt.fails}, 10*time.Millisecond, tt.timeout, 0)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "not yet")) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
}
