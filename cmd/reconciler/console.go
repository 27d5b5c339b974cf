package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// consoleCore is the zap core of --log-format console: one short, aligned
// line per event and per step, for a person at a terminal.
//
//	15:04:05.000  web.service            Applied            restart web.service (unit file changed: Environment)
//	15:04:05.012  ── pass 3: 4 steps, 0 failed, 2 objects, 41ms
//	15:04:06.100  WARN   reconcile: manifests have errors  broken_files=1 error="..."
//
// An event line puts the unit first (the object when it has none), then
// the reason (coloured by type on a terminal), then the message. The
// reconciler's own "step applied"/"step failed" lines are left out: the
// Applied/ApplyFailed event of the same step says it (before, every
// applied step printed twice). Other entries keep their message and
// fields, sorted by key. zap's console encoder is not used because it
// cannot drop or reshape entries by their fields.
type consoleCore struct {
	zapcore.LevelEnabler
	out    zapcore.WriteSyncer
	mu     *sync.Mutex
	color  bool
	fields []zapcore.Field
}

func newConsoleCore(level zapcore.LevelEnabler, out zapcore.WriteSyncer, color bool) *consoleCore {
	return &consoleCore{LevelEnabler: level, out: out, mu: &sync.Mutex{}, color: color}
}

func (c *consoleCore) With(fields []zapcore.Field) zapcore.Core {
	cc := *c
	cc.fields = append(append([]zapcore.Field(nil), c.fields...), fields...)
	return &cc
}

func (c *consoleCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *consoleCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	line := c.format(ent, enc.Fields)
	if line == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.out.Write([]byte(line))
	return err
}

func (c *consoleCore) Sync() error { return c.out.Sync() }

// ANSI colours.
const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiCyan   = "\x1b[36m"
	ansiDim    = "\x1b[2m"
)

func (c *consoleCore) paint(color, s string) string {
	if !c.color {
		return s
	}
	return color + s + ansiReset
}

// pad pads s to n runes; a longer s is kept whole.
func pad(s string, n int) string {
	if k := len([]rune(s)); k < n {
		return s + strings.Repeat(" ", n-k)
	}
	return s
}

func str(m map[string]any, k string) string {
	if v, ok := m[k]; ok {
		return consoleValue(v)
	}
	return ""
}

// consoleValue formats a field value; durations are rounded for reading.
func consoleValue(v any) string {
	if d, ok := v.(time.Duration); ok {
		switch {
		case d >= 10*time.Millisecond:
			d = d.Round(time.Millisecond)
		case d >= 10*time.Microsecond:
			d = d.Round(10 * time.Microsecond)
		}
		return d.String()
	}
	return fmt.Sprint(v)
}

func (c *consoleCore) format(ent zapcore.Entry, f map[string]any) string {
	ts := ent.Time.Format("15:04:05.000")
	switch {
	case ent.LoggerName == "reconcile" && (ent.Message == "step applied" || ent.Message == "step failed"):
		return ""
	case ent.Message == "event" && strings.HasSuffix(ent.LoggerName, "events"):
		who := str(f, "unit")
		if who == "" {
			who = str(f, "object")
		}
		if who == "" {
			who = "-"
		}
		colour := ansiGreen
		if str(f, "type") == "Warning" {
			colour = ansiYellow
		}
		msg := str(f, "message")
		if step := str(f, "step"); step != "" && step != msg {
			msg = step + ": " + msg // a failed step: what, then why
		}
		// One line per event: a message of several lines (a revision's
		// validation errors) is joined.
		msg = strings.ReplaceAll(msg, "\n", " ⏎ ")
		if n := str(f, "count"); n != "" && n != "1" {
			msg += c.paint(ansiDim, " (×"+n+")")
		}
		return fmt.Sprintf("%s  %s %s %s\n", ts, c.paint(ansiBold, pad(who, 22)), c.paint(colour, pad(str(f, "reason"), 18)), msg)
	case ent.Message == "pass applied changes":
		summary := fmt.Sprintf("── pass %s: %s steps, %s failed, %s objects, %s", str(f, "pass"), str(f, "steps"), str(f, "failed"), str(f, "objects"), str(f, "took"))
		summary = strings.Replace(summary, "pass : ", "pass: ", 1)
		return fmt.Sprintf("%s  %s\n", ts, c.paint(ansiCyan, summary))
	}
	level := strings.ToUpper(ent.Level.String())
	switch {
	case ent.Level >= zapcore.ErrorLevel:
		level = c.paint(ansiRed, pad(level, 5))
	case ent.Level == zapcore.WarnLevel:
		level = c.paint(ansiYellow, pad(level, 5))
	default:
		level = pad(level, 5)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s  ", ts, level)
	if ent.LoggerName != "" {
		b.WriteString(ent.LoggerName + ": ")
	}
	b.WriteString(ent.Message)
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		sep := " "
		if i == 0 {
			sep = "  "
		}
		v := consoleValue(f[k])
		if v == "" || strings.ContainsAny(v, " \t\n\"=") {
			v = fmt.Sprintf("%q", v)
		}
		b.WriteString(sep + k + "=" + v)
	}
	if ent.Stack != "" {
		b.WriteString("\n" + ent.Stack)
	}
	b.WriteString("\n")
	return b.String()
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
