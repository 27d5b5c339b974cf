package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/actuators"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/store"
)

// lineBreakers are the characters no printed error line may hold raw.
var lineBreakers = []string{"\n", "\r", "\u0085", "\u2028", "\u2029", "\x1b"}

// TestValidatePrintsOneLinePerError: environment keys and values holding a
// newline, a carriage return, NEL, U+2028 or ESC give one escaped line per
// error, never a line break inside one.
func TestValidatePrintsOneLinePerError(t *testing.T) {
	manifest := good + "  environment:\n" +
		"    \"A\\nB\": x\n    \"C\\rD\": x\n    \"E\\u0085F\": x\n    \"G\\u2028H\": x\n    \"I\\eJ\": x\n" +
		"    OK: \"v\\nw\\u2029\"\n"
	dir := dirWith(t, map[string]string{"web.yaml": manifest})
	out, code := runCLI(t, "validate", "--owner-check", "off", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []string{
		`web.yaml:7:5: spec.environment.A\nB: invalid variable name "A\nB"`,
		`web.yaml:8:5: spec.environment.C\rD: invalid variable name "C\rD"`,
		`web.yaml:9:5: spec.environment.E\u0085F: invalid variable name "E\u0085F"`,
		`web.yaml:10:5: spec.environment.G\u2028H: invalid variable name "G\u2028H"`,
		`web.yaml:11:5: spec.environment.I\x1bJ: invalid variable name "I\x1bJ"`,
		`web.yaml:12:5: spec.environment.OK: control character '\n' not allowed (it could inject a line into a unit file)`,
		"6 errors; 0 objects valid",
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, l := range lines {
		if !strings.HasSuffix(l, want[i]) {
			t.Errorf("line %d = %q, want it to end with %q", i+1, l, want[i])
		}
	}
}

// TestEventsPrintOneLinePerEvent: a message or object holding control
// characters is printed escaped, one event per line.
func TestEventsPrintOneLinePerEvent(t *testing.T) {
	now := time.Now()
	msg := "a\nb\rc\u0085d\u2028e\x1b[31mf\tg"
	evs := []store.StoredEvent{{Event: reconcile.Event{Time: now, LastSeen: now, Type: reconcile.Warning, Reason: reconcile.ReasonInvalid, Object: "Service/x\u2029", Message: msg, Count: 1}}}
	var b bytes.Buffer
	if err := printEvents(&b, evs, false, now); err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSuffix(b.String(), "\n")
	if strings.Count(out, "\n") != 0 {
		t.Fatalf("one event printed as several lines:\n%q", out)
	}
	for _, c := range lineBreakers {
		if strings.Contains(out, c) {
			t.Errorf("raw %q in %q", c, out)
		}
	}
	if !strings.Contains(out, `a b\rc\u0085d\u2028e\x1b[31mf\tg`) || !strings.Contains(out, `Service/x\u2029`) {
		t.Errorf("printed %q", out)
	}
}

// TestDiffPrintsOneLinePerFinding: a finding or step reason holding control
// characters (a foreign unit's text, a systemd error) stays one line.
func TestDiffPrintsOneLinePerFinding(t *testing.T) {
	res := reconcile.Result{Plan: reconcile.Plan{
		Steps:    []actuators.Step{{Op: actuators.OpStart, Unit: "web.service", Reason: "inactive\nwant\u2028active"}},
		Findings: []reconcile.Finding{{Object: "Service/web", Reason: reconcile.ReasonForeignDropIn, Message: "drop-in x\r\n.conf\x1b", Warning: true}},
	}}
	var b bytes.Buffer
	printPlan(&b, "fake", res)
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 5 { // Steps:, the step, Findings:, the finding, Plan:
		t.Fatalf("%d lines, want 5:\n%s", len(lines), b.String())
	}
	for _, c := range lineBreakers {
		if strings.Contains(b.String(), strings.TrimSuffix(c, "\n")) && c != "\n" {
			t.Errorf("raw %q in %q", c, b.String())
		}
	}
	if !strings.Contains(lines[1], `inactive\nwant\u2028active`) || !strings.Contains(lines[3], `drop-in x\r\n.conf\x1b`) {
		t.Errorf("printed:\n%s", b.String())
	}
}

func TestEscapeLinesKeepsStructure(t *testing.T) {
	if got, want := escapeLines("a\x1b\nb\u2028c\rd"), "a\\x1b\nb\\u2028c\\rd"; got != want {
		t.Errorf("escapeLines = %q, want %q", got, want)
	}
}
