package desired

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrUnreadable marks a Load that could read nothing at all: the directory is
// missing, not a directory, unreadable or insecure. Callers must not prune on it.
var ErrUnreadable = errors.New("manifests directory unreadable")

// FieldError is one problem in one manifest, with its position.
// Line and Column are 1-based; 0 means unknown.
// Its JSON form (validate -o json) has lower-case keys, omits unknown
// positions and an empty field, and adds "message", the one-line Error text.
type FieldError struct {
	File   string `json:"file"`
	Line   int    `json:"line,omitempty"`
	Column int    `json:"column,omitempty"`
	// Field is the field path, e.g. "spec.restart.delay"; empty for file-level problems.
	Field  string `json:"field,omitempty"`
	Detail string `json:"detail"`
}

// MarshalJSON adds "message", the text Error renders, to the fields.
func (e *FieldError) MarshalJSON() ([]byte, error) {
	type plain FieldError // no methods: no recursion
	b, err := json.Marshal(struct {
		*plain
		Message string `json:"message"`
	}{(*plain)(e), e.Error()})
	if err != nil {
		return nil, fmt.Errorf("field error as json: %w", err)
	}
	return b, nil
}

// Error renders "file:line:col: field: detail", omitting unknown parts. It is
// always one line: control characters anywhere in it (a newline in an
// environment key, an ESC in a drop-in folder name) are escaped, see
// EscapeControl.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(":" + strconv.Itoa(e.Column))
		}
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Detail)
	return EscapeControl(b.String())
}

// EscapeControl makes s safe to print as one line of a terminal or a log:
// C0 and C1 control characters (newline, carriage return, tab, ESC, DEL,
// U+0085), the Unicode line and paragraph separators U+2028/U+2029, the
// bidirectional formatting characters (which reorder what a terminal shows)
// and invalid UTF-8 bytes are written as Go escapes (\n, \x1b, \u2028).
// Everything else, including '\', is kept as is, so text that is already
// escaped (a %q in a message) reads the same.
func EscapeControl(s string) string {
	i := strings.IndexFunc(s, needsEscape)
	if i < 0 && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case needsEscape(r):
			q := strconv.QuoteRune(r) // '\n', '\x1b', '\u0085'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[:size])
		}
		s = s[size:]
	}
	return b.String()
}

// needsEscape: characters that break a line or change how a line looks.
func needsEscape(r rune) bool {
	switch {
	case unicode.IsControl(r): // C0, DEL, C1
		return true
	case r == '\u2028' || r == '\u2029':
		return true
	case r == '\u061c' || r == '\u200e' || r == '\u200f',
		r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
		return true
	}
	return false
}

// FieldErrors extracts every FieldError from err (a multierror or a single error).
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		var fe *FieldError
		if errors.As(e, &fe) && fe == e {
			out = append(out, fe)
			return
		}
		if u, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range u.Unwrap() {
				walk(x)
			}
			return
		}
		if u, ok := e.(interface{ WrappedErrors() []error }); ok {
			for _, x := range u.WrappedErrors() {
				walk(x)
			}
			return
		}
		if errors.As(e, &fe) {
			out = append(out, fe)
		}
	}
	walk(err)
	return out
}

// path is a field path as segments: keys, or "[i]" for list items.
type path []string

func (p path) String() string {
	var b strings.Builder
	for i, s := range p {
		if strings.HasPrefix(s, "[") {
			b.WriteString(s)
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s)
	}
	return b.String()
}

func (p path) key(k string) path {
	out := make(path, len(p), len(p)+1)
	copy(out, p)
	return append(out, k)
}

func (p path) index(i int) path { return p.key(fmt.Sprintf("[%d]", i)) }

// parsePath splits a dotted path such as "restart.limit.burst" or
// "command[0]" (as encoding/json reports them) into segments.
func parsePath(s string) path {
	var out path
	for _, part := range strings.Split(s, ".") {
		for {
			i := strings.IndexByte(part, '[')
			if i < 0 {
				break
			}
			if i > 0 {
				out = append(out, part[:i])
			}
			j := strings.IndexByte(part[i:], ']')
			if j < 0 {
				break
			}
			out = append(out, part[i:i+j+1])
			part = part[i+j+1:]
		}
		if part != "" {
			out = append(out, part)
		}
	}
	return out
}
