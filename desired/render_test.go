package desired

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"resil.dev/resil/internal/ownmark"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"resil.dev/resil/e2e/sandbox"
)

// renderCase is one manifest set to render: a render corpus case or the
// examples in manifests/.
type renderCase struct {
	name   string // case name; golden files go in goldenDir/<object or case>/
	dir    string // directory to Load (a temp copy for corpus cases)
	golden string // golden directory
}

// renderCorpus lists desired/testdata/render/*.yaml, each copied (with its
// <case>.d drop-in folder, if any) into its own temp dir.
func renderCorpus(t *testing.T) []renderCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "render", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 12 {
		t.Fatalf("render corpus has %d cases, want at least 12", len(files))
	}
	var out []renderCase
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		dir := t.TempDir()
		copyTree(t, f, filepath.Join(dir, name+".yaml"))
		if st, err := os.Stat(strings.TrimSuffix(f, ".yaml") + ".d"); err == nil && st.IsDir() {
			copyTree(t, strings.TrimSuffix(f, ".yaml")+".d", filepath.Join(dir, name+".d"))
		}
		out = append(out, renderCase{name: name, dir: dir, golden: filepath.Join("testdata", "render", name)})
	}
	return out
}

// exampleDir is the repository's manifests/ directory.
var exampleDir = filepath.Join("..", "manifests")

// renderAll loads c.dir (which must be valid) and renders every selected
// object; it returns the set and the files by object ID.
func renderAll(t *testing.T, dir string) (*Set, map[string][]UnitFile) {
	t.Helper()
	set, err := loadInsecure(t, dir)
	if err != nil {
		t.Fatalf("Load(%s): %v", dir, err)
	}
	out := map[string][]UnitFile{}
	for _, o := range set.Sorted() {
		files, err := Render(o)
		if err != nil {
			t.Fatalf("Render(%s): %v", o, err)
		}
		again, _ := Render(o)
		for i := range files {
			if !bytes.Equal(files[i].Data, again[i].Data) {
				t.Errorf("Render(%s) is not deterministic for %s", o, files[i].Name)
			}
		}
		out[o.ID()] = files
	}
	return set, out
}

// TestRenderGolden renders the corpus in testdata/render/ and compares every
// file with testdata/render/<case>/<file>. Update with -update.
func TestRenderGolden(t *testing.T) {
	for _, c := range renderCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			set, byObj := renderAll(t, c.dir)
			if len(set.Objects) == 0 {
				t.Fatal("case renders nothing")
			}
			got := map[string][]byte{}
			for _, id := range sortedKeys(byObj) {
				checkRenders(t, set.Objects[id]) // no directive outside knownDirectives (renderedDirectives)
				for _, f := range byObj[id] {
					if _, dup := got[f.Name]; dup {
						t.Fatalf("two objects render %s", f.Name)
					}
					got[f.Name] = f.Data
					checkRoundTrip(t, set.Objects[id], f)
					// The planner's prune trusts UnitNames: a unit under
					// another name carrying the marker is a copy.
					if f.Dir == DirUnit && !slices.Contains(set.Objects[id].UnitNames(), f.Name) {
						t.Errorf("%s renders %s, not in its UnitNames %q", id, f.Name, set.Objects[id].UnitNames())
					}
				}
			}
			goldenDir(t, c.golden, got)
		})
	}
}

// TestRenderExamples does the same for the examples in manifests/: they all
// load together, without errors, and render to testdata/golden/manifests/<file>/.
func TestRenderExamples(t *testing.T) {
	set, byObj := renderAll(t, exampleDir)
	wantFiles := []string{"host-watchdog.yaml", "hourly-sync.yaml", "nightly-backup.yaml", "notifier.yaml",
		"watchdog-worker.yaml", "worker-with-db-check.yaml", "worker.yaml"}
	if !slices.Equal(set.Files, wantFiles) {
		t.Errorf("manifests/ holds %q, want %q", set.Files, wantFiles)
	}
	if len(set.NotSelected) != 0 {
		t.Errorf("examples must select every host, NotSelected = %v", sortedKeys(set.NotSelected))
	}
	byFile := map[string]map[string][]byte{}
	for _, id := range sortedKeys(byObj) {
		o := set.Objects[id]
		stem := strings.TrimSuffix(o.Source.File, ".yaml")
		if byFile[stem] == nil {
			byFile[stem] = map[string][]byte{}
		}
		for _, f := range byObj[id] {
			byFile[stem][f.Name] = f.Data
			checkRoundTrip(t, o, f)
		}
	}
	for _, stem := range sortedKeys(byFile) {
		t.Run(stem, func(t *testing.T) {
			goldenDir(t, filepath.Join("testdata", "golden", "manifests", stem), byFile[stem])
		})
	}
}

// postgresExampleDir is the runnable PostgreSQL example (README, e2e/postgres_test.go).
var postgresExampleDir = filepath.Join("..", "manifests", "examples", "postgres")

// TestRenderExamplePostgres: the PostgreSQL example loads without errors and
// renders to testdata/golden/examples/postgres/<file>/.
func TestRenderExamplePostgres(t *testing.T) {
	set, byObj := renderAll(t, postgresExampleDir)
	if want := []string{"pg-backup.yaml", "pg-worker.yaml", "pg.yaml"}; !slices.Equal(set.Files, want) {
		t.Errorf("manifests/examples/postgres holds %q, want %q", set.Files, want)
	}
	if len(set.Objects) != 3 || len(set.NotSelected) != 0 {
		t.Errorf("objects %v, not selected %v", sortedKeys(set.Objects), sortedKeys(set.NotSelected))
	}
	byFile := map[string]map[string][]byte{}
	for _, id := range sortedKeys(byObj) {
		o := set.Objects[id]
		stem := strings.TrimSuffix(o.Source.File, ".yaml")
		if byFile[stem] == nil {
			byFile[stem] = map[string][]byte{}
		}
		for _, f := range byObj[id] {
			byFile[stem][f.Name] = f.Data
			checkRoundTrip(t, o, f)
		}
	}
	for _, stem := range sortedKeys(byFile) {
		t.Run(stem, func(t *testing.T) {
			goldenDir(t, filepath.Join("testdata", "golden", "examples", "postgres", stem), byFile[stem])
		})
	}
}

// TestExampleScripts: the scripts the examples run are executable POSIX sh.
func TestExampleScripts(t *testing.T) {
	scripts, err := filepath.Glob(filepath.Join(exampleDir, "bin", "*"))
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scripts in manifests/bin: %v", err)
	}
	for _, s := range scripts {
		st, err := os.Stat(s)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o111 != 0o111 {
			t.Errorf("%s: mode %v, want executable", s, st.Mode())
		}
		data, _ := os.ReadFile(s)
		if !bytes.HasPrefix(data, []byte("#!/bin/sh\n")) {
			t.Errorf("%s: want a #!/bin/sh script", s)
		}
		t.Run("sh -n "+filepath.Base(s), func(t *testing.T) {
			sh := sandbox.RequireProgram(t, "sh", "dash")
			if out, err := exec.Command(sh, "-n", s).CombinedOutput(); err != nil {
				t.Errorf("sh -n %s: %v\n%s", s, err, out)
			}
		})
	}
	// Every example command under /opt/resil/examples/bin/ exists in manifests/bin/.
	set, _ := renderAll(t, exampleDir)
	for _, o := range set.Sorted() {
		for _, argv := range commandsOf(o) {
			if rest, ok := strings.CutPrefix(argv[0], "/opt/resil/examples/bin/"); ok {
				if _, err := os.Stat(filepath.Join(exampleDir, "bin", rest)); err != nil {
					t.Errorf("%s runs %s, which is not in manifests/bin/: %v", o, argv[0], err)
				}
			}
		}
	}
}

// commandsOf lists every argv an object's units execute.
func commandsOf(o *Object) [][]string {
	var out [][]string
	switch {
	case o.Service != nil:
		out = append(out, o.Service.Command)
		for _, c := range o.Service.PreStart {
			out = append(out, c.Command)
		}
		if h := o.Service.Health; h != nil && h.Startup != nil {
			out = append(out, []string{DefaultProbeCommand})
		}
	case o.Timer != nil && len(o.Timer.Command) > 0:
		out = append(out, o.Timer.Command)
	}
	return out
}

// TestSerialize pins the complete bytes of small renderings, like
// go-systemd's TestSerialize: header, ownership keys, hash and order.
func TestSerialize(t *testing.T) {
	for _, tc := range []struct {
		name     string
		manifest string
		want     map[string]string
	}{
		{
			name: "service",
			manifest: `apiVersion: resil.dev/v1
kind: Service
metadata: {name: echo}
spec:
  command: [/bin/echo, "a b", "$x", "50%"]
`,
			want: map[string]string{"echo.service": `# Managed by resil from Service/echo (m.yaml). Do not edit: the agent restores this file.
# Local changes belong in a drop-in manifest echo.d/*.yaml beside it.
[Unit]
Description=resil service echo
X-Resil-Object=Service/echo
X-Resil-Source=m.yaml
X-Resil-Hash=sha256:d5a451634aece47c019404f8

[Service]
Type=exec
ExecStart=/bin/echo "a b" $$x 50%%
Restart=on-failure

[Install]
WantedBy=multi-user.target
`},
		},
		{
			name: "timer",
			manifest: `apiVersion: resil.dev/v1
kind: Timer
metadata: {name: tick}
spec:
  schedule: [minutely]
  command: [/usr/bin/true]
  retry: {attempts: 2, delay: 5s}
`,
			want: map[string]string{
				"tick.timer": `# Managed by resil from Timer/tick (m.yaml). Do not edit: the agent restores this file.
# Local changes belong in a drop-in manifest tick.d/*.yaml beside it.
[Unit]
Description=resil timer tick
X-Resil-Object=Timer/tick
X-Resil-Source=m.yaml
X-Resil-Hash=sha256:5b0d0c51b1e7ab93c6db297e

[Timer]
OnCalendar=minutely
AccuracySec=1s
Unit=tick.service

[Install]
WantedBy=timers.target
`,
				"tick.service": `# Managed by resil from Timer/tick (m.yaml). Do not edit: the agent restores this file.
# Local changes belong in a drop-in manifest tick.d/*.yaml beside it.
[Unit]
Description=resil timer tick (job)
StartLimitIntervalSec=0
X-Resil-Object=Timer/tick
X-Resil-Source=m.yaml
X-Resil-Hash=sha256:86fb0d15960a10a0ec394c86

[Service]
Type=oneshot
ExecStart=/bin/sh -c "n=1; until \"$$0\" \"$$@\"; do s=$$?; if [ \"$$n\" -ge 2 ]; then echo \"resil: job failed after $$n attempts (exit status $$s)\" >&2; exit \"$$s\"; fi; echo \"resil: job attempt $$n failed (exit status $$s), retrying in 5s\" >&2; n=$$((n+1)); sleep 5; done" /usr/bin/true
`,
			},
		},
		{
			name: "watchdog",
			manifest: `apiVersion: resil.dev/v1
kind: Watchdog
metadata: {name: wd}
spec: {runtimeTimeout: 1m}
`,
			want: map[string]string{WatchdogFile: `# Managed by resil from Watchdog/wd (m.yaml). Do not edit: the agent restores this file.
# Local changes belong in a drop-in manifest wd.d/*.yaml beside it.
# X-Resil-Object=Watchdog/wd
# X-Resil-Source=m.yaml
[Manager]
RuntimeWatchdogSec=60s
`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"m.yaml": tc.manifest})
			_, byObj := renderAll(t, dir)
			got := map[string]string{}
			for _, files := range byObj {
				for _, f := range files {
					got[f.Name] = string(f.Data)
				}
			}
			for name, want := range tc.want {
				if got[name] != want {
					t.Errorf("%s:\n%s", name, lineDiff(want, got[name]))
				}
				if strings.Contains(want, KeyHash) {
					if rec, intact := ownmark.HashOf([]byte(got[name])); !intact {
						t.Errorf("%s: HashOf = %q, not intact", name, rec)
					}
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("rendered %q, want %q", sortedKeys(got), sortedKeys(tc.want))
			}
		})
	}
}

func TestSpan(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0"}, {-time.Second, "0"}, {time.Second, "1s"}, {90 * time.Second, "90s"}, {1500 * time.Millisecond, "1500ms"},
		{250 * time.Microsecond, "250us"}, {time.Nanosecond, "0us"}, {24 * time.Hour, "86400s"},
	} {
		if got := Span(tc.d); got != tc.want {
			t.Errorf("Span(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestHashOfAndIsOwned(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"m.yaml": "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: x}\nspec: {command: [/bin/true]}\n"})
	_, byObj := renderAll(t, dir)
	data := byObj["Service/x"][0].Data
	if id, ok := ownmark.IsOwned(data); !ok || id != "Service/x" {
		t.Errorf("IsOwned = %q, %v", id, ok)
	}
	rec, intact := ownmark.HashOf(data)
	if !intact || !strings.HasPrefix(rec, "sha256:") {
		t.Errorf("ownmark.HashOf(rendered) = %q, %v; want intact", rec, intact)
	}
	edited := bytes.Replace(data, []byte("Restart=on-failure"), []byte("Restart=always"), 1)
	if rec2, intact := ownmark.HashOf(edited); intact || rec2 != rec {
		t.Errorf("ownmark.HashOf(edited) = %q, %v; want %q, not intact", rec2, intact, rec)
	}
	if _, intact := ownmark.HashOf([]byte("[Unit]\nDescription=x\n")); intact {
		t.Error("ownmark.HashOf(unowned) is intact")
	}
	if _, ok := ownmark.IsOwned([]byte("[Unit]\nDescription=x\n")); ok {
		t.Error("ownmark.IsOwned(unowned) = true")
	}
}

// semOption is a unit option by meaning. Values of kind argv are the argv
// systemd runs (an Exec*= line split by systemd's rules), of kind env the one
// assignment an Environment= line sets; raw values are compared as written.
type semOption struct {
	section, name string
	kind          valueKind
	value         string
}

type valueKind int

const (
	raw valueKind = iota
	argvKind
	envKind
)

func (s semOption) String() string {
	v := s.value
	if s.kind == argvKind {
		v = fmt.Sprintf("%q", strings.Split(v, "\x00"))
	} else {
		v = strconv.Quote(v)
	}
	return fmt.Sprintf("[%s] %s=%s", s.section, s.name, v)
}

func argvValue(argv []string) string { return strings.Join(argv, "\x00") }

// interpret reads a parsed option as want says it should be read.
func interpret(op *unit.UnitOption, want valueKind) (semOption, error) {
	got := semOption{op.Section, op.Name, want, op.Value}
	switch want {
	case argvKind:
		argv, err := splitExec(op.Value)
		if err != nil {
			return got, fmt.Errorf("%s=%s: %w", op.Name, op.Value, err)
		}
		got.value = argvValue(argv)
	case envKind:
		as, err := splitEnvironment(op.Value)
		if err != nil {
			return got, fmt.Errorf("%s=%s: %w", op.Name, op.Value, err)
		}
		if len(as) != 1 {
			return got, fmt.Errorf("%s=%s sets %d variables, want 1", op.Name, op.Value, len(as))
		}
		got.value = as[0]
	}
	return got, nil
}

// expected builds, from the manifest alone, the options a file must hold.
// It is written independently of render.go (only Span, the wrapper scripts
// and the defaults are shared), so a rendering that drops, adds, reorders or
// misquotes anything fails the round trip.
type expected struct {
	opts []semOption
}

func (e *expected) add(section, name, value string) {
	e.opts = append(e.opts, semOption{section, name, raw, value})
}

func (e *expected) argv(section, name string, argv []string) {
	e.opts = append(e.opts, semOption{section, name, argvKind, argvValue(argv)})
}

func (e *expected) addIf(section, name, value string) {
	if value != "" {
		e.add(section, name, value)
	}
}

func (e *expected) escape(section string, m map[string]map[string]string) {
	for _, k := range sortedKeys(m[section]) {
		e.add(section, k, m[section][k])
	}
}

func (e *expected) owner(o *Object) {
	e.add("Unit", KeyObject, o.ID())
	e.add("Unit", KeySource, strings.Join(append([]string{o.Source.File}, o.Source.DropIns...), " "))
	e.add("Unit", KeyHash, "") // value checked with HashOf
	if o.TakesOver() {
		e.add("Unit", ownmark.KeyTakeOver, "yes")
	}
}

func (e *expected) process(user, group, wd string, env map[string]string, envFiles []string, logs *Logs) {
	e.addIf("Service", "User", user)
	e.addIf("Service", "Group", group)
	e.addIf("Service", "WorkingDirectory", wd)
	for _, k := range sortedKeys(env) {
		e.opts = append(e.opts, semOption{"Service", "Environment", envKind, k + "=" + env[k]})
	}
	for _, f := range envFiles {
		e.add("Service", "EnvironmentFile", f)
	}
	if logs != nil {
		if logs.Stdout != "" {
			e.add("Service", "StandardOutput", "append:"+logs.Stdout)
		}
		if logs.Stderr != "" {
			e.add("Service", "StandardError", "append:"+logs.Stderr)
		}
	}
}

func lockedArgv(lock string, argv []string) []string {
	if lock == "" {
		return argv
	}
	return append([]string{"/bin/sh", "-c", lockScript, lock}, argv...)
}

func descriptionOr(d, def string) string {
	if d == "" {
		return def
	}
	return d
}

func expectFile(o *Object, file string) ([]semOption, error) {
	var e expected
	name := o.Metadata.Name
	switch {
	case o.Service != nil && file == name+".service":
		s := o.Service
		e.add("Unit", "Description", descriptionOr(s.Description, "resil service "+name))
		e.addIf("Unit", "After", strings.Join(s.After, " "))
		e.addIf("Unit", "Requires", strings.Join(s.Requires, " "))
		e.addIf("Unit", "Wants", strings.Join(s.Wants, " "))
		if s.Restart != nil && s.Restart.Limit != nil {
			e.add("Unit", "StartLimitIntervalSec", Span(s.Restart.Limit.Interval.D()))
			e.add("Unit", "StartLimitBurst", strconv.Itoa(s.Restart.Limit.Burst))
		}
		e.escape("Unit", s.Systemd)
		e.owner(o)
		if s.Watchdog != nil {
			e.add("Service", "Type", "notify")
			e.add("Service", "NotifyAccess", descriptionOr(s.Watchdog.NotifyAccess, "main"))
			e.add("Service", "WatchdogSec", Span(s.Watchdog.Timeout.D()))
		} else {
			e.add("Service", "Type", "exec")
		}
		var pre time.Duration
		for _, c := range s.PreStart {
			delay := time.Second
			if c.Delay != "" {
				delay = c.Delay.D()
			}
			script := fmt.Sprintf(checkScript, c.Retries, c.Retries+1, strconv.FormatFloat(delay.Seconds(), 'f', -1, 64))
			e.argv("Service", "ExecStartPre", append([]string{"/bin/sh", "-c", script}, c.Command...))
			pre += time.Duration(c.Retries) * (delay + 5*time.Second)
		}
		e.argv("Service", "ExecStart", lockedArgv(s.Lock, s.Command))
		if h := s.Health; h != nil && h.Startup != nil {
			p := h.Startup
			timeout, interval := 60*time.Second, time.Second
			if p.Timeout != "" {
				timeout = p.Timeout.D()
			}
			if p.Interval != "" {
				interval = p.Interval.D()
			}
			argv := []string{DefaultProbeCommand, "probe", "--timeout", timeout.String(), "--interval", interval.String()}
			if p.InitialDelay != "" {
				argv = append(argv, "--initial-delay", p.InitialDelay.D().String())
			}
			switch {
			case p.HTTP != nil:
				argv = append(argv, "--http", p.HTTP.URL, "--status", descriptionOr(string(p.HTTP.Status), "200-399"))
				for _, k := range sortedKeys(p.HTTP.Headers) {
					argv = append(argv, "--header", k+": "+p.HTTP.Headers[k])
				}
			case p.TCP != "":
				argv = append(argv, "--tcp", p.TCP)
			default:
				argv = append(append(argv, "--"), p.Exec...)
			}
			e.argv("Service", "ExecStartPost", argv)
			pre += p.InitialDelay.D() + timeout
		}
		restart, delay := "on-failure", Duration("")
		if s.Restart != nil {
			restart = map[RestartPolicy]string{"": "on-failure", RestartAlways: "always", RestartOnFailure: "on-failure", RestartNever: "no"}[s.Restart.Policy]
			delay = s.Restart.Delay
		}
		e.add("Service", "Restart", restart)
		if delay != "" {
			e.add("Service", "RestartSec", Span(delay.D()))
		}
		if pre > 0 {
			e.add("Service", "TimeoutStartSec", Span(pre+90*time.Second))
		}
		if s.StopTimeout != "" {
			e.add("Service", "TimeoutStopSec", Span(s.StopTimeout.D()))
		}
		e.process(s.User, s.Group, s.WorkingDirectory, s.Environment, s.EnvironmentFiles, s.Logs)
		if r := s.Resources; r != nil {
			e.addIf("Service", "MemoryMax", r.MemoryMax)
			e.addIf("Service", "CPUQuota", r.CPUQuota)
			if r.TasksMax > 0 {
				e.add("Service", "TasksMax", strconv.Itoa(r.TasksMax))
			}
		}
		e.addIf("Service", "StateDirectory", s.StateDirectory)
		e.escape("Service", s.Systemd)
		wanted := []string{"multi-user.target"}
		if s.WantedBy != nil {
			wanted = s.WantedBy
		}
		e.addIf("Install", "WantedBy", strings.Join(wanted, " "))
		e.escape("Install", s.Systemd)
	case o.Timer != nil && file == name+".timer":
		t := o.Timer
		e.add("Unit", "Description", descriptionOr(t.Description, "resil timer "+name))
		if t.Persistent && t.CatchUp != CatchUpSkip && t.MaxLateness != "" {
			e.add("Unit", "After", AgentUnit) // started after the agent's first pass
		}
		e.escape("Unit", t.Systemd)
		e.owner(o)
		for _, s := range t.Schedule {
			e.add("Timer", "OnCalendar", s)
		}
		if t.OnBoot != "" {
			e.add("Timer", "OnBootSec", Span(t.OnBoot.D()))
		}
		if t.OnUnitActive != "" {
			e.add("Timer", "OnUnitActiveSec", Span(t.OnUnitActive.D()))
		}
		if t.Persistent && t.CatchUp != CatchUpSkip {
			e.add("Timer", "Persistent", "true")
		}
		if t.RandomizedDelay != "" {
			e.add("Timer", "RandomizedDelaySec", Span(t.RandomizedDelay.D()))
		}
		e.add("Timer", "AccuracySec", Span(Duration(descriptionOr(string(t.Accuracy), "1s")).D()))
		if t.Service != "" {
			e.add("Timer", "Unit", t.Service+".service")
		} else {
			e.add("Timer", "Unit", name+".service")
		}
		e.escape("Timer", t.Systemd)
		e.add("Install", "WantedBy", "timers.target")
		e.escape("Install", t.Systemd)
	case o.Timer != nil && o.Timer.Service == "" && file == name+".service":
		t := o.Timer
		e.add("Unit", "Description", descriptionOr(t.Description, "resil timer "+name)+" (job)")
		e.add("Unit", "StartLimitIntervalSec", "0")
		e.owner(o)
		e.add("Service", "Type", "oneshot")
		argv := lockedArgv(t.Lock, t.Command)
		if t.Retry != nil && t.Retry.Attempts > 1 {
			argv = retriedArgv(t.Retry.Attempts, t.Retry.Delay, argv)
		}
		e.argv("Service", "ExecStart", argv)
		e.process(t.User, t.Group, t.WorkingDirectory, t.Environment, nil, t.Logs)
		e.escape("Service", t.Systemd)
	case o.Watchdog != nil && file == WatchdogFile:
		w := o.Watchdog
		if w.RuntimeTimeout != "" {
			e.add("Manager", "RuntimeWatchdogSec", Span(w.RuntimeTimeout.D()))
		}
		if w.RebootTimeout != "" {
			e.add("Manager", "RebootWatchdogSec", Span(w.RebootTimeout.D()))
		}
		e.addIf("Manager", "WatchdogDevice", w.Device)
	default:
		return nil, fmt.Errorf("%s renders unexpected file %s", o, file)
	}
	return e.opts, nil
}

// checkRoundTrip parses a rendered file back with go-systemd and compares
// it, by meaning, with what the manifest asks for.
func checkRoundTrip(tb testing.TB, o *Object, f UnitFile) {
	tb.Helper()
	if err := roundTrip(o, f); err != nil {
		tb.Errorf("%s: %s: %v\n%s", o, f.Name, err, f.Data)
	}
}

func roundTrip(o *Object, f UnitFile) error {
	if f.Object != o.ID() {
		return fmt.Errorf("UnitFile.Object = %q", f.Object)
	}
	if id, ok := ownmark.IsOwned(f.Data); !ok || id != o.ID() {
		return fmt.Errorf("IsOwned = %q, %v", id, ok)
	}
	if f.Dir == DirUnit {
		if _, intact := ownmark.HashOf(f.Data); !intact {
			return fmt.Errorf("HashOf: hash does not match the body")
		}
	}
	parsed, err := unit.DeserializeOptions(bytes.NewReader(f.Data))
	if err != nil {
		return fmt.Errorf("DeserializeOptions: %w", err)
	}
	want, err := expectFile(o, f.Name)
	if err != nil {
		return err
	}
	var got []semOption
	for i, op := range parsed {
		kind := raw
		if i < len(want) && want[i].section == op.Section && want[i].name == op.Name {
			kind = want[i].kind
		}
		g, err := interpret(op, kind)
		if err != nil {
			return err
		}
		if g.name == KeyHash {
			g.value = ""
		}
		got = append(got, g)
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("options differ from the manifest:\n%s", lineDiff(joinSem(want), joinSem(got)))
	}
	return nil
}

func joinSem(s []semOption) string {
	var b strings.Builder
	for _, o := range s {
		b.WriteString(o.String() + "\n")
	}
	return b.String()
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on every rendered
// unit: each object's files (and, for a timer, the Service it starts) in
// their own directory. Any output fails the test, except "is not
// executable" for commands the manifest itself names that this machine
// does not have.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		sandbox.Missing(t, "systemd-analyze is not installed (apt-get install systemd): %v", err)
	}
	type group struct {
		name  string
		set   *Set
		files map[string][]UnitFile
	}
	var groups []group
	for _, c := range renderCorpus(t) {
		set, files := renderAll(t, c.dir)
		groups = append(groups, group{"render/" + c.name, set, files})
	}
	set, files := renderAll(t, exampleDir)
	groups = append(groups, group{"manifests", set, files})
	set, files = renderAll(t, postgresExampleDir)
	groups = append(groups, group{"examples/postgres", set, files})

	for _, g := range groups {
		for _, id := range sortedKeys(g.files) {
			o := g.set.Objects[id]
			var units []UnitFile
			for _, f := range g.files[id] {
				if f.Dir == DirUnit {
					units = append(units, f)
				}
			}
			if o.Timer != nil && o.Timer.Service != "" {
				units = append(units, g.files["Service/"+o.Timer.Service]...)
			}
			if len(units) == 0 {
				continue // the Watchdog manager drop-in is not a unit
			}
			t.Run(g.name+"/"+id, func(t *testing.T) {
				dir := t.TempDir()
				args := []string{"verify", "--man=no", "--generators=no"}
				missing := map[string]bool{}
				for _, f := range units {
					p := filepath.Join(dir, f.Name)
					if err := os.WriteFile(p, f.Data, 0o644); err != nil {
						t.Fatal(err)
					}
					args = append(args, p)
				}
				for _, oo := range []*Object{o, g.set.Objects["Service/"+timerService(o)]} {
					if oo == nil {
						continue
					}
					for _, argv := range commandsOf(oo) {
						if _, err := os.Stat(argv[0]); err != nil {
							missing[argv[0]] = true
						}
					}
				}
				cmd := exec.Command(sa, args...)
				cmd.Dir = dir
				out, _ := cmd.CombinedOutput() // the exit status ignores warnings; the output is what counts
				for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					if line == "" {
						continue
					}
					if m := notExecRE.FindStringSubmatch(line); m != nil && missing[m[1]] {
						continue
					}
					t.Errorf("systemd-analyze verify: %s", line)
				}
				if t.Failed() {
					for _, f := range units {
						t.Logf("%s:\n%s", f.Name, f.Data)
					}
				}
			})
		}
	}
}

// TestSystemdAnalyzeVerifyReports proves the harness above can fail: the
// same invocation on a unit with a bad value prints a warning.
func TestSystemdAnalyzeVerifyReports(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		sandbox.Missing(t, "systemd-analyze is not installed (apt-get install systemd): %v", err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.service")
	if err := os.WriteFile(p, []byte("[Service]\nExecStart=/bin/true\nCPUQuota=0%\nNoSuchKey=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(sa, "verify", "--man=no", "--generators=no", p).CombinedOutput()
	for _, want := range []string{"CPU quota", "NoSuchKey"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("systemd-analyze verify did not report %q; output:\n%s", want, out)
		}
	}
}

var notExecRE = regexp.MustCompile(`^\S+: Command (.+) is not executable: No such file or directory$`)

func timerService(o *Object) string {
	if o.Timer != nil {
		return o.Timer.Service
	}
	return ""
}

// TestRenderCorpusCoversEveryField: every field of ServiceSpec, TimerSpec and
// WatchdogSpec (and of the structs inside them) is set by at least one case
// of the render corpus or one example, so a new field cannot go untested.
func TestRenderCorpusCoversEveryField(t *testing.T) {
	seen := map[string]bool{}
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return
			}
			v = v.Elem()
		}
		switch v.Kind() {
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				f := v.Type().Field(i)
				if !f.IsExported() {
					continue
				}
				name := prefix + "." + f.Name
				if !v.Field(i).IsZero() {
					seen[name] = true
				}
				walk(name, v.Field(i))
			}
		case reflect.Slice:
			for i := 0; i < v.Len(); i++ {
				walk(prefix, v.Index(i))
			}
		}
	}
	dirs := []string{exampleDir}
	for _, c := range renderCorpus(t) {
		dirs = append(dirs, c.dir)
	}
	for _, dir := range dirs {
		set, err := Load(dir, Options{Host: testHost, Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []map[string]*Object{set.Objects, set.NotSelected} {
			for _, o := range m {
				walk("Service", reflect.ValueOf(o.Service))
				walk("Timer", reflect.ValueOf(o.Timer))
				walk("Watchdog", reflect.ValueOf(o.Watchdog))
				walk("Metadata", reflect.ValueOf(o.Metadata))
			}
		}
	}
	var all []string
	var fields func(prefix string, t reflect.Type)
	fields = func(prefix string, t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.IsExported() {
				all = append(all, prefix+"."+f.Name)
				fields(prefix+"."+f.Name, f.Type)
			}
		}
	}
	fields("Service", reflect.TypeOf(ServiceSpec{}))
	fields("Timer", reflect.TypeOf(TimerSpec{}))
	fields("Watchdog", reflect.TypeOf(WatchdogSpec{}))
	fields("Metadata", reflect.TypeOf(ObjectMeta{}))
	// Only a liveness probe has an action (validation refuses the others).
	notSettable := map[string]bool{"Service.Health.Startup.Action": true, "Service.Health.Readiness.Action": true}
	for _, f := range all {
		if !seen[f] && !notSettable[f] {
			t.Errorf("no render case or example sets %s", f)
		}
	}
}

// TestSystemdAcceptsValidationBounds: values at the edges of what validation
// accepts must be accepted by systemd too. Each line below is one object;
// all render and go through systemd-analyze verify, which must say nothing.
func TestSystemdAcceptsValidationBounds(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		sandbox.Missing(t, "systemd-analyze is not installed (apt-get install systemd): %v", err)
	}
	specs := []string{
		`restart: {delay: 0s, limit: {burst: 1, interval: 1ms}}`,
		`restart: {delay: 24h, limit: {burst: 10000, interval: 720h}}`,
		`restart: {delay: 1ns}`,
		`watchdog: {timeout: 100ms}`,
		`watchdog: {timeout: 24h, notifyAccess: all}`,
		`stopTimeout: 0s`,
		`stopTimeout: 1h`,
		`preStart: [{command: [/bin/true], retries: 1000, delay: 1h}, {command: [/bin/true], delay: 1ms}]`,
		`resources: {memoryMax: "1", cpuQuota: 1%, tasksMax: 1}`,
		`resources: {memoryMax: 16777215T, cpuQuota: 99999%, tasksMax: 2147483647}`,
		`resources: {memoryMax: infinity}`,
		`user: a234567890123456789012345678901`,
		`user: _x`,
		`user: "0"`,
		`user: "4294967294"`,
		`group: "65534"`,
		`after: [a@b.service, x.socket, y.mount, z.timer, p.path, d.device, s.slice, c.scope, w.swap, m.automount, e:f.target]`,
		`wantedBy: [default.target]`,
		`environment: {_: x, A_1: "", a: b}`,
		`environmentFiles: [/x, -/y]`,
		`stateDirectory: a/b.c/d-e_f`,
		`workingDirectory: /`,
		`logs: {stdout: /var/log/a:b.log, stderr: "/var/log/a'b\"c.log"}`,
		`lock: "/run/lock/a$b;c'd\"e"`,
		`description: "a\u00a0b c \u00ff"`,
		// The longest argument and environment entry execve takes.
		fmt.Sprintf(`preStart: [{command: [/bin/echo, %s]}], environment: {A: %s}`, strings.Repeat("a", MaxArgStrlen-1), strings.Repeat("b", MaxArgStrlen-3)),
	}
	timers := []string{
		`schedule: [daily], accuracy: 1us, randomizedDelay: 0s`,
		`onBoot: 1ms, onUnitActive: 8760h, accuracy: 168h, randomizedDelay: 168h`,
		`schedule: ["Mon..Fri *-*-* 10:00:00 Europe/Berlin", "*:0/5", "2030-01-01 00:00:00 UTC", "quarterly"], persistent: true`,
		`schedule: [hourly], retry: {attempts: 100, delay: 24h}`,
		`schedule: [hourly], retry: {attempts: 2, delay: 0s}`,
	}
	var docs []string
	for i, s := range specs {
		docs = append(docs, fmt.Sprintf("kind: Service\nmetadata: {name: s%d}\nspec: {command: [/bin/true], %s}\n", i, s))
	}
	for i, s := range timers {
		docs = append(docs, fmt.Sprintf("kind: Timer\nmetadata: {name: t%d}\nspec: {command: [/bin/true], %s}\n", i, s))
	}
	docs = append(docs, fmt.Sprintf("kind: Service\nmetadata: {name: %s}\nspec: {command: [/bin/true]}\n", strings.Repeat("n", 200)))
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"m.yaml": "apiVersion: resil.dev/v1\n" + strings.Join(docs, "---\napiVersion: resil.dev/v1\n")})
	set, byObj := renderAll(t, dir)
	if n := len(set.Objects); n != len(docs) {
		t.Fatalf("%d of %d objects loaded", n, len(docs))
	}
	out := t.TempDir()
	args := []string{"verify", "--man=no", "--generators=no"}
	for _, id := range sortedKeys(byObj) {
		for _, f := range byObj[id] {
			if slices.ContainsFunc(bytes.Split(f.Data, []byte("\n")), func(l []byte) bool { return len(l) >= unit.SYSTEMD_LINE_MAX }) {
				checkLongLines(t, set.Objects[id], f) // go-systemd cannot parse it
			} else {
				checkRoundTrip(t, set.Objects[id], f)
			}
			p := filepath.Join(out, f.Name)
			if err := os.WriteFile(p, f.Data, 0o644); err != nil {
				t.Fatal(err)
			}
			args = append(args, p)
		}
	}
	cmd := exec.Command(sa, args...)
	cmd.Dir = out
	output, _ := cmd.CombinedOutput()
	if s := strings.TrimSpace(string(output)); s != "" {
		t.Errorf("systemd-analyze verify:\n%s", s)
	}
}

// retriedArgv is the expected retry loop around argv: attempts tries, delay
// apart (100ms when unset), inside one run of the job.
func retriedArgv(attempts int, delay Duration, argv []string) []string {
	d := 100 * time.Millisecond
	if delay != "" {
		d = delay.D()
	}
	secs := strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
	script := fmt.Sprintf(retryScript, attempts, secs, secs)
	return append([]string{"/bin/sh", "-c", script}, argv...)
}
