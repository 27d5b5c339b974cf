package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"resil.dev/resil/e2e/sandbox"
)

const good = `apiVersion: resil.dev/v1
kind: Service
metadata: {name: web}
spec:
  command: ["/bin/sleep", "infinity"]
`

func dirWith(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestValidateExitCodes(t *testing.T) {
	okDir := dirWith(t, map[string]string{"web.yaml": good})
	badDir := dirWith(t, map[string]string{"web.yaml": good, "bad.yaml": strings.Replace(good, "name: web", "name: bad", 1) + "  restart: {delay: 5 seconds}\n"})
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"valid dir", []string{"validate", "--owner-check", "off", okDir}, 0, "1 object valid"},
		{"invalid dir", []string{"validate", "--owner-check", "off", badDir}, 1, `bad.yaml:6:13: spec.restart.delay: invalid duration "5 seconds"`},
		{"one valid file of a bad dir", []string{"validate", "--owner-check", "off", filepath.Join(badDir, "web.yaml")}, 0, "1 object valid"},
		{"missing path", []string{"validate", filepath.Join(okDir, "nope")}, 2, ""},
		{"bad output flag", []string{"validate", "-o", "xml", okDir}, 2, ""},
		{"unknown flag", []string{"validate", "--nope"}, 2, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := runCLI(t, c.args...)
			if code != c.code || !strings.Contains(out, c.want) {
				t.Fatalf("exit %d (want %d), output:\n%s\nwant it to contain %q", code, c.code, out, c.want)
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	dir := dirWith(t, map[string]string{"web.yaml": good, "bad.yaml": "apiVersion: resil.dev/v2\nkind: Service\nmetadata: {name: x}\nspec: {command: [/bin/true]}\n"})
	out, code := runCLI(t, "validate", "-o", "json", "--owner-check", "off", dir)
	var rep validateReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 {
		t.Fatalf("exit %d, %v:\n%s", code, err, out)
	}
	if rep.Valid || len(rep.Errors) != 1 || rep.Errors[0].Field != "apiVersion" || rep.Errors[0].Line != 1 || len(rep.Objects) != 1 {
		t.Fatalf("report: %+v", rep)
	}
}

func TestValidateRefusesInsecureManifestsAsRoot(t *testing.T) {
	sandbox.RequireRoot(t, "for the ownership checks")
	dir := dirWith(t, map[string]string{"web.yaml": good})
	if err := os.Chmod(filepath.Join(dir, "web.yaml"), 0o666); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "validate", dir)
	if code != 1 || !strings.Contains(out, "writable by group or others") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestRender(t *testing.T) {
	dir := dirWith(t, map[string]string{"web.yaml": good})
	out, code := runCLI(t, "render", "--owner-check", "off", "--manifests", dir, "web")
	if code != 0 || !strings.Contains(out, "# /etc/systemd/system/web.service") || !strings.Contains(out, "X-Resil-Object=Service/web") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if _, code := runCLI(t, "render", "--owner-check", "off", "--manifests", dir, "nope"); code != 1 {
		t.Fatalf("render of an unknown name: exit %d", code)
	}
}

// diff on the process backend needs no systemd: exit 1 with changes, and it
// writes nothing.
func TestDiffProcessBackend(t *testing.T) {
	dir := dirWith(t, map[string]string{"web.yaml": good})
	state := t.TempDir()
	out, code := runCLI(t, "diff", "--backend", "process", "--owner-check", "off", "--manifests", dir, "--state-dir", state)
	if code != 1 || !strings.Contains(out, "start web.service (new unit)") || !strings.Contains(out, "+++ "+filepath.Join(state, "units", "web.service")) {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if ents, _ := os.ReadDir(filepath.Join(state, "units")); len(ents) != 0 {
		t.Fatalf("diff wrote %d files", len(ents))
	}
	out, code = runCLI(t, "diff", "-o", "json", "--backend", "process", "--owner-check", "off", "--manifests", dir, "--state-dir", state)
	var rep diffJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || !rep.Changes || len(rep.Steps) != 4 || rep.Hash == "" {
		t.Fatalf("json diff: exit %d %v %+v", code, err, rep)
	}
	// Invalid manifests make diff exit 2.
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("kind: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, code := runCLI(t, "diff", "--backend", "process", "--owner-check", "off", "--manifests", dir, "--state-dir", state); code != 2 {
		t.Fatalf("diff with an invalid manifest: exit %d, want 2", code)
	}
}

// diff writes nothing (issue 9, item 8): a state dir that does not exist
// stays absent, subfolders included, and an existing one keeps its tree.
func TestDiffWritesNothing(t *testing.T) {
	dir := dirWith(t, map[string]string{"web.yaml": good})
	state := filepath.Join(t.TempDir(), "state")
	for _, args := range [][]string{{}, {"-o", "json"}} {
		full := append([]string{"diff", "--backend", "process", "--owner-check", "off", "--manifests", dir, "--state-dir", state}, args...)
		if out, code := runCLI(t, full...); code != 1 {
			t.Fatalf("diff %v: exit %d:\n%s", args, code, out)
		}
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Fatalf("diff %v created the state dir %s (%v)", args, state, err)
		}
	}
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, code := runCLI(t, "diff", "--backend", "process", "--owner-check", "off", "--manifests", dir, "--state-dir", state); code != 1 {
		t.Fatalf("diff: exit %d", code)
	}
	if ents, err := os.ReadDir(state); err != nil || len(ents) != 0 {
		t.Fatalf("diff wrote into an empty state dir: %v %v", ents, err)
	}
}

func TestSecondAgentRefused(t *testing.T) {
	state := t.TempDir()
	unlock, err := lockState(state)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := lockState(state); err == nil || !strings.Contains(err.Error(), "another reconciler holds") {
		t.Fatalf("second lock: %v", err)
	}
}

// A command that cannot open (the state dir locked by another agent, a bad
// flag value) returns its error with its exit status: it released what it
// had opened without calling through a nil func (every such error was a
// SIGSEGV and exit 2 before).
func TestCommandOpenErrors(t *testing.T) {
	dir := dirWith(t, map[string]string{"web.yaml": good})
	locked := t.TempDir()
	unlock, err := lockState(locked)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	free := t.TempDir()
	// A labels file caught empty (the first instant of `cat > labels.yaml`)
	// or holding two documents is an error naming it, never "no labels",
	// which would prune every object selected by label.
	labels := dirWith(t, map[string]string{"empty.yaml": "# labels\n", "two.yaml": "role: web\n---\nrole: db\n"})
	empty, two := filepath.Join(labels, "empty.yaml"), filepath.Join(labels, "two.yaml")
	tests := []struct {
		name  string
		args  []string
		state string
		code  int
		want  string
	}{
		{"run, state dir locked", []string{"run", "--metrics-addr", ""}, locked, 1, "another reconciler holds"},
		{"apply, state dir locked", []string{"apply"}, locked, 2, "another reconciler holds"},
		{"reset, bad backend", []string{"reset", "web", "--backend", "bogus"}, free, 2, "--backend must be"},
		{"diff, bad backend", []string{"diff", "--backend", "bogus"}, free, 2, "--backend must be"},
		{"apply, bad log level", []string{"apply", "--log-level", "bogus"}, free, 2, "bogus"},
		{"prune, bad backend", []string{"prune", "--backend", "bogus"}, free, 2, "--backend must be"},
		{"reset, unknown unit", []string{"reset", "nosuch"}, free, 1, "reset nosuch.service: no manifest in"},
		{"apply, labels file missing", []string{"apply", "--host-labels", "/nonexistent/labels.yaml"}, free, 2, "--host-labels"},
		{"diff, labels file missing", []string{"diff", "--host-labels", "/nonexistent/labels.yaml"}, free, 2, "--host-labels"},
		{"validate, labels file missing", []string{"validate", "--host-labels", "/nonexistent/labels.yaml"}, free, 2, "--host-labels"},
		{"apply, labels file empty", []string{"apply", "--host-labels", empty}, free, 2, empty + ": no document"},
		{"diff, labels file empty", []string{"diff", "--host-labels", empty}, free, 2, empty + ": no document"},
		{"apply, labels file with two documents", []string{"apply", "--host-labels", two}, free, 2, two + ":3:1: a second YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--owner-check", "off", "--manifests", dir, "--state-dir", tt.state}, tt.args...)
			if !hasArg(tt.args, "--backend") {
				args = append(args, "--backend", "process")
			}
			var out string
			var code int
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("panicked: %v", r)
					}
				}()
				out, code = runCLIErr(t, args...)
			}()
			if code != tt.code || !strings.Contains(out, tt.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tt.code, tt.want, out)
			}
		})
	}
}

// runCLIErr is runCLI with the returned error's text (what main prints)
// appended to the output.
func runCLIErr(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, code, err := execCLI(args...)
	if err != nil {
		out += err.Error()
	}
	return out, code
}

func hasArg(args []string, flag string) bool {
	for _, a := range args {
		if a == flag {
			return true
		}
	}
	return false
}
