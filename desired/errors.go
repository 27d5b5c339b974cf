package desired

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrUnreadable marks a Load that could read nothing at all: the directory is
// missing, not a directory, unreadable or insecure. Callers must not prune on it.
var ErrUnreadable = errors.New("manifests directory unreadable")

// FieldError is one problem in one manifest, with its position.
// Line and Column are 1-based; 0 means unknown.
type FieldError struct {
	File   string
	Line   int
	Column int
	// Field is the field path, e.g. "spec.restart.delay"; empty for file-level problems.
	Field  string
	Detail string
}

// Error renders "file:line:col: field: detail", omitting unknown parts.
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
	return b.String()
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
