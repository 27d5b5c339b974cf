package desired

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"resil.dev/resil/desired/internal/directivegen"
	"resil.dev/resil/e2e/sandbox"
)

// systemdBinary is the systemd whose --dump-configuration-items made
// directives_gen.go.
const systemdBinary = "/lib/systemd/systemd"

// noSystemdEnv names the variable that, set to 1, lets the tests checking
// the directive table against systemd give up (through sandbox.Missing)
// when systemd is not installed; otherwise they fail: the table is only as
// good as its check against the real systemd.
const noSystemdEnv = "RESIL_NO_SYSTEMD_BINARY"

// requireSystemdTool returns the path of a systemd program (absolute, or
// looked up in $PATH), or fails t; with RESIL_NO_SYSTEMD_BINARY=1 it calls
// sandbox.Missing instead (a skip, or a failure under RESIL_E2E_REQUIRE=1).
func requireSystemdTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv(noSystemdEnv) == "1" {
		sandbox.Missing(t, "%s not found (apt-get install systemd): %v", name, err)
	}
	t.Fatalf("%s not found (apt-get install systemd; %s=1 skips this test where systemd cannot be installed): %v", name, noSystemdEnv, err)
	return ""
}

// TestDirectivesUpToDate regenerates the directive table from this
// machine's systemd and fails when it differs from the committed
// directives_gen.go (regenerate with go generate ./desired/).
func TestDirectivesUpToDate(t *testing.T) {
	bin := requireSystemdTool(t, systemdBinary)
	ver, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	version, err := directivegen.Version(ver)
	if err != nil {
		t.Fatal(err)
	}
	dump, err := exec.Command(bin, "--dump-configuration-items").Output()
	if err != nil {
		t.Fatalf("%s --dump-configuration-items: %v", bin, err)
	}
	want, err := directivegen.Generate(dump, version)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("directives_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		var changed []string // lineDiff prints every line; keep the changes
		for _, l := range strings.Split(lineDiff(string(got), string(want)), "\n") {
			if strings.HasPrefix(l, "+ ") || strings.HasPrefix(l, "- ") {
				changed = append(changed, l)
			}
		}
		t.Errorf("directives_gen.go is not what %s (systemd %s) prints (- committed, + systemd); run go generate ./desired/ and review the diff:\n%s",
			bin, version, strings.Join(changed, "\n"))
	}
}

// TestDirectivegenParse: the generator refuses what it cannot read rather
// than writing a partial table.
func TestDirectivegenParse(t *testing.T) {
	sections := []string{"Unit", "Install"}
	for _, c := range []struct {
		name, dump, err string
	}{
		{"ok", "[Unit]\nDescription=STRING\n[Socket]\nListenStream=OTHER\n[Install]\nAlias=OTHER\n", ""},
		{"missing section", "[Unit]\nDescription=STRING\n", "section [Install] missing"},
		{"key before section", "Description=STRING\n[Unit]\n[Install]\n", "before any [Section]"},
		{"no type", "[Unit]\nDescription=\n[Install]\nAlias=OTHER\n", "want Key=TYPE"},
		{"two types", "[Unit]\nA=BOOLEAN\nA=STRING\n[Install]\nAlias=OTHER\n", "listed as BOOLEAN and STRING"},
		{"section twice", "[Unit]\nA=BOOLEAN\n[Unit]\n[Install]\nAlias=OTHER\n", "listed twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			table, err := directivegen.Parse([]byte(c.dump), sections)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("Parse error = %v, want %q", err, c.err)
			case c.err == "" && (table["Unit"]["Description"] != "STRING" || table["Install"]["Alias"] != "OTHER" || len(table) != 2):
				t.Fatalf("Parse = %v", table)
			}
		})
	}
	if v, err := directivegen.Version([]byte("systemd 252 (252.38-1~deb12u1)\n+PAM\n")); v != "252" || err != nil {
		t.Errorf("Version = %q, %v", v, err)
	}
}

// directiveValueCases are passthrough values with what validation says of
// them. Every accepted one is rendered and verified by systemd-analyze;
// every refused one written raw must draw systemd's "ignoring", except
// those marked stricter (systemd takes them, validation refuses them on
// purpose).
var directiveValueCases = []struct {
	sec, key, val string
	ok            bool
	stricter      bool // refused although systemd 252 takes it
}{
	// parse_boolean, without case.
	{"Service", "PrivateTmp", "yes", true, false},
	{"Service", "PrivateTmp", "On", true, false},
	{"Service", "PrivateTmp", "T", true, false},
	{"Service", "PrivateTmp", "1", true, false},
	{"Service", "PrivateTmp", "y", true, false},
	{"Service", "PrivateTmp", "TRUE", true, false},
	{"Service", "PrivateTmp", "off", true, false},
	{"Service", "PrivateTmp", "N", true, false},
	{"Service", "PrivateTmp", "f", true, false},
	{"Service", "PrivateTmp", "0", true, false},
	{"Service", "PrivateTmp", "maybe", false, false},
	{"Service", "PrivateTmp", "", false, false},
	{"Service", "PrivateTmp", "yes please", false, false},
	{"Service", "PrivateTmp", "2", false, false},
	{"Service", "PrivateTmp", "enable", false, false},
	{"Service", "NoNewPrivileges", "yes", true, false},
	{"Service", "NoNewPrivileges", "ja", false, false},
	{"Service", "PrivateUsers", "true", true, false},
	{"Service", "PrivateUsers", "self", false, false},
	{"Service", "PrivateNetwork", "yes", true, false},
	{"Service", "PrivateDevices", "yes", true, false},
	{"Service", "DynamicUser", "yes", true, false},
	{"Service", "DynamicUser", "auto", false, false},
	{"Service", "RemoveIPC", "yes", true, false},
	{"Service", "MemoryDenyWriteExecute", "yes", true, false},
	{"Service", "MemoryDenyWriteExecute", "enabled", false, false},
	{"Service", "ProtectKernelTunables", "yes", true, false},
	{"Service", "ProtectKernelModules", "yes", true, false},
	{"Service", "ProtectKernelLogs", "yes", true, false},
	{"Service", "ProtectKernelLogs", "full", false, false},
	{"Service", "ProtectControlGroups", "yes", true, false},
	{"Service", "ProtectClock", "yes", true, false},
	{"Service", "ProtectHostname", "yes", true, false},
	{"Service", "LockPersonality", "yes", true, false},
	{"Service", "RestrictRealtime", "yes", true, false},
	{"Service", "RestrictSUIDSGID", "yes", true, false},
	{"Service", "RestrictSUIDSGID", "strict", false, false},
	{"Unit", "DefaultDependencies", "no", true, false},
	{"Unit", "DefaultDependencies", "never", false, false},
	{"Timer", "Persistent", "true", true, false},
	{"Timer", "Persistent", "sometimes", false, false},
	// ProtectSystem: a boolean, full or strict (the words with case).
	{"Service", "ProtectSystem", "strict", true, false},
	{"Service", "ProtectSystem", "full", true, false},
	{"Service", "ProtectSystem", "yes", true, false},
	{"Service", "ProtectSystem", "YES", true, false},
	{"Service", "ProtectSystem", "false", true, false},
	{"Service", "ProtectSystem", "Strict", false, false},
	{"Service", "ProtectSystem", "read-only", false, false},
	{"Service", "ProtectSystem", "", false, false},
	// ProtectHome: a boolean, read-only or tmpfs.
	{"Service", "ProtectHome", "read-only", true, false},
	{"Service", "ProtectHome", "tmpfs", true, false},
	{"Service", "ProtectHome", "on", true, false},
	{"Service", "ProtectHome", "yes please", false, false},
	{"Service", "ProtectHome", "Tmpfs", false, false},
	{"Service", "ProtectHome", "strict", false, false},
	{"Service", "ProtectHome", "", false, false},
	// ProtectProc, ProcSubset, DevicePolicy, KeyringMode: words only.
	{"Service", "ProtectProc", "noaccess", true, false},
	{"Service", "ProtectProc", "invisible", true, false},
	{"Service", "ProtectProc", "ptraceable", true, false},
	{"Service", "ProtectProc", "default", true, false},
	{"Service", "ProtectProc", "yes", false, false},
	{"Service", "ProtectProc", "Invisible", false, false},
	{"Service", "ProtectProc", "", false, false},
	{"Service", "ProcSubset", "all", true, false},
	{"Service", "ProcSubset", "pid", true, false},
	{"Service", "ProcSubset", "Pid", false, false},
	{"Service", "ProcSubset", "yes", false, false},
	{"Service", "ProcSubset", "", false, false},
	{"Service", "DevicePolicy", "auto", true, false},
	{"Service", "DevicePolicy", "closed", true, false},
	{"Service", "DevicePolicy", "strict", true, false},
	{"Service", "DevicePolicy", "yes", false, false},
	{"Service", "DevicePolicy", "open", false, false},
	{"Service", "DevicePolicy", "", false, false},
	{"Service", "KeyringMode", "inherit", true, false},
	{"Service", "KeyringMode", "private", true, false},
	{"Service", "KeyringMode", "shared", true, false},
	{"Service", "KeyringMode", "none", false, false},
	{"Service", "KeyringMode", "yes", false, false},
	{"Service", "KeyringMode", "", false, false},
	// RestrictNamespaces: a boolean, or types, optionally after '~'.
	{"Service", "RestrictNamespaces", "yes", true, false},
	{"Service", "RestrictNamespaces", "off", true, false},
	{"Service", "RestrictNamespaces", "cgroup ipc net mnt pid user uts", true, false},
	{"Service", "RestrictNamespaces", "time", true, false},
	{"Service", "RestrictNamespaces", "~net", true, false},
	{"Service", "RestrictNamespaces", "~user net", true, false},
	{"Service", "RestrictNamespaces", "~ cgroup", true, false},
	{"Service", "RestrictNamespaces", "net  ipc", true, false},
	{"Service", "RestrictNamespaces", "net,ipc", false, false},
	{"Service", "RestrictNamespaces", "NET", false, false},
	{"Service", "RestrictNamespaces", "~yes", false, false},
	{"Service", "RestrictNamespaces", "~~net", false, false},
	{"Service", "RestrictNamespaces", "network", false, false},
	{"Service", "RestrictNamespaces", `"net"`, false, false},
	{"Service", "RestrictNamespaces", "", false, true},  // a reset: restricts nothing
	{"Service", "RestrictNamespaces", "~", false, true}, // all but none: restricts nothing
	// WorkingDirectory: absolute or "~", optionally after '-' (a relative
	// one is a fatal error: the unit does not load).
	{"Service", "WorkingDirectory", "/srv/app", true, false},
	{"Service", "WorkingDirectory", "-/srv/app", true, false},
	{"Service", "WorkingDirectory", "~", true, false},
	{"Service", "WorkingDirectory", "-~", true, false},
	{"Service", "WorkingDirectory", "relative/dir", false, false},
	{"Service", "WorkingDirectory", "-relative", false, false},
	{"Service", "WorkingDirectory", "~/x", false, false},
	{"Service", "WorkingDirectory", "/srv/../x", false, false},
	{"Service", "WorkingDirectory", "/srv//x", true, false}, // systemd simplifies it
	{"Service", "WorkingDirectory", "/srv/./x", true, false},
	// Restart: systemd's words.
	{"Service", "Restart", "on-abnormal", true, false},
	{"Service", "Restart", "always", true, false},
	{"Service", "Restart", "sometimes", false, false},
	{"Service", "Restart", "Always", false, false},
	// An empty value where resil writes nothing has its own meaning.
	{"Service", "CapabilityBoundingSet", "", true, false}, // no capabilities at all
	{"Service", "AmbientCapabilities", "", true, false},
	// Values outside the grammar pass as they are.
	{"Service", "Nice", "5", true, false},
	{"Service", "SystemCallFilter", "@system-service", true, false},
}

// TestDirectiveValueGrammar runs directiveValueCases through validation
// (no systemd needed): each value alone in a manifest's passthrough.
func TestDirectiveValueGrammar(t *testing.T) {
	for _, c := range directiveValueCases {
		t.Run(fmt.Sprintf("%s/%s=%s", c.sec, c.key, c.val), func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"m.yaml": directiveManifest("x", c.sec, c.key, c.val)})
			_, err := loadInsecure(t, dir)
			if c.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !c.ok {
				if err == nil {
					t.Fatal("accepted")
				}
				if !strings.Contains(err.Error(), "systemd 252 would") && !strings.Contains(err.Error(), "restricts nothing") &&
					!(c.val == "" && strings.Contains(err.Error(), "must not be empty")) {
					t.Fatalf("refused for another reason: %v", err)
				}
			}
		})
	}
}

// directiveManifest is one object whose passthrough sets sec.key=val: a
// Timer (with an inline command) for [Timer], else a Service.
func directiveManifest(name, sec, key, val string) string {
	hatch := fmt.Sprintf("  systemd: {%s: {%s: %s}}\n", sec, key, strconv.Quote(val))
	if sec == "Timer" {
		return fmt.Sprintf("apiVersion: resil.dev/v1\nkind: Timer\nmetadata: {name: %s}\nspec:\n  command: [/bin/true]\n  schedule: [daily]\n%s", name, hatch)
	}
	return fmt.Sprintf("apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: %s}\nspec:\n  command: [/bin/true]\n%s", name, hatch)
}

// verifyLineRE splits a systemd-analyze verify warning into file, line and
// message.
var verifyLineRE = regexp.MustCompile(`^(/\S+?):([0-9]+): (.*)$`)

// verifyUnitRE finds the unit a remark without a line is about
// ("x.service: Unit configuration has fatal error…", "Unit x.service has a
// bad unit file setting.").
var verifyUnitRE = regexp.MustCompile(`^(?:Unit )?(\S+)(\.service|\.timer)\b`)

// unitSaid is what systemd-analyze verify said of one unit file: by line,
// and the remarks that name no line.
type unitSaid struct {
	lines map[int][]string
	other []string
}

// systemdVerify writes files (name → content) into a fresh directory, runs
// systemd-analyze verify on all of them in one call, and returns what it
// said by file name; what names no file given is under "".
func systemdVerify(t *testing.T, sa string, files map[string]string) map[string]*unitSaid {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	args := []string{"verify", "--man=no", "--generators=no"}
	out := map[string]*unitSaid{}
	for _, n := range sortedKeys(files) {
		args = append(args, filepath.Join(dir, n))
		out[n] = &unitSaid{lines: map[int][]string{}}
	}
	cmd := exec.Command(sa, args...)
	cmd.Dir = dir
	raw, _ := cmd.CombinedOutput() // the exit status ignores warnings; the output is what counts
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if l == "" {
			continue
		}
		m := verifyLineRE.FindStringSubmatch(l)
		if m == nil || out[filepath.Base(m[1])] == nil {
			name := "" // a remark on a unit, or on none (e.g. "OnFailureIsolate is deprecated")
			if u := verifyUnitRE.FindStringSubmatch(l); u != nil {
				name = filepath.Base(u[1] + u[2])
			}
			if out[name] == nil {
				out[name] = &unitSaid{lines: map[int][]string{}}
			}
			out[name].other = append(out[name].other, l)
			continue
		}
		u := out[filepath.Base(m[1])]
		n, _ := strconv.Atoi(m[2])
		u.lines[n] = append(u.lines[n], m[3])
	}
	return out
}

// refusedBySystemd reports whether systemd-analyze verify's messages on a
// line say systemd drops it: a warning that says "ignoring" (or "is
// ignored", for a removed option), or a parse
// failure of a setting systemd does not load the unit without (e.g.
// DynamicUser=: "Failed to parse boolean value: maybe").
func refusedBySystemd(msgs []string) bool {
	for _, m := range msgs {
		// "path is not absolute" (WorkingDirectory=) is worse than
		// ignored: a fatal error, the unit does not load.
		if strings.Contains(m, "ignoring") || strings.Contains(m, "is ignored") || strings.HasPrefix(m, "Failed to parse") ||
			strings.Contains(m, "path is not absolute") || strings.Contains(m, "is not normalized") {
			return true
		}
	}
	return false
}

// rawUnit is a unit file that sets sec.key=val on line 3 (a service, or a
// timer for [Timer]), and its file name ending.
func rawUnit(sec, key, val string) (string, string) {
	line := key + "=" + val
	switch sec {
	case "Timer":
		return "[Timer]\nOnCalendar=daily\n" + line + "\n", ".timer"
	case "Unit":
		return "[Unit]\nDescription=x\n" + line + "\n[Service]\nExecStart=/bin/true\n", ".service"
	case "Install":
		return "[Service]\nExecStart=/bin/true\n[Install]\n" + line + "\n", ".service"
	}
	return "[Service]\nExecStart=/bin/true\n" + line + "\n", ".service"
}

// rawLine is the line rawUnit sets its directive on (the [Install] case has
// its directive on line 4).
func rawLine(sec string) int {
	if sec == "Install" {
		return 4
	}
	return 3
}

// TestDirectiveValuesAgainstSystemd checks the grammar of directives.go
// against systemd itself. Every accepted value of directiveValueCases goes
// through Load and Render, and systemd-analyze verify must say nothing of
// the rendered units. Every refused value, written raw into a unit of its
// own, must be dropped by systemd ("ignoring", or a unit that does not
// load), or draw nothing when marked stricter.
func TestDirectiveValuesAgainstSystemd(t *testing.T) {
	sa := requireSystemdTool(t, "systemd-analyze")

	// Accepted values: the real path, manifest → Load → Render.
	mdir := t.TempDir()
	files := map[string]string{}
	for i, c := range directiveValueCases {
		if c.ok {
			files[fmt.Sprintf("m%d.yaml", i)] = directiveManifest(fmt.Sprintf("v%d", i), c.sec, c.key, c.val)
		}
	}
	writeFiles(t, mdir, files)
	set, byObj := renderAll(t, mdir)
	units := map[string]string{}
	unitCase := map[string]int{}
	for id, fs := range byObj {
		var i int
		if _, err := fmt.Sscanf(set.Objects[id].Metadata.Name, "v%d", &i); err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if f.Dir == DirUnit {
				units[f.Name] = string(f.Data)
				unitCase[f.Name] = i
			}
		}
	}
	for name, u := range systemdVerify(t, sa, units) {
		if name == "" {
			t.Errorf("systemd-analyze verify: %q", u.other)
			continue
		}
		c := directiveValueCases[unitCase[name]]
		for n, msgs := range u.lines {
			t.Errorf("accepted %s=%q in [%s], but systemd-analyze verify says of %s line %d: %q", c.key, c.val, c.sec, name, n, msgs)
		}
		if len(u.other) > 0 {
			t.Errorf("accepted %s=%q in [%s], but systemd-analyze verify says of %s: %q", c.key, c.val, c.sec, name, u.other)
		}
	}

	// Refused values, raw, one unit each.
	units = map[string]string{}
	for i, c := range directiveValueCases {
		if !c.ok {
			data, ext := rawUnit(c.sec, c.key, c.val)
			units[fmt.Sprintf("r%d%s", i, ext)] = data
		}
	}
	said := systemdVerify(t, sa, units)
	for i, c := range directiveValueCases {
		if c.ok {
			continue
		}
		_, ext := rawUnit(c.sec, c.key, c.val)
		msgs := said[fmt.Sprintf("r%d%s", i, ext)].lines[rawLine(c.sec)]
		switch {
		case c.stricter && len(msgs) > 0:
			t.Errorf("%s=%q in [%s] is marked stricter than systemd, but systemd-analyze verify says: %q", c.key, c.val, c.sec, msgs)
		case !c.stricter && !refusedBySystemd(msgs):
			t.Errorf("refused %s=%q in [%s], but systemd-analyze verify does not drop it (said %q)", c.key, c.val, c.sec, msgs)
		}
	}
}

// TestBooleanDirectivesAgainstSystemd: every directive the table calls
// BOOLEAN takes "yes" and "OFF" without a word from systemd-analyze verify
// on its line, and drops "maybe", so validation's boolean check holds for
// all of them. One unit per directive and value: a failure to parse some
// (DynamicUser=) stops systemd from reading the rest of the file.
func TestBooleanDirectivesAgainstSystemd(t *testing.T) {
	sa := requireSystemdTool(t, "systemd-analyze")
	type probe struct{ sec, key, val string }
	units := map[string]string{}
	probes := map[string]probe{}
	for _, sec := range []string{"Unit", "Service", "Timer"} {
		for _, k := range sortedKeys(systemdDirectives[sec]) {
			if systemdDirectives[sec][k] != "BOOLEAN" {
				continue
			}
			for _, val := range []string{"yes", "OFF", "maybe"} {
				data, ext := rawUnit(sec, k, val)
				name := fmt.Sprintf("b%d%s", len(units), ext)
				units[name] = data
				probes[name] = probe{sec, k, val}
			}
		}
	}
	if len(probes) < 3*50 {
		t.Fatalf("only %d BOOLEAN directives in the table", len(probes)/3)
	}
	for name, u := range systemdVerify(t, sa, units) {
		p := probes[name]
		msgs := u.lines[rawLine(p.sec)]
		if p.val == "maybe" && !refusedBySystemd(msgs) {
			t.Errorf("[%s] %s=maybe: systemd-analyze verify does not drop it (said %q): not a plain boolean", p.sec, p.key, msgs)
		}
		if p.val != "maybe" && len(msgs) > 0 {
			t.Errorf("[%s] %s=%s: systemd-analyze verify says %q", p.sec, p.key, p.val, msgs)
		}
	}
}

// TestDirectiveTableAgainstSystemd: systemd-analyze verify knows every key
// of the table in its section (no "Unknown key"), and reports the keys
// validation calls unknown, so the table agrees with the verifier too.
func TestDirectiveTableAgainstSystemd(t *testing.T) {
	sa := requireSystemdTool(t, "systemd-analyze")
	type probe struct {
		sec, key string
		known    bool
	}
	units := map[string]string{}
	probes := map[string]probe{}
	add := func(sec, key string) {
		data, ext := rawUnit(sec, key, "")
		name := fmt.Sprintf("k%d%s", len(units), ext)
		units[name] = data
		_, known := systemdDirectives[sec][key]
		probes[name] = probe{sec, key, known}
	}
	for _, sec := range directivegen.Sections {
		for _, k := range sortedKeys(systemdDirectives[sec]) {
			add(sec, k)
		}
	}
	for _, p := range [][2]string{{"Service", "ProtectSytem"}, {"Timer", "NoNewPrivileges"}, {"Unit", "ProtectSystem"}, {"Install", "After"}, {"Service", "SysVStartPriority"}} {
		add(p[0], p[1])
	}
	for name, u := range systemdVerify(t, sa, units) {
		p := probes[name]
		unknown := strings.Contains(strings.Join(u.lines[rawLine(p.sec)], "\n"), "Unknown key")
		if p.known && unknown {
			t.Errorf("[%s] %s is in the table, but systemd-analyze verify says %q", p.sec, p.key, u.lines[rawLine(p.sec)])
		}
		if !p.known && !refusedBySystemd(u.lines[rawLine(p.sec)]) {
			t.Errorf("[%s] %s is not in the table, but systemd-analyze verify takes it (said %q)", p.sec, p.key, u.lines[rawLine(p.sec)])
		}
	}
}

// TestUnknownDirectiveMessages covers the hints of unknownDirective.
func TestUnknownDirectiveMessages(t *testing.T) {
	for _, c := range []struct {
		sec, key string
		allowed  map[string]bool
		want     string
	}{
		{"Service", "ProtectSystem", serviceSections, ""},
		{"Service", "ProtectSytem", serviceSections, `unknown directive "ProtectSytem" in [Service] (systemd 252 would ignore it); did you mean "ProtectSystem"?`},
		{"Service", "Frobnicate", serviceSections, `unknown directive "Frobnicate" in [Service] (systemd 252 would ignore it)`},
		{"Unit", "NoNewPrivileges", serviceSections, "NoNewPrivileges belongs in [Service], not [Unit] (systemd 252 would ignore it)"},
		{"Service", "Persistent", timerSections, "Persistent belongs in [Timer], not [Service] (systemd 252 would ignore it)"},
		{"Unit", "PrivateTmp", timerRefSections, "PrivateTmp belongs in [Service], not [Unit] (systemd 252 would ignore it); set it on the Service this Timer starts"},
		{"Install", "After", serviceSections, "After belongs in [Unit], not [Install] (systemd 252 would ignore it)"},
	} {
		if got := unknownDirective(c.sec, c.key, c.allowed); got != c.want {
			t.Errorf("unknownDirective(%s, %s) = %q, want %q", c.sec, c.key, got, c.want)
		}
	}
}

// A directive newer than the table (systemd 252's) is accepted where this
// host's systemd knows it, with its type's value check; one neither knows
// is refused.
func TestHostSystemdNewerDirectives(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "systemd")
	dump := "[Unit]\nDescription=STRING\n[Service]\nMemoryKSM=BOOLEAN\nExecStart=PATH [ARGUMENT [...]]\n[Timer]\nOnCalendar=OTHER\n[Install]\nWantedBy=UNIT [...]\n"
	if err := os.WriteFile(bin, []byte("#!/bin/sh\ncat <<'EOF'\n"+dump+"EOF\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	oldBin, oldOnce, oldMap := hostSystemd, hostDirectivesOnce, hostDirectivesMap
	hostSystemd, hostDirectivesOnce, hostDirectivesMap = []string{bin}, new(sync.Once), nil
	t.Cleanup(func() { hostSystemd, hostDirectivesOnce, hostDirectivesMap = oldBin, oldOnce, oldMap })
	for _, tt := range []struct{ key, val, want string }{
		{"MemoryKSM", "yes", ""},
		{"MemoryKSM", "maybe", "takes a boolean"},
		{"MemoryKSMX", "yes", `unknown directive "MemoryKSMX" in [Service]`},
	} {
		got := unknownDirective("Service", tt.key, map[string]bool{"Unit": true, "Service": true, "Install": true})
		if got == "" {
			got = directiveValue("Service", tt.key, tt.val)
		}
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s=%s: %q, want %q", tt.key, tt.val, got, tt.want)
		}
	}
}
