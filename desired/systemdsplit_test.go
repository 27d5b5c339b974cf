package desired

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// This file is a test-side model of how systemd 252 reads the values resil
// renders, written from systemd's sources (src/basic/extract-word.c
// extract_first_word, src/basic/escape.c cunescape_one,
// src/core/load-fragment.c config_parse_exec / config_parse_environ,
// src/basic/env-util.c replace_env_argv) and systemd.service(5) "Command
// lines". It is deliberately independent of render.go: the round-trip tests
// split what Render wrote and compare it with the manifest.

const sdWhitespace = " \t\n\r"

// extractWord is extract_first_word(p, EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE)
// with whitespace separators. It returns the word, the rest of the input,
// whether a word was found, and an error where systemd returns -EINVAL.
func extractWord(p string) (word, rest string, ok bool, err error) {
	p = strings.TrimLeft(p, sdWhitespace)
	if p == "" {
		return "", "", false, nil
	}
	var b strings.Builder
	var quote byte
	for i := 0; i < len(p); {
		c := p[i]
		switch {
		case c == '\\':
			if i+1 >= len(p) {
				return "", "", false, errors.New("trailing backslash")
			}
			s, n, err := cunescapeOne(p[i+1:])
			if err != nil {
				return "", "", false, err
			}
			b.WriteString(s)
			i += 1 + n
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				b.WriteByte(c)
			}
			i++
		case c == '\'' || c == '"':
			quote = c
			i++
		case strings.IndexByte(sdWhitespace, c) >= 0:
			return b.String(), strings.TrimLeft(p[i:], sdWhitespace), true, nil
		default:
			b.WriteByte(c)
			i++
		}
	}
	if quote != 0 {
		return "", "", false, fmt.Errorf("unbalanced %c quote", quote)
	}
	return b.String(), "", true, nil
}

// cunescapeOne decodes one C escape (the text after the backslash) as
// cunescape_one does without accept_nul; n is how many bytes it used.
func cunescapeOne(p string) (s string, n int, err error) {
	simple := map[byte]string{'a': "\a", 'b': "\b", 'f': "\f", 'n': "\n", 'r': "\r", 't': "\t", 'v': "\v",
		'\\': "\\", '"': "\"", '\'': "'", 's': " "}
	if p == "" {
		return "", 0, errors.New("empty escape")
	}
	if v, ok := simple[p[0]]; ok {
		return v, 1, nil
	}
	hex := func(digits int) (rune, error) {
		if len(p) < 1+digits {
			return 0, fmt.Errorf("short \\%c escape", p[0])
		}
		v, err := strconv.ParseUint(p[1:1+digits], 16, 32)
		if err != nil {
			return 0, fmt.Errorf("bad \\%c escape: %w", p[0], err)
		}
		if v == 0 {
			return 0, errors.New("escaped NUL")
		}
		return rune(v), nil
	}
	switch p[0] {
	case 'x':
		r, err := hex(2)
		if err != nil {
			return "", 0, err
		}
		return string([]byte{byte(r)}), 3, nil // eight-bit: the byte itself
	case 'u':
		r, err := hex(4)
		if err != nil {
			return "", 0, err
		}
		return string(r), 5, nil
	case 'U':
		r, err := hex(8)
		if err != nil {
			return "", 0, err
		}
		if !utf8.ValidRune(r) {
			return "", 0, errors.New("bad \\U code point")
		}
		return string(r), 9, nil
	case '0', '1', '2', '3', '4', '5', '6', '7':
		if len(p) < 3 {
			return "", 0, errors.New("short octal escape")
		}
		v, err := strconv.ParseUint(p[:3], 8, 32)
		if err != nil || v == 0 || v > 255 {
			return "", 0, errors.New("bad octal escape")
		}
		return string([]byte{byte(v)}), 3, nil
	}
	return "", 0, fmt.Errorf("invalid escape \\%c", p[0])
}

// resolveSpecifiers is unit_full_printf for text without specifiers: "%%"
// is '%'; any other '%' would be expanded by systemd, which resil never wants.
func resolveSpecifiers(w string) (string, error) {
	if !strings.Contains(w, "%") {
		return w, nil
	}
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		if w[i] != '%' {
			b.WriteByte(w[i])
			continue
		}
		if i+1 < len(w) && w[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", fmt.Errorf("specifier %q would be expanded", w[i:min(i+2, len(w))])
	}
	return b.String(), nil
}

// replaceEnvWord is what replace_env_argv does to one argument at exec time
// (systemd 252, flags 0): a word that is "$NAME" is split into the variable's
// words, "${NAME}" anywhere is replaced, "$$" is '$', and any other '$' stays.
// The first two are expansions resil never wants, so they are errors here.
func replaceEnvWord(w string) (string, error) {
	if len(w) > 0 && w[0] == '$' && (len(w) == 1 || (w[1] != '{' && w[1] != '$')) {
		return "", fmt.Errorf("argument %q would be replaced by a variable's words", w)
	}
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		if w[i] != '$' || i+1 >= len(w) {
			b.WriteByte(w[i])
			continue
		}
		switch w[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			return "", fmt.Errorf("%q would be expanded", w[i:])
		default:
			b.WriteByte('$')
		}
	}
	return b.String(), nil
}

// splitExec splits one ExecStart=/ExecStartPre= value into the argv the
// program receives, like config_parse_exec plus replace_env_argv. It refuses
// what resil never renders: command prefixes, several commands separated by
// ';', specifiers and variable expansion.
func splitExec(line string) ([]string, error) {
	var argv []string
	rest := line
	for {
		trimmed := strings.TrimLeft(rest, sdWhitespace)
		if len(argv) > 0 && strings.HasPrefix(trimmed, ";") && (len(trimmed) == 1 || strings.IndexByte(sdWhitespace, trimmed[1]) >= 0) {
			return nil, fmt.Errorf("unquoted ';' separates a second command in %q", line)
		}
		var literalSemicolon bool
		if len(argv) > 0 && strings.HasPrefix(trimmed, `\;`) && (len(trimmed) == 2 || strings.IndexByte(sdWhitespace, trimmed[2]) >= 0) {
			literalSemicolon, rest = true, trimmed[2:]
		}
		var w string
		if literalSemicolon {
			w = ";"
		} else {
			var ok bool
			var err error
			w, rest, ok, err = extractWord(rest)
			if err != nil {
				return nil, fmt.Errorf("split %q: %w", line, err)
			}
			if !ok {
				break
			}
		}
		w, err := resolveSpecifiers(w)
		if err != nil {
			return nil, fmt.Errorf("split %q: %w", line, err)
		}
		if len(argv) == 0 {
			// The executable path: prefixes are parsed, and the path is
			// used as is, without variable expansion, while argv[0] gets
			// replace_env: a '$' in it would make the two differ.
			if w == "" || strings.ContainsAny(w[:1], "-@:+!") {
				return nil, fmt.Errorf("split %q: command prefix or empty path %q", line, w)
			}
			if !strings.HasPrefix(w, "/") {
				return nil, fmt.Errorf("split %q: path %q is not absolute", line, w)
			}
			if strings.Contains(w, "$") {
				return nil, fmt.Errorf("split %q: '$' in the executable path %q is not expanded by systemd", line, w)
			}
		} else {
			w, err = replaceEnvWord(w)
			if err != nil {
				return nil, fmt.Errorf("split %q: %w", line, err)
			}
		}
		argv = append(argv, w)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("empty command line %q", line)
	}
	return argv, nil
}

// splitEnvironment parses one Environment= value into its assignments, like
// config_parse_environ.
func splitEnvironment(value string) ([]string, error) {
	var out []string
	rest := value
	for {
		w, r, ok, err := extractWord(rest)
		if err != nil {
			return nil, fmt.Errorf("environment %q: %w", value, err)
		}
		if !ok {
			return out, nil
		}
		rest = r
		w, err = resolveSpecifiers(w)
		if err != nil {
			return nil, fmt.Errorf("environment %q: %w", value, err)
		}
		if k, _, found := strings.Cut(w, "="); !found || !envKeyRE.MatchString(k) {
			return nil, fmt.Errorf("environment %q: invalid assignment %q", value, w)
		}
		out = append(out, w)
	}
}

// TestSplitExec checks the model against examples from systemd.service(5)
// and systemd's own test-extract-word.c.
func TestSplitExec(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
		err  string
	}{
		{line: `/bin/echo one two`, want: []string{"/bin/echo", "one", "two"}},
		{line: `/bin/echo "one two"  'three four'`, want: []string{"/bin/echo", "one two", "three four"}},
		{line: `/bin/echo a"b c"d`, want: []string{"/bin/echo", "ab cd"}},
		{line: `/bin/echo "" x`, want: []string{"/bin/echo", "", "x"}},
		{line: `/bin/echo "a\"b" "c\\d" 'e\'f'`, want: []string{"/bin/echo", `a"b`, `c\d`, `e'f`}},
		{line: `/bin/echo \x41\u00e9\101\s.`, want: []string{"/bin/echo", "Aé" + "A" + " ."}},
		{line: `/bin/echo $$HOME a$$b "$${X}"`, want: []string{"/bin/echo", "$HOME", "a$b", "${X}"}},
		{line: `/bin/echo a$b`, want: []string{"/bin/echo", "a$b"}},
		{line: `/bin/echo %% "100%%"`, want: []string{"/bin/echo", "%", "100%"}},
		{line: `/bin/echo \; x`, want: []string{"/bin/echo", ";", "x"}},
		{line: `/bin/echo ";" x`, want: []string{"/bin/echo", ";", "x"}},
		{line: `/bin/echo ;x`, want: []string{"/bin/echo", ";x"}},
		{line: `/bin/echo x ; /bin/true`, err: "second command"},
		{line: `/bin/echo $HOME`, err: "variable's words"},
		{line: `/bin/echo $`, err: "variable's words"},
		{line: `/bin/echo ${HOME}`, err: "expanded"},
		{line: `/bin/echo %n`, err: "specifier"},
		{line: `/bin/echo "x`, err: "unbalanced"},
		{line: `/bin/echo x\`, err: "trailing backslash"},
		{line: `/bin/echo \q`, err: "invalid escape"},
		{line: `/bin/echo \;x`, err: "invalid escape"},
		{line: `-/bin/echo`, err: "prefix"},
		{line: `/opt/a$$b`, err: "executable path"},
		{line: `echo`, err: "not absolute"},
		{line: `   `, err: "empty command line"},
	} {
		t.Run(tc.line, func(t *testing.T) {
			got, err := splitExec(tc.line)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("splitExec(%q) = %q, %v; want error containing %q", tc.line, got, err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("splitExec(%q) = %q, %v; want %q", tc.line, got, err, tc.want)
			}
		})
	}
}

func TestSplitEnvironment(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  []string
		err   string
	}{
		{value: `A=b`, want: []string{"A=b"}},
		{value: `"A=b c" D=e`, want: []string{"A=b c", "D=e"}},
		{value: `"A=x\"y\\z$HOME 100%%"`, want: []string{`A=x"y\z$HOME 100%`}},
		{value: `"A="`, want: []string{"A="}},
		{value: `"A=%n"`, err: "specifier"},
		{value: `"1A=x"`, err: "invalid assignment"},
		{value: `novalue`, err: "invalid assignment"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			got, err := splitEnvironment(tc.value)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("splitEnvironment(%q) = %q, %v; want error containing %q", tc.value, got, err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("splitEnvironment(%q) = %q, %v; want %q", tc.value, got, err, tc.want)
			}
		})
	}
}

// TestQuoteArgRoundTrip: every argument QuoteArg writes splits back to itself.
func TestQuoteArgRoundTrip(t *testing.T) {
	args := []string{"", " ", "plain", "with space", `"`, `'`, `\`, `\\`, `a\`, `"quoted"`, `'single'`,
		"$", "$$", "$HOME", "${HOME}", "a$b", "%", "%%", "%n", "100%", ";", `\;`, ";;", "a;b", "é", "\u00a0",
		"\u2028", "#comment", "[Service]", "x=y", "-", "--flag=a b", "'", "`cmd`", "*?[", "tab\u00a0tab"}
	for _, a := range args {
		line := CommandLine([]string{"/bin/echo", a})
		got, err := splitExec(line)
		if err != nil {
			t.Errorf("QuoteArg(%q) = %s: %v", a, line, err)
			continue
		}
		if want := []string{"/bin/echo", a}; !slices.Equal(got, want) {
			t.Errorf("QuoteArg(%q) = %s, splits to %q", a, line, got)
		}
	}
}
