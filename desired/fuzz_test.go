package desired

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"resil.dev/resil/internal/ownmark"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/unit"
)

// Fuzzing: go test ./desired/ -run '^$' -fuzz '^FuzzLoad$' -fuzztime 60s
// (and FuzzRender). Seeds are in testdata/fuzz/<Fuzz target>/ and below.

// systemdLineMax is LONG_LINE_MAX, the longest line systemd 252 reads from a
// unit file (1 MiB). go-systemd's parser stops at 2048 bytes, so longer
// lines are checked with the test-side splitter only.
const systemdLineMax = 1 << 20

// FuzzLoad writes the input as a manifest (and a drop-in for an object named
// x) and loads it: Load must not panic, must be deterministic, must keep its
// error contract, and whatever it accepts must render into units that parse
// back to exactly what the manifest says.
func FuzzLoad(f *testing.F) {
	for _, glob := range []string{"testdata/render/*.yaml", "testdata/invalid/*.yaml", "testdata/invalid/*/*.yaml", "../manifests/*.yaml", "../manifests/examples/*/*.yaml"} {
		files, _ := filepath.Glob(glob)
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err == nil {
				f.Add(data, []byte(nil))
			}
		}
	}
	base := []byte("apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: x}\nspec: {command: [/bin/echo, \"a b\"]}\n")
	f.Add(base, []byte("spec: {environment: {A: \"1 %\"}, restart: {policy: always}}\n"))
	f.Add(base, []byte("metadata: {name: y}\n"))
	f.Add(base, []byte("metadata: {name: \"\"}\n"))
	f.Add(base, []byte("kind: \"\"\nmetadata: []\n"))
	f.Add(base, []byte("spec: {environment: {\"A\\nB\": \"\\u2028\"}, command: [/bin/echo, \"\\x85\"]}\n"))
	f.Add(base, []byte("spec: null\n"))
	f.Add(base, []byte("spec: {command: null}\n"))
	f.Add([]byte("apiVersion: resil.dev/v1\nkind: Timer\nmetadata: {name: x}\nspec: {schedule: [daily], command: [/bin/true]}\n"),
		[]byte("spec: {systemd: {Timer: {Persistent: \"true\"}}}\n"))
	f.Fuzz(func(t *testing.T, manifest, dropIn []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "m.yaml"), manifest, 0o644); err != nil {
			t.Fatal(err)
		}
		if len(dropIn) > 0 {
			if err := os.Mkdir(filepath.Join(dir, "x.d"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "x.d", "10.yaml"), dropIn, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		set, err := Load(dir, Options{Host: testHost, Insecure: true})
		if set == nil || errors.Is(err, ErrUnreadable) {
			t.Fatalf("Load = %v, %v; a readable directory must give a set", set, err)
		}
		checkLoadContract(t, set, err, dir)
		set2, err2 := Load(dir, Options{Host: testHost, Insecure: true})
		if a, b := errorLines(t, err, dir), errorLines(t, err2, dir); a != b {
			t.Fatalf("Load is not deterministic:\n%s\n---\n%s", a, b)
		}
		if !slices.Equal(sortedKeys(set.Objects), sortedKeys(set2.Objects)) {
			t.Fatalf("Load is not deterministic: %v vs %v", sortedKeys(set.Objects), sortedKeys(set2.Objects))
		}
		for _, m := range []map[string]*Object{set.Objects, set.NotSelected} {
			for _, id := range sortedKeys(m) {
				checkRenders(t, m[id])
			}
		}
	})
}

// checkLoadContract: errors are *FieldErrors naming files in dir, Broken
// and the errors agree, objects are valid and consistent.
func checkLoadContract(t *testing.T, set *Set, err error, dir string) {
	t.Helper()
	fes := FieldErrors(err)
	if err != nil && len(fes) == 0 {
		t.Fatalf("error without *FieldError: %v", err)
	}
	for _, fe := range fes {
		if !strings.HasPrefix(fe.File, set.Dir+string(filepath.Separator)) {
			t.Fatalf("error names a file outside the directory: %v", fe)
		}
		if !utf8.ValidString(fe.Error()) {
			t.Fatalf("error is not valid UTF-8: %q", fe.Error())
		}
		if strings.ContainsFunc(fe.Error(), needsEscape) {
			t.Fatalf("error line holds a raw control character: %q", fe.Error())
		}
	}
	checkBrokenConsistent(t, set, err, set.Dir)
	for id, o := range set.Objects {
		if detail := checkName(o.Metadata.Name); detail != "" {
			t.Fatalf("object %s has a bad name: %s", id, detail)
		}
		if id != o.ID() || o.Source.File == "" {
			t.Fatalf("object %s: ID %s, source %+v", id, o.ID(), o.Source)
		}
		if _, notSel := set.NotSelected[id]; notSel {
			t.Fatalf("%s is both selected and not", id)
		}
		if (o.Service != nil) != (o.Kind == KindService) || (o.Timer != nil) != (o.Kind == KindTimer) || (o.Watchdog != nil) != (o.Kind == KindWatchdog) {
			t.Fatalf("%s: spec does not match kind", id)
		}
	}
}

// knownDirectives are the directives Render generates, by section: the
// ones validate.go's renderedDirectives lists (an empty passthrough value
// of one is refused), the ownership markers, and the manager drop-in's.
// One list: a directive Render learns to write and renderedDirectives
// lacks fails checkRenders.
var knownDirectives = func() map[string][]string {
	m := map[string][]string{
		"Unit":    {KeyObject, KeySource, KeyHash, ownmark.KeyTakeOver},
		"Manager": {"RuntimeWatchdogSec", "RebootWatchdogSec", "WatchdogDevice"},
	}
	for sec, keys := range renderedDirectives {
		m[sec] = append(m[sec], sortedKeys(keys)...)
	}
	return m
}()

// checkRenders renders an accepted object and proves every file says exactly
// what the manifest says: no section or directive that the manifest did not
// ask for, every command line splitting back into the manifest's argv.
func checkRenders(t *testing.T, o *Object) {
	t.Helper()
	files, err := Render(o)
	if err != nil {
		t.Fatalf("Render(%s): %v", o, err)
	}
	for _, f := range files {
		if f.Name != o.Metadata.Name+".service" && f.Name != o.Metadata.Name+".timer" && f.Name != WatchdogFile {
			t.Fatalf("Render(%s) writes %q", o, f.Name)
		}
	}
	again, _ := Render(o)
	for i, f := range files {
		if !bytes.Equal(f.Data, again[i].Data) {
			t.Fatalf("Render(%s) is not deterministic", o)
		}
		longest := 0
		for _, line := range bytes.Split(f.Data, []byte("\n")) {
			longest = max(longest, len(line))
		}
		if longest > MaxUnitLine {
			t.Fatalf("%s: %s has a %d-byte line; validation caps lines at %d (systemd reads at most %d)", o, f.Name, longest, MaxUnitLine, systemdLineMax)
		}
		if longest >= unit.SYSTEMD_LINE_MAX {
			checkLongLines(t, o, f)
			continue
		}
		opts, err := unit.DeserializeOptions(bytes.NewReader(f.Data))
		if err != nil {
			t.Fatalf("%s: %s does not parse: %v\n%s", o, f.Name, err, f.Data)
		}
		escape := escapeHatchOf(o)
		for _, op := range opts {
			if !slices.Contains(knownDirectives[op.Section], op.Name) {
				if _, ok := escape[op.Section][op.Name]; !ok {
					t.Fatalf("%s: %s: injected [%s] %s=%s\n%s", o, f.Name, op.Section, op.Name, op.Value, f.Data)
				}
			}
		}
		if err := roundTrip(o, f); err != nil {
			t.Fatalf("%s: %s: %v\n%s", o, f.Name, err, f.Data)
		}
	}
}

// checkLongLines covers files go-systemd cannot parse (a line of 2048 bytes
// or more): the lines are split by hand, sections and keys must still be the
// expected ones, and the command lines must split back.
func checkLongLines(t *testing.T, o *Object, f UnitFile) {
	t.Helper()
	want, err := expectFile(o, f.Name)
	if err != nil {
		t.Fatal(err)
	}
	var got []semOption
	section := ""
	for _, line := range strings.Split(string(f.Data), "\n") {
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '[':
			section = strings.TrimSuffix(strings.TrimPrefix(line, "["), "]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %s: line without '=': %q", o, f.Name, line)
			}
			if strings.HasSuffix(v, `\`) {
				t.Fatalf("%s: %s: line continues: %q", o, f.Name, line)
			}
			op := &unit.UnitOption{Section: section, Name: k, Value: strings.TrimSpace(v)}
			kind := raw
			if i := len(got); i < len(want) && want[i].section == section && want[i].name == k {
				kind = want[i].kind
			}
			s, err := interpret(op, kind)
			if err != nil {
				t.Fatalf("%s: %s: %v", o, f.Name, err)
			}
			if s.name == KeyHash {
				s.value = ""
			}
			got = append(got, s)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: %s: options differ:\n%s", o, f.Name, lineDiff(joinSem(want), joinSem(got)))
	}
}

func escapeHatchOf(o *Object) map[string]map[string]string {
	switch {
	case o.Service != nil:
		return o.Service.Systemd
	case o.Timer != nil:
		return o.Timer.Systemd
	}
	return nil
}

// yamlQuote writes s as a YAML double-quoted scalar using escapes for
// everything but printable ASCII, so any string survives the trip. Invalid
// UTF-8 bytes become U+FFFD, as they would in any text editor.
func yamlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// validText is the validator's rule for free text: valid UTF-8, no C0 or
// C1 control characters, no Unicode line or paragraph separator.
func validText(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == '\u2028' || r == '\u2029' {
			return false
		}
	}
	return true
}

// FuzzRender puts arbitrary strings into the fields of a Service that reach
// a unit file (arguments, an environment value, the description, the program
// path and other paths, escape-hatch values), one field per object so that one refused value does
// not hide the others. Every object Load accepts must render to units with
// exactly the intended sections and directives, and command lines and
// environment assignments must come back unchanged. Arguments and
// environment values must be accepted unless they hold control characters
// or exceed the kernel's and systemd's length limits.
func FuzzRender(f *testing.F) {
	seeds := [][5]string{
		{"plain", "two words", "value", "A description", "/srv/app"},
		{`"`, `'`, `"; rm -rf /`, "It's", "/opt/a\"b"},
		{`\`, `trailing\`, `C:\dir\`, `back\slash`, `/opt/a\b`},
		{"$HOME", "${PATH}", "$$", "cost $5", "/opt/$x"},
		{"%n", "100%", "%%", "50% off", "/var/%i"},
		{"", " ", "", " padded ", "/"},
		{";", `\;`, "a;b", "; comment", "/opt/;"},
		{"line\nbreak", "x\r\ny", "a\x00b", "desc\n[Service]\nExecStart=/bin/evil", "/tmp/x\n[Install]"},
		{"[Service]", "#", "ExecStart=/bin/sh", "[Unit]", "/run/#lock"},
		{"é ✓", "\u00a0", "\u2028", "\u0085", "/opt/\u00a0"},
		{"\xff\xfe", "a\xc3", "\x7f", "\t", "/opt/\xff"},
		{"'single'", "\"double\"", "`tick`", "\\\"", "/opt/'q'"},
		{strings.Repeat("x", 3000), strings.Repeat(`\"`, 1200), strings.Repeat("%$", 800), strings.Repeat("d", 2100), "/" + strings.Repeat("p", 2100)},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	f.Fuzz(func(t *testing.T, arg1, arg2, envValue, desc, pathValue string) {
		docs := []string{
			fmt.Sprintf("kind: Service\nmetadata: {name: args}\nspec:\n  command: [/bin/echo, %s, %s]\n", yamlQuote(arg1), yamlQuote(arg2)),
			fmt.Sprintf("kind: Service\nmetadata: {name: env}\nspec:\n  command: [/bin/true]\n  environment: {V: %s}\n", yamlQuote(envValue)),
			fmt.Sprintf("kind: Service\nmetadata: {name: desc}\nspec:\n  command: [/bin/true]\n  description: %s\n", yamlQuote(desc)),
			fmt.Sprintf("kind: Service\nmetadata: {name: paths}\nspec:\n  command: [/bin/true]\n  workingDirectory: %[1]s\n  lock: %[1]s\n  logs: {stdout: %[1]s, stderr: %[1]s}\n  environmentFiles: [%[1]s]\n", yamlQuote(pathValue)),
			fmt.Sprintf("kind: Service\nmetadata: {name: program}\nspec:\n  command: [%s, %s]\n", yamlQuote(pathValue), yamlQuote(arg1)),
			fmt.Sprintf("kind: Service\nmetadata: {name: escape}\nspec:\n  command: [/bin/true]\n  systemd:\n    Unit: {Documentation: %s}\n    Service: {SyslogIdentifier: %s, LogExtraFields: %s}\n",
				yamlQuote(arg1), yamlQuote(desc), yamlQuote(envValue)),
			fmt.Sprintf("kind: Timer\nmetadata: {name: job}\nspec:\n  schedule: [daily]\n  description: %s\n  command: [/bin/echo, %s]\n  environment: {V: %s}\n  lock: %s\n",
				yamlQuote(desc), yamlQuote(arg2), yamlQuote(envValue), yamlQuote(pathValue)),
		}
		manifest := "apiVersion: resil.dev/v1\n" + strings.Join(docs, "---\napiVersion: resil.dev/v1\n")
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		set, err := Load(dir, Options{Host: testHost, Insecure: true})
		if set == nil {
			t.Fatalf("Load: %v", err)
		}
		norm := func(s string) string { return string([]rune(s)) }
		if o := set.Objects["Service/args"]; o != nil {
			if want := []string{"/bin/echo", norm(arg1), norm(arg2)}; !slices.Equal(o.Service.Command, want) {
				t.Fatalf("command decoded as %q, want %q", o.Service.Command, want)
			}
		} else if len(manifest) < int(DefaultMaxFileBytes) && validText(arg1) && validText(arg2) &&
			len(arg1) < MaxArgStrlen && len(arg2) < MaxArgStrlen && len("ExecStart="+CommandLine([]string{"/bin/echo", arg1, arg2})) <= MaxUnitLine {
			t.Fatalf("arguments %q %q refused:\n%s", arg1, arg2, errorLines(t, err, dir))
		}
		if o := set.Objects["Service/env"]; o != nil {
			if o.Service.Environment["V"] != norm(envValue) {
				t.Fatalf("environment decoded as %q, want %q", o.Service.Environment["V"], envValue)
			}
		} else if len(manifest) < int(DefaultMaxFileBytes) && validText(envValue) && len("V="+envValue) < MaxArgStrlen {
			t.Fatalf("environment value %q refused:\n%s", envValue, errorLines(t, err, dir))
		}
		for _, id := range sortedKeys(set.Objects) {
			checkRenders(t, set.Objects[id])
		}
	})
}
