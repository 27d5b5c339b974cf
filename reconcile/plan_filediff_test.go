package reconcile

import (
	"fmt"
	"strings"
	"testing"

	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

// A FileEdited finding names the line of the hand edit, as numbered in the
// file on disk; the agent's own X-Resil-Process-Since line (written after a
// reload-only change, never rendered) is not that edit.
func TestFileEditedNamesTheEditedLine(t *testing.T) {
	o := &desired.Object{APIVersion: desired.APIVersion, Kind: desired.KindService, Metadata: desired.ObjectMeta{Name: "web"},
		Source: desired.Source{File: "web.yaml"}, Service: &desired.ServiceSpec{Command: []string{"/bin/sleep", "infinity"},
			Restart: &desired.RestartSpec{Policy: desired.RestartAlways, Delay: "5s"}}}
	files, err := desired.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	rendered := string(files[0].Data)
	const since = 1796481470370498
	edit := func(data string) string { return strings.Replace(data, "RestartSec=5s", "RestartSec=9s", 1) }
	for _, tt := range []struct {
		name string
		file string
	}{
		{"edited", edit(rendered)},
		{"edited, with the process-since marker", edit(string(ownmark.WithProcessSince([]byte(rendered), since)))},
		{"edited, marker moved to the end", edit(rendered) + ownmark.KeyProcessSince + "=1\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			line := 0
			for i, l := range strings.Split(tt.file, "\n") {
				if l == "RestartSec=9s" {
					line = i + 1
				}
			}
			if line == 0 {
				t.Fatalf("fixture has no edit:\n%s", tt.file)
			}
			u := &observed.Unit{Name: "web.service", File: []byte(tt.file), Owner: o.ID(), LoadState: "loaded", ActiveState: "active",
				SubState: "running", UnitFileState: "enabled"}
			plan := Compute(Input{Objects: []*desired.Object{o}, Files: map[string][]desired.UnitFile{o.ID(): files}, UnitDir: unitDir,
				Observed: &observed.State{Backend: "systemd", Units: map[string]*observed.Unit{"web.service": u}}})
			want := fmt.Sprintf(`(line %d is "RestartSec=9s", want "RestartSec=5s")`, line)
			var got []string
			for _, f := range plan.Findings {
				if f.Reason == ReasonFileEdited {
					got = append(got, f.Message)
				}
			}
			if len(got) != 1 || !strings.Contains(got[0], want) {
				t.Errorf("FileEdited findings %q, want one with %s", got, want)
			}
		})
	}
}

func TestFirstDifference(t *testing.T) {
	mark := ownmark.KeyProcessSince + "=42"
	for _, tt := range []struct {
		name, got, want, diff string
	}{
		{"same", "a\nb\n", "a\nb\n", "no line differs"},
		{"only the marker", "a\n" + mark + "\nb\n", "a\nb\n", "no line differs"},
		{"edit after the marker", "a\n" + mark + "\nc\n", "a\nb\n", `line 3 is "c", want "b"`},
		{"edit before the marker", "x\n" + mark + "\nb\n", "a\nb\n", `line 1 is "x", want "a"`},
		{"line added at the end", "a\n" + mark + "\nb\nc", "a\nb\n", `line 4 is "c", want ""`},
		{"line removed at the end", "a\n" + mark + "\n", "a\nb\n", `line 3 is "", want "b"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := firstDifference([]byte(tt.got), []byte(tt.want)); got != tt.diff {
				t.Errorf("firstDifference = %s, want %s", got, tt.diff)
			}
		})
	}
}
