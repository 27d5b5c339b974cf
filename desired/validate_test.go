package desired

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"resil.dev/resil/e2e/sandbox"
)

// TestDropInEmptyNameKeepsBase is issue 9 item 5: a drop-in NAME.d/*.yaml
// whose metadata.name is "" (or any other name, or not a string) is an
// error at its file:line:col naming metadata.name. It never creates an
// object ("Service/"), and the base object is protected: IsBroken keeps its
// last good version in force while the drop-in is broken.
func TestDropInEmptyNameKeepsBase(t *testing.T) {
	base := "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: worker}\nspec: {command: [/bin/sleep, infinity]}\n"
	for _, tc := range []struct{ name, dropIn, want string }{
		{"empty name", "metadata: {name: \"\"}\nspec: {restart: {delay: 10s}}\n",
			`worker.d/10-local.yaml:1:12: metadata.name: drop-in in worker.d names ""; omit metadata.name or give "worker"`},
		{"empty name, block style", "spec: {restart: {delay: 10s}}\nmetadata:\n  name: ''\n",
			`worker.d/10-local.yaml:3:3: metadata.name: drop-in in worker.d names ""; omit metadata.name or give "worker"`},
		{"other name", "metadata: {name: other}\n",
			`worker.d/10-local.yaml:1:12: metadata.name: drop-in in worker.d names "other"; omit metadata.name or give "worker"`},
		{"number", "metadata: {name: 7}\n",
			`worker.d/10-local.yaml:1:12: metadata.name: drop-in in worker.d names 7; omit metadata.name or give "worker"`},
		{"null", "metadata: {name: null}\n",
			`worker.d/10-local.yaml:1:12: metadata.name: a drop-in must not remove metadata.name`},
		{"empty kind", "kind: \"\"\n",
			`worker.d/10-local.yaml:1:1: kind: drop-in for Service/worker says kind ""; omit kind or give "Service"`},
		{"metadata list", "metadata: []\n",
			`worker.d/10-local.yaml:1:1: metadata: expected a mapping, got a list`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"worker.yaml": base, "worker.d/10-local.yaml": tc.dropIn})
			set, err := loadInsecure(t, dir)
			if err == nil || set == nil {
				t.Fatalf("Load = %v, %v; want the drop-in refused", set, err)
			}
			if got := strings.TrimSpace(errorLines(t, err, dir)); got != tc.want {
				t.Errorf("errors:\n got %s\nwant %s", got, tc.want)
			}
			for id, o := range set.Objects {
				if id != "Service/worker" || o.Metadata.Name != "worker" {
					t.Errorf("object %q (name %q) was created", id, o.Metadata.Name)
				}
			}
			if _, ok := set.Objects["Service/worker"]; ok {
				t.Errorf("Service/worker is applied with a broken drop-in; its last good version must stay")
			}
			if !set.BrokenNames["worker"] || set.BrokenNames[""] {
				t.Errorf("BrokenNames = %v, want worker", set.BrokenNames)
			}
			last := &Object{Kind: KindService, Metadata: ObjectMeta{Name: "worker"}, Source: Source{File: "worker.yaml"}}
			if !set.IsBroken(last) {
				t.Errorf("IsBroken(last good Service/worker) = false: it would be pruned")
			}
			if _, ok := set.Broken["worker.d/10-local.yaml"]; !ok {
				t.Errorf("Broken = %v, want the drop-in", sortedKeys(set.Broken))
			}
		})
	}
}

// TestErrorLinesEscapeControls: one error is always one line, whatever
// control character a key, a value, a folder name or a message holds.
func TestErrorLinesEscapeControls(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a\nb", `a\nb`},
		{"a\r\nb", `a\r\nb`},
		{"nel\u0085x", `nel\u0085x`},
		{"ls\u2028ps\u2029", `ls\u2028ps\u2029`},
		{"esc\x1b[31mred", `esc\x1b[31mred`},
		{"tab\tdel\x7f nul\x00", `tab\tdel\x7f nul\x00`},
		{"bidi\u202eevil\u2066", `bidi\u202eevil\u2066`},
		{"bad\xffutf8", `bad\xffutf8`},
		{`kept: "q\\" é ✓ ` + "\u00a0", `kept: "q\\" é ✓ ` + "\u00a0"},
	} {
		if got := EscapeControl(tc.in); got != tc.want {
			t.Errorf("EscapeControl(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	fe := &FieldError{File: "/etc/resil.d/w\n.d/x.yaml", Line: 3, Column: 5, Field: "spec.environment.A\nB", Detail: "bad \u2028 value\x1b"}
	if got, want := fe.Error(), `/etc/resil.d/w\n.d/x.yaml:3:5: spec.environment.A\nB: bad \u2028 value\x1b`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	// End to end: keys and values with each character, in one manifest.
	dir := t.TempDir()
	var env []string
	for i, c := range []string{`\n`, `\r`, `\u0085`, `\u2028`, `\e`} {
		env = append(env, fmt.Sprintf(`"K%d%sX": "v%s"`, i, c, c))
	}
	writeFiles(t, dir, map[string]string{"m.yaml": "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: m}\n" +
		"spec:\n  command: [/bin/true]\n  environment: {" + strings.Join(env, ", ") + "}\n"})
	_, err := loadInsecure(t, dir)
	fes := FieldErrors(err)
	if len(fes) != 10 {
		t.Fatalf("%d errors, want 10 (each key and each value):\n%v", len(fes), err)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(fes) {
		t.Fatalf("err.Error() has %d lines for %d errors:\n%q", len(lines), len(fes), err.Error())
	}
	for _, l := range lines {
		if strings.ContainsFunc(l, needsEscape) {
			t.Errorf("unescaped control character in %q", l)
		}
	}
}

// TestLengthCaps: what the kernel (MAX_ARG_STRLEN, ARG_MAX) or systemd
// (LONG_LINE_MAX) would refuse at start is refused at validation, with the
// field's position; what they accept validates.
func TestLengthCaps(t *testing.T) {
	x := func(n int) string { return strings.Repeat("x", n) }
	svc := func(spec string) string {
		return "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  command: [/bin/true]\n" + spec
	}
	env := func(n, size int) string {
		var b strings.Builder
		b.WriteString("  environment:\n")
		for i := range n {
			fmt.Fprintf(&b, "    V%d: %s\n", i, x(size))
		}
		return b.String()
	}
	// A timer job whose ExecStart= line is MaxUnitLine long as wrapped
	// in its lock, so that the retry loop around it makes it too long.
	timerArgv := func(n int) []string {
		return []string{"/bin/echo", x(100 << 10), x(100 << 10), x(100 << 10), x(100 << 10), x(n)}
	}
	lockedLine := func(n int) int { return len("ExecStart=" + CommandLine(withLock("/run/l", timerArgv(n)))) }
	fill := MaxUnitLine - lockedLine(1) + 1
	timer := func(retry string) string {
		return "apiVersion: resil.dev/v1\nkind: Timer\nmetadata: {name: s}\nspec:\n  onBoot: 1m\n  lock: /run/l\n" + retry +
			"  command: [" + strings.Join(timerArgv(fill), ", ") + "]\n"
	}
	retried := len("ExecStart=" + CommandLine(withRetry(&Retry{Attempts: 3}, withLock("/run/l", timerArgv(fill)))))
	headers := func(n, size int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "H%d: %s, ", i, x(size))
		}
		return strings.TrimSuffix(b.String(), ", ")
	}
	dollars := strings.Repeat("$", 60<<10) // 60 KiB as written, 120 KiB as rendered ($$)
	for _, tc := range []struct {
		name, manifest, want string
	}{
		{"timer job at the line limit", timer(""), ""},
		{"timer job over the line limit once retried", timer("  retry: {attempts: 3}\n"),
			fmt.Sprintf("m.yaml:8:3: spec.command: renders a %d-byte ExecStart= line; a unit-file line may have at most 524288 bytes (systemd reads lines up to 1048576)", retried)},
		{"startup exec probe line", svc("  health: {startup: {exec: [/bin/echo" + strings.Repeat(", "+x(100<<10), 6) + "]}}\n"),
			"m.yaml:6:22: spec.health.startup.exec: renders a 618563-byte ExecStartPost= line; a unit-file line may have at most 524288 bytes (systemd reads lines up to 1048576)"},
		{"startup exec probe line, $ as rendered", svc("  health: {startup: {exec: [/bin/echo" + strings.Repeat(", '"+dollars+"'", 5) + "]}}\n"),
			"m.yaml:6:22: spec.health.startup.exec: renders a 618562-byte ExecStartPost= line; a unit-file line may have at most 524288 bytes (systemd reads lines up to 1048576)"},
		{"startup exec probe argument", svc("  health: {startup: {exec: [/bin/echo, " + x(MaxArgStrlen) + "]}}\n"),
			"m.yaml:6:40: spec.health.startup.exec[1]: argument is 131072 bytes; the kernel refuses one of 131072 bytes or more (MAX_ARG_STRLEN, 131072 including the terminating NUL)"},
		{"startup exec probe with the environment over the exec limit", svc(env(16, 120<<10) + "  health: {startup: {exec: [/bin/echo, " + x(120<<10) + "]}}\n"),
			"m.yaml:23:22: spec.health.startup.exec: command line and environment come to 2093375 bytes (strings, NULs and pointers); an exec may pass 2031616 (ARG_MAX with the default 8 MiB stack, 65536 kept for what systemd adds)"},
		{"liveness exec probe line", svc("  health: {liveness: {exec: [/bin/echo" + strings.Repeat(", "+x(100<<10), 6) + "]}}\n"),
			"m.yaml:6:23: spec.health.liveness.exec: renders a 614425-byte ExecStart= line; a unit-file line may have at most 524288 bytes (systemd reads lines up to 1048576)"},
		{"readiness exec probe argument", svc("  health: {readiness: {exec: [/bin/echo, " + x(MaxArgStrlen) + "]}}\n"),
			"m.yaml:6:42: spec.health.readiness.exec[1]: argument is 131072 bytes; the kernel refuses one of 131072 bytes or more (MAX_ARG_STRLEN, 131072 including the terminating NUL)"},
		{"longest probe URL", svc("  health: {liveness: {http: {url: 'http://h/" + x(MaxProbeURL-9) + "'}}}\n"), ""},
		{"probe URL too long", svc("  health: {liveness: {http: {url: 'http://h/" + x(MaxProbeURL-8) + "'}}}\n"),
			"m.yaml:6:30: spec.health.liveness.http.url: URL is 8193 bytes; a probe URL may have at most 8192"},
		{"longest probe header", svc("  health: {startup: {http: {url: 'http://h/', headers: {H: " + x(MaxProbeHeader-3) + "}}}}\n"), ""},
		{"probe header too long", svc("  health: {readiness: {http: {url: 'http://h/', headers: {H: " + x(MaxProbeHeader-2) + "}}}}\n"),
			"m.yaml:6:59: spec.health.readiness.http.headers.H: header is 8193 bytes (name: value); a probe header may have at most 8192"},
		{"startup http probe line", svc("  health: {startup: {http: {url: 'http://h/', headers: {" + headers(70, 8000) + "}}}}\n"),
			"m.yaml:6:22: spec.health.startup.http: renders a 565358-byte ExecStartPost= line; a unit-file line may have at most 524288 bytes (systemd reads lines up to 1048576)"},
		{"700 KiB argument",
			"apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  command: [/bin/echo, " + x(700<<10) + "]\n",
			"m.yaml:5:24: spec.command[1]: argument is 716800 bytes; the kernel refuses one of 131072 bytes or more (MAX_ARG_STRLEN, 131072 including the terminating NUL)"},
		{"longest argument", svc("  preStart: [{command: [/bin/echo, " + x(MaxArgStrlen-1) + "]}]\n"), ""},
		{"argument one too long", svc("  preStart: [{command: [/bin/echo, " + x(MaxArgStrlen) + "]}]\n"),
			"m.yaml:6:36: spec.preStart[0].command[1]: argument is 131072 bytes; the kernel refuses one of 131072 bytes or more (MAX_ARG_STRLEN, 131072 including the terminating NUL)"},
		{"longest environment entry", svc("  environment: {AB: " + x(MaxArgStrlen-4) + "}\n"), ""},
		{"environment entry too long", svc("  environment: {AB: " + x(MaxArgStrlen-3) + "}\n"),
			"m.yaml:6:17: spec.environment.AB: the entry KEY=VALUE is 131072 bytes; the kernel refuses one of 131072 bytes or more (MAX_ARG_STRLEN, 131072 including the terminating NUL)"},
		{"long command line", // six arguments of 100 KiB: each fits MAX_ARG_STRLEN, the line does not
			"apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: s}\nspec:\n  command: [/bin/echo" + strings.Repeat(", "+x(100<<10), 6) + "]\n",
			"m.yaml:5:3: spec.command: renders a 614425-byte ExecStart= line; a unit-file line may have at most 524288 bytes (systemd reads lines up to 1048576)"},
		{"description line", svc("  description: " + x(MaxUnitLine) + "\n"),
			"m.yaml:6:3: spec.description: renders a 524300-byte Description= line; a unit-file line may have at most 524288 bytes (systemd reads lines up to 1048576)"},
		{"escape-hatch line", svc("  systemd: {Unit: {Documentation: " + x(MaxUnitLine) + "}}\n"),
			"m.yaml:6:20: spec.systemd.Unit.Documentation: renders a 524302-byte Documentation= line; a unit-file line may have at most 524288 bytes (systemd reads lines up to 1048576)"},
		{"after line", svc("  after: [" + strings.TrimSuffix(strings.Repeat(x(240)+".service, ", 2200), ", ") + "]\n"),
			"m.yaml:6:3: spec.after: renders a 547805-byte After= line; a unit-file line may have at most 524288 bytes (systemd reads lines up to 1048576)"},
		{"environment at the exec limit", svc(env(15, 120<<10)), ""},
		{"environment over the exec limit", svc(env(17, 120<<10)),
			"m.yaml:6:3: spec.environment: command line and environment come to 2089189 bytes (strings, NULs and pointers); an exec may pass 2031616 (ARG_MAX with the default 8 MiB stack, 65536 kept for what systemd adds)"},
		{"path", svc("  workingDirectory: /" + x(PathMax-1) + "\n"),
			"m.yaml:6:3: spec.workingDirectory: path is 4096 bytes; a path may have at most 4095 (PATH_MAX, 4096 including the terminating NUL)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"m.yaml": tc.manifest})
			set, err := Load(dir, Options{Host: testHost, Insecure: true, MaxFileBytes: 4 << 20})
			if got := strings.TrimSpace(errorLines(t, err, dir)); got != tc.want {
				t.Errorf("errors:\n got %s\nwant %s", got, tc.want)
			}
			if tc.want == "" {
				// The agent's binary may be anywhere: render with the
				// longest path it may have.
				o := set.Objects["Service/s"]
				if o == nil {
					o = set.Objects["Timer/s"]
				}
				files, err := RenderOptions{ProbeCommand: probeCommandBound}.Render(o)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range files {
					for _, l := range strings.Split(string(f.Data), "\n") {
						if len(l) > MaxUnitLine {
							t.Errorf("%s: a %d-byte line", f.Name, len(l))
						}
					}
				}
			}
		})
	}
}

// TestExecLimitsMatchKernel: the caps are the kernel's own. execve takes
// an argument of MaxArgStrlen-1 bytes and refuses one of MaxArgStrlen
// (E2BIG), and takes an argv and environment of the size validation lets
// through (ExecArgMax-ExecReserve); with the default 8 MiB stack it refuses
// one over ExecArgMax.
func TestExecLimitsMatchKernel(t *testing.T) {
	bin, err := exec.LookPath("true")
	if err != nil {
		sandbox.Missing(t, "no true(1) to exec: %v", err)
	}
	run := func(argv []string, env []string) error {
		cmd := exec.Command(bin, argv...)
		cmd.Env = env
		return cmd.Run()
	}
	if err := run([]string{strings.Repeat("a", MaxArgStrlen-1)}, nil); err != nil {
		t.Errorf("argument of MaxArgStrlen-1 bytes: %v", err)
	}
	if err := run([]string{strings.Repeat("a", MaxArgStrlen)}, nil); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("argument of MaxArgStrlen bytes: %v, want E2BIG", err)
	}
	if err := run(nil, []string{"A=" + strings.Repeat("b", MaxArgStrlen-3)}); err != nil {
		t.Errorf("environment entry of MaxArgStrlen-1 bytes: %v", err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_STACK, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur != 8<<20 {
		sandbox.Missing(t, "the total exec limit is checked with the default 8 MiB stack limit; RLIMIT_STACK is %d", lim.Cur)
	}
	// Entries that fill the budget exactly, as execSize counts them (the
	// program path is part of what validation's reserve covers).
	// (Distinct names: os/exec keeps only the last of duplicates.)
	fill := func(total int) []string {
		var env []string
		for n := 0; total-n > 0; {
			size := min(total-n, 100<<10) - 1 - 8 // string, NUL, pointer
			key := fmt.Sprintf("V%04d=", len(env))
			env = append(env, key+strings.Repeat("c", max(size-len(key), 0)))
			n += len(env[len(env)-1]) + 1 + 8
		}
		return env
	}
	env := fill(ExecArgMax - ExecReserve - execSize([]string{bin}, nil))
	if got := execSize([]string{bin}, nil, env...); got > ExecArgMax-ExecReserve {
		t.Fatalf("test fills %d bytes, over the budget", got)
	}
	if err := run(nil, env); err != nil {
		t.Errorf("argv+environment at the validation budget: %v", err)
	}
	if err := run(nil, fill(ExecArgMax+1)); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("argv+environment over ExecArgMax: %v, want E2BIG", err)
	}
}
