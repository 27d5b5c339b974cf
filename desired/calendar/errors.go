package calendar

import (
	"errors"
	"fmt"
)

// Sentinel errors wrapped by *ParseError; classify with errors.Is.
var (
	// ErrSyntax means the expression is not in systemd's calendar grammar.
	ErrSyntax = errors.New("syntax error")
	// ErrRange means a value is syntactically fine but outside what systemd
	// accepts (month 13, year 1969, a repetition that can never fire, ...).
	ErrRange = errors.New("value out of range")
)

// ParseError is returned by Parse. Its message names the expression and says
// what is wrong with it, for example:
//
//	invalid calendar expression "Mon..Fry 10:00": unknown weekday "Fry"
type ParseError struct {
	Expr   string // the expression as given to Parse
	Detail string // what is wrong, for humans
	Err    error  // ErrSyntax or ErrRange
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("invalid calendar expression %q: %s", e.Expr, e.Detail)
}

func (e *ParseError) Unwrap() error { return e.Err }

// errNever is returned by next when the spec will not elapse any more.
var errNever = errors.New("calendar spec will not elapse again")

// errLoop mirrors systemd's safety valve: find_next gives up after 1000
// rounds ("Infinite loop in calendar calculation").
var errLoop = errors.New("calendar calculation did not converge")

// syntaxf and rangef build the internal error carried up to Parse, which
// wraps it in a *ParseError.
type detailError struct {
	kind   error
	detail string
}

func (e *detailError) Error() string { return e.detail }

func syntaxf(format string, args ...any) error {
	return &detailError{kind: ErrSyntax, detail: fmt.Sprintf(format, args...)}
}

func rangef(format string, args ...any) error {
	return &detailError{kind: ErrRange, detail: fmt.Sprintf(format, args...)}
}
