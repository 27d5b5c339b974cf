package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
	"resil.dev/resil/observed"
)

func TestLogRotationNoLineLost(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	logf := filepath.Join(h.dir, "logs", "chatty.log")
	os.MkdirAll(filepath.Dir(logf), 0o755)
	backups := 20
	h.run()
	// ~2.3 MB of numbered lines to stdout and stderr, then a crash mid-line.
	const n = 150000
	h.install(service("chatty", desired.ServiceSpec{
		Command: sh(fmt.Sprintf(`seq 1 %d | sed 's/^/line-/'; seq 1 1000 | sed 's/^/err-/' >&2; printf 'partial-no-newline'; kill -9 $$`, n)),
		Logs:    &desired.Logs{Stdout: logf, MaxSize: "1M", MaxBackups: &backups},
		Restart: &desired.RestartSpec{Policy: desired.RestartNever}}), false)
	h.apply(context.Background(), actuators.Step{Op: actuators.OpStart, Unit: "chatty.service"})
	h.waitUnit("chatty.service", "crash", func(u *observed.Unit) bool { return u.ActiveState == "failed" })
	if u := h.unit("chatty.service"); u.Result != ResultSignal || u.ExecMainStatus != 9 {
		t.Fatalf("crash result: %+v", u)
	}
	var all []string
	waitFor(t, "all lines", func() bool {
		files, _ := filepath.Glob(filepath.Join(filepath.Dir(logf), "chatty*.log"))
		all = nil
		for _, f := range files {
			all = append(all, lines(t, f)...)
		}
		return len(all) >= n+1000+1
	})
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(logf), "chatty*.log"))
	if len(files) < 2 {
		t.Fatalf("no rotation: %v", files)
	}
	seen := map[string]int{}
	for _, l := range all {
		seen[l]++
	}
	for i := 1; i <= n; i++ {
		if seen["line-"+strconv.Itoa(i)] != 1 {
			t.Fatalf("line-%d seen %d times", i, seen["line-"+strconv.Itoa(i)])
		}
	}
	if seen["err-1000"] != 1 || seen["partial-no-newline"] != 1 {
		t.Fatalf("stderr or partial last line lost: err-1000 %d, partial %d", seen["err-1000"], seen["partial-no-newline"])
	}
	if len(all) != n+1000+1 {
		t.Fatalf("%d lines, want %d", len(all), n+1001)
	}
}

// linesOf collects what copyLines writes.
type linesOf struct{ got []string }

func (l *linesOf) writeLine(b []byte) error {
	l.got = append(l.got, string(b))
	return nil
}

// copyLines keeps lines whole up to maxLine (its buffer grows from 4 KiB),
// cuts longer ones into maxLine pieces, and ends a last unterminated line.
func TestCopyLines(t *testing.T) {
	long := strings.Repeat("a", 20<<10)
	huge := strings.Repeat("b", maxLine+10)
	tests := []struct {
		name, in string
		want     []string
	}{
		{"short lines", "one\ntwo\n", []string{"one\n", "two\n"}},
		{"unterminated", "one\ntwo", []string{"one\n", "two\n"}},
		{"line above the first buffer", "x\n" + long + "\ny\n", []string{"x\n", long + "\n", "y\n"}},
		{"line above maxLine", huge + "\nz\n", []string{huge[:maxLine] + "\n", huge[maxLine:] + "\n", "z\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w linesOf
			copyLines(strings.NewReader(tt.in), &w)
			if len(w.got) != len(tt.want) {
				t.Fatalf("%d lines, want %d", len(w.got), len(tt.want))
			}
			for i := range w.got {
				if w.got[i] != tt.want[i] {
					t.Fatalf("line %d: %d bytes, want %d", i, len(w.got[i]), len(tt.want[i]))
				}
			}
		})
	}
}
