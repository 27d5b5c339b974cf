package desired

//go:generate go run gen_directives.go

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"resil.dev/resil/desired/internal/directivegen"
)

// The systemd: passthrough writes its directives verbatim, and systemd
// ignores, with only a warning in the journal, a key it does not know in
// that section and a value it cannot parse: the unit would run with less
// isolation than the manifest asks for. So a directive must be one systemd
// knows in that section (systemdDirectives, generated from systemd's own
// --dump-configuration-items), and the values below must parse as systemd
// parses them. TestDirectiveValuesAgainstSystemd checks this grammar
// against systemd-analyze verify.

// systemdBooleans are the words systemd's parse_boolean takes, compared
// without case.
var systemdBooleans = []string{"1", "yes", "y", "true", "t", "on", "0", "no", "n", "false", "f", "off"}

// isSystemdBoolean reports whether systemd's parse_boolean accepts s.
func isSystemdBoolean(s string) bool {
	return slices.ContainsFunc(systemdBooleans, func(b string) bool { return strings.EqualFold(b, s) })
}

// enumValues are the directives (of type OTHER or POLICY in the table) whose
// value is one of a few words, compared with case as systemd's string
// tables do; withBoolean says a systemd boolean is taken too.
var enumValues = map[string]struct {
	withBoolean bool
	words       []string
}{
	"ProtectSystem": {true, []string{"full", "strict"}},
	"ProtectHome":   {true, []string{"read-only", "tmpfs"}},
	"ProtectProc":   {false, []string{"noaccess", "invisible", "ptraceable", "default"}},
	"ProcSubset":    {false, []string{"all", "pid"}},
	"DevicePolicy":  {false, []string{"auto", "closed", "strict"}},
	"KeyringMode":   {false, []string{"inherit", "private", "shared"}},
	"Restart":       {false, []string{"no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always"}},
}

// namespaceTypes are the words of RestrictNamespaces= in systemd 252.
var namespaceTypes = []string{"cgroup", "ipc", "net", "mnt", "pid", "user", "uts", "time"}

// directiveSections returns the sections of systemdDirectives, among
// sections, that know directive k, in order.
func directiveSections(k string, sections map[string]bool) []string {
	var out []string
	for _, s := range sortedKeys(systemdDirectives) {
		if _, ok := systemdDirectives[s][k]; ok && sections[s] {
			out = append(out, s)
		}
	}
	return out
}

// unknownDirective returns why directive k in section sec would be ignored
// by systemd, or "" when systemd knows it there. allowed are the sections
// this object's passthrough may write.
func unknownDirective(sec, k string, allowed map[string]bool) string {
	if _, ok := systemdDirectives[sec][k]; ok {
		return ""
	}
	if _, ok := hostDirectives()[sec][k]; ok {
		return "" // newer than the table: this host's systemd knows it
	}
	if in := directiveSections(k, allowed); len(in) > 0 {
		return fmt.Sprintf("%s belongs in [%s], not [%s] (systemd %s would ignore it)", k, strings.Join(in, "] or ["), sec, directivesVersion)
	}
	all := map[string]bool{}
	for s := range systemdDirectives {
		all[s] = true
	}
	if in := directiveSections(k, all); len(in) > 0 {
		// Only a Timer that starts a Service object lacks a section
		// (its [Service] is the Service's).
		return fmt.Sprintf("%s belongs in [%s], not [%s] (systemd %s would ignore it); set it on the Service this Timer starts", k, strings.Join(in, "] or ["), sec, directivesVersion)
	}
	msg := fmt.Sprintf("unknown directive %q in [%s] (systemd %s would ignore it)", k, sec, directivesVersion)
	if near := nearestDirective(sec, k); near != "" {
		msg += fmt.Sprintf("; did you mean %q?", near)
	}
	return msg
}

// nearestDirective returns the directive of sec closest to k, within an
// edit distance of 2, for a hint; "" when none is that close.
func nearestDirective(sec, k string) string {
	best, bestD := "", 3
	for _, d := range sortedKeys(systemdDirectives[sec]) {
		if n := editDistance(strings.ToLower(k), strings.ToLower(d)); n < bestD {
			best, bestD = d, n
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// directiveValue returns why systemd would not parse val for directive k of
// section sec (and ignore the line), or "" when it would, as far as the
// grammar here goes: every BOOLEAN directive, the enumerated sandboxing
// directives of enumValues and RestrictNamespaces=. Other values are
// passed as they are.
func directiveValue(sec, k, val string) string {
	typ, ok := systemdDirectives[sec][k]
	if !ok {
		typ = hostDirectives()[sec][k]
	}
	if typ == "BOOLEAN" {
		if !isSystemdBoolean(val) {
			return fmt.Sprintf("%s= takes a boolean (%s), got %q", k, strings.Join(systemdBooleans, ", "), val)
		}
		return ""
	}
	if sec != "Service" {
		return ""
	}
	if e, ok := enumValues[k]; ok {
		if slices.Contains(e.words, val) || (e.withBoolean && isSystemdBoolean(val)) {
			return ""
		}
		words := e.words
		if e.withBoolean {
			words = append([]string{"a boolean"}, words...)
		}
		want := strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
		return fmt.Sprintf("%s= takes %s, got %q", k, want, val)
	}
	if k == "RestrictNamespaces" {
		return restrictNamespaces(val)
	}
	if k == "WorkingDirectory" {
		return workingDirectory(val)
	}
	return ""
}

// workingDirectory checks a WorkingDirectory= value: "~" (the user's home)
// or an absolute path, either after an optional '-' (missing is fine).
// systemd refuses a relative one as a fatal error: the unit does not load.
func workingDirectory(val string) string {
	v := strings.TrimPrefix(val, "-")
	switch {
	case v == "~":
		return ""
	case !strings.HasPrefix(v, "/"):
		return fmt.Sprintf("WorkingDirectory= takes an absolute path or \"~\" (optionally after '-'), got %q", val)
	case strings.HasSuffix(v, "/..") || strings.Contains(v, "/../"):
		// systemd simplifies "//" and "/./", and refuses "..": also fatal.
		return fmt.Sprintf("WorkingDirectory= %q is not a normalized path (no \"..\")", val)
	}
	return ""
}

// restrictNamespaces checks a RestrictNamespaces= value: a boolean, or a
// list of namespace types separated by spaces, optionally after '~' (all but
// these). An empty value and a lone '~' restrict nothing; systemd takes
// them (as a reset) but a manifest that means it leaves the directive out.
func restrictNamespaces(val string) string {
	if isSystemdBoolean(val) {
		return ""
	}
	list := strings.TrimPrefix(val, "~")
	words := strings.FieldsFunc(list, func(r rune) bool { return r == ' ' || r == '\t' })
	if len(words) == 0 {
		return fmt.Sprintf("RestrictNamespaces= %q restricts nothing (leave the directive out); want a boolean or namespace types (%s), optionally after '~'", val, strings.Join(namespaceTypes, " "))
	}
	for _, w := range words {
		if !slices.Contains(namespaceTypes, w) {
			return fmt.Sprintf("RestrictNamespaces= takes a boolean or namespace types separated by spaces (%s), optionally after '~'; %q is not one", strings.Join(namespaceTypes, " "), w)
		}
	}
	return ""
}

// hostSystemd is this host's systemd binary, asked for the directives it
// knows (--dump-configuration-items) when a key is not in the generated
// table: a host with a newer systemd knows directives systemd 252 does not
// (ImportCredential=, MemoryKSM=), and refusing them there would hold
// every such manifest at its last good version. A host without the binary
// (no systemd: the process backend, which refuses what it cannot apply)
// has only the table. Tests replace it.
var hostSystemd = []string{"/lib/systemd/systemd", "/usr/lib/systemd/systemd"}

var (
	hostDirectivesOnce = new(sync.Once)
	hostDirectivesMap  map[string]map[string]string
)

// hostDirectives returns the directives this host's systemd knows, per
// section (nil when it cannot tell), read once per process.
func hostDirectives() map[string]map[string]string {
	hostDirectivesOnce.Do(func() {
		for _, bin := range hostSystemd {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			out, err := exec.CommandContext(ctx, bin, "--dump-configuration-items").Output()
			cancel()
			if err != nil {
				continue
			}
			if m, err := directivegen.Parse(out, directivegen.Sections); err == nil {
				hostDirectivesMap = m
				return
			}
		}
	})
	return hostDirectivesMap
}
