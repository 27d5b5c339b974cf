package calendar

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/e2e/sandbox"
)

var update = flag.Bool("update", false, "rewrite testdata/systemd-analyze.golden from the live systemd-analyze")

var goldenPath = filepath.Join("testdata", "systemd-analyze.golden")

const iterations = 5

// record is what systemd-analyze says about one expression from one base
// time: the verdict, the normalized form and up to five elapse times
// ("never" when there is none, "error" when systemd gives up).
type record struct {
	Expr  string
	Base  string
	Valid bool
	Norm  string
	Next  []string
}

// TestSystemdAnalyzeGolden compares Parse, String and Next with the outputs
// of systemd 252's `systemd-analyze calendar` recorded in the golden file.
// It needs no systemd, so it runs everywhere.
func TestSystemdAnalyzeGolden(t *testing.T) {
	recs, _, err := readGolden(goldenPath)
	if err != nil {
		t.Fatalf("read golden file (regenerate with go test -run TestSystemdAnalyzeLive -update): %v", err)
	}
	if len(recs) < 200 {
		t.Fatalf("golden file has %d records, want at least 200", len(recs))
	}
	compareAll(t, recs)
}

// TestSystemdAnalyzeLive runs the real systemd-analyze on every
// differential case, compares this package with it, and checks that the
// golden file is up to date (-update rewrites it).
func TestSystemdAnalyzeLive(t *testing.T) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if *update {
			t.Fatalf("-update needs systemd-analyze: %v", err)
		}
		// TestSystemdAnalyzeGolden still compares against the recorded outputs.
		sandbox.Missing(t, "systemd-analyze not found in $PATH (apt-get install systemd): %v", err)
	}
	version := systemdVersion(t, bin)
	if !strings.HasPrefix(version, "systemd 252 ") {
		t.Logf("warning: the reference is systemd 252, found %q", version)
	}
	cases := differentialCases()
	recs := runSystemd(t, bin, cases)
	compareAll(t, recs)

	var buf bytes.Buffer
	writeGolden(&buf, version, recs)
	if *update {
		if err := os.MkdirAll(filepath.Dir(goldenPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenPath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s: %d records", goldenPath, len(recs))
		return
	}
	old, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("read golden file: %v (run go test -run TestSystemdAnalyzeLive -update)", err)
	}
	// The header names the exact systemd build; compare the records only.
	_, oldBody, _ := bytes.Cut(old, []byte("\n"))
	_, newBody, _ := bytes.Cut(buf.Bytes(), []byte("\n"))
	if !bytes.Equal(oldBody, newBody) {
		t.Errorf("%s is out of date with the live systemd-analyze; run go test -run TestSystemdAnalyzeLive -update", goldenPath)
	}
}

func TestHandPickedUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range handPicked {
		if seen[e] {
			t.Errorf("duplicate hand-picked expression %q", e)
		}
		seen[e] = true
	}
}

// compareAll checks every record against this package and reports each
// mismatch; it fails the test if there is any.
func compareAll(t *testing.T, recs []record) {
	t.Helper()
	valid, mismatches, gaveUp := 0, 0, 0
	exprs := map[string]bool{}
	for _, r := range recs {
		exprs[r.Expr] = true
		if r.Valid {
			valid++
		}
		if r.Valid && slices.Equal(r.Next, []string{"error"}) {
			// systemd 252 gave up ("Infinite loop in calendar
			// calculation", seen at midnight DST changes); Next is
			// allowed to find a time there (see doc.go). The verdict
			// must still agree.
			gaveUp++
			if _, err := Parse(r.Expr); err != nil {
				mismatches++
				t.Errorf("expr %q: systemd accepts it, Parse: %v", r.Expr, err)
			}
			continue
		}
		if d := compareOne(r); d != "" {
			mismatches++
			if mismatches <= 40 {
				t.Errorf("expr %q base %q:\n%s", r.Expr, r.Base, d)
			}
		}
	}
	t.Logf("%d records, %d distinct expressions, %d valid records (systemd gave up on %d), %d mismatches",
		len(recs), len(exprs), valid, gaveUp, mismatches)
	if mismatches > 0 {
		t.Errorf("%d of %d records differ from systemd-analyze", mismatches, len(recs))
	}
}

// ours computes the record this package produces.
func ours(expr, base string) record {
	r := record{Expr: expr, Base: base}
	s, err := Parse(expr)
	if err != nil {
		return r
	}
	r.Valid, r.Norm = true, s.String()
	at, err := parseBase(base)
	if err != nil {
		panic(err)
	}
	for i := range iterations {
		n, err := s.next(at)
		switch {
		case errors.Is(err, errNever):
			if i == 0 {
				r.Next = append(r.Next, "never")
			}
			return r
		case err != nil:
			r.Next = append(r.Next, "error")
			return r
		}
		r.Next = append(r.Next, n.UTC().Format("Mon 2006-01-02 15:04:05 MST"))
		at = n
	}
	return r
}

func compareOne(want record) string {
	got := ours(want.Expr, want.Base)
	var d []string
	if got.Valid != want.Valid {
		s, err := Parse(want.Expr)
		return fmt.Sprintf("  valid: got %v (%v, %v), systemd %v", got.Valid, s, err, want.Valid)
	}
	if !want.Valid {
		return ""
	}
	// When systemd gives up computing, it prints no normalized form.
	if want.Norm != "" && got.Norm != want.Norm {
		d = append(d, fmt.Sprintf("  normalized: got %q, systemd %q", got.Norm, want.Norm))
	}
	if !slices.Equal(got.Next, want.Next) {
		d = append(d, fmt.Sprintf("  next:\n    got     %q\n    systemd %q", got.Next, want.Next))
	}
	return strings.Join(d, "\n")
}

func parseBase(base string) (time.Time, error) {
	return time.Parse("2006-01-02 15:04:05.999999999 MST", base)
}

func systemdVersion(t *testing.T, bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return first
}

// runSystemd asks systemd-analyze about every case, many expressions per
// call, and returns the records in the order of cases. An invalid
// expression is recorded once, for the first base time it appears with.
func runSystemd(t *testing.T, bin string, cases []differentialCase) []record {
	t.Helper()
	byBase := map[string][]string{}
	for _, c := range cases {
		byBase[c.Base] = append(byBase[c.Base], c.Expr)
	}
	results := map[differentialCase]record{}
	for base, exprs := range byBase {
		for _, r := range systemdBase(t, bin, base, exprs) {
			results[differentialCase{r.Expr, r.Base}] = r
		}
	}
	var recs []record
	invalidSeen := map[string]bool{}
	for _, c := range cases {
		r := results[c]
		if !r.Valid {
			if invalidSeen[c.Expr] {
				continue
			}
			invalidSeen[c.Expr] = true
		}
		recs = append(recs, r)
	}
	return recs
}

// systemdBase runs one base time. Expressions go in batches of 100; a
// batch whose output cannot be matched up unambiguously is rerun one
// expression at a time.
func systemdBase(t *testing.T, bin, base string, exprs []string) []record {
	t.Helper()
	var out []record
	var batch []string
	seen := map[string]bool{} // trimmed forms in the current batch
	var single []string
	flush := func() {
		if len(batch) == 0 {
			return
		}
		recs, ok := systemdBatch(t, bin, base, batch)
		if !ok {
			single = append(single, batch...)
		} else {
			out = append(out, recs...)
		}
		batch = nil
		clear(seen)
	}
	for _, e := range exprs {
		key := strings.TrimRight(e, " ")
		if strings.ContainsAny(e, "\n\t") || seen[key] {
			single = append(single, e)
			continue
		}
		seen[key] = true
		batch = append(batch, e)
		if len(batch) == 100 {
			flush()
		}
	}
	flush()
	for _, e := range single {
		out = append(out, systemdSingle(t, bin, base, e))
	}
	return out
}

func analyze(bin, base string, exprs []string) (stdout, stderr string, err error) {
	args := append([]string{"calendar", fmt.Sprintf("--iterations=%d", iterations), "--base-time=" + base, "--"}, exprs...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "LC_ALL=C")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

const parseFailure = "Failed to parse calendar specification '"

func systemdBatch(t *testing.T, bin, base string, exprs []string) ([]record, bool) {
	t.Helper()
	stdout, stderr, err := analyze(bin, base, exprs)
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run %s: %v", bin, err)
	}
	blocks := parseBlocks(stdout)
	var failures []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if l == "" {
			continue
		}
		if !strings.HasPrefix(l, parseFailure) {
			return nil, false // e.g. "Failed to determine next elapse": rerun singly
		}
		failures = append(failures, l)
	}
	var recs []record
	bi, fi := 0, 0
	for _, e := range exprs {
		r := record{Expr: e, Base: base}
		if bi < len(blocks) && strings.TrimRight(blocks[bi].Expr, " ") == strings.TrimRight(e, " ") {
			b := blocks[bi]
			r.Valid, r.Norm, r.Next = true, b.Norm, b.Next
			bi++
		} else {
			if fi >= len(failures) || !strings.HasPrefix(failures[fi], parseFailure+e+"'") {
				return nil, false
			}
			fi++
		}
		recs = append(recs, r)
	}
	if bi != len(blocks) || fi != len(failures) {
		return nil, false
	}
	return recs, true
}

func systemdSingle(t *testing.T, bin, base, expr string) record {
	t.Helper()
	stdout, stderr, err := analyze(bin, base, []string{expr})
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run %s: %v", bin, err)
	}
	r := record{Expr: expr, Base: base}
	blocks := parseBlocks(stdout)
	switch {
	case len(blocks) == 1 && err == nil:
		r.Valid, r.Norm, r.Next = true, blocks[0].Norm, blocks[0].Next
	case strings.HasPrefix(stderr, parseFailure):
		// invalid
	case strings.Contains(stderr, "Failed to determine next elapse"):
		r.Valid, r.Next = true, []string{"error"}
	default:
		t.Fatalf("systemd-analyze %q: unexpected output (%v):\n%s\n%s", expr, err, stdout, stderr)
	}
	return r
}

// parseBlocks reads the tables systemd-analyze prints for valid expressions.
// Each starts with "Original form", or with "Normalized form" when the
// two are the same.
func parseBlocks(stdout string) []record {
	var blocks []record
	for _, line := range strings.Split(stdout, "\n") {
		field, value, ok := strings.Cut(strings.TrimLeft(line, " "), ": ")
		if !ok {
			continue
		}
		switch {
		case field == "Original form":
			blocks = append(blocks, record{Expr: value, Valid: true})
		case field == "Normalized form" && (len(blocks) == 0 || blocks[len(blocks)-1].Norm != ""):
			// systemd omits "Original form" when it equals the normalized one.
			blocks = append(blocks, record{Expr: value, Valid: true, Norm: value})
		case len(blocks) == 0:
		case field == "Normalized form":
			blocks[len(blocks)-1].Norm = value
		case field == "Next elapse" || strings.HasPrefix(field, "Iter. #"):
			blocks[len(blocks)-1].Next = append(blocks[len(blocks)-1].Next, value)
		}
	}
	return blocks
}

// The golden file holds one block per record, separated by blank lines:
//
//	expr "Mon..Fri 10:00"
//	base 2026-03-15 12:34:56 UTC
//	norm Mon..Fri *-*-* 10:00:00
//	next Mon 2026-03-16 10:00:00 UTC
//	...
//
// or "invalid" in place of norm and next. Expressions are Go-quoted.
func writeGolden(w *bytes.Buffer, version string, recs []record) {
	fmt.Fprintf(w, "# systemd-analyze calendar --iterations=%d, TZ=UTC, %s; regenerate: go test -run TestSystemdAnalyzeLive -update\n", iterations, version)
	for _, r := range recs {
		fmt.Fprintf(w, "\nexpr %s\nbase %s\n", strconv.Quote(r.Expr), r.Base)
		if !r.Valid {
			w.WriteString("invalid\n")
			continue
		}
		if r.Norm != "" {
			fmt.Fprintf(w, "norm %s\n", r.Norm)
		}
		for _, n := range r.Next {
			fmt.Fprintf(w, "next %s\n", n)
		}
	}
}

func readGolden(path string) ([]record, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	var recs []record
	var header string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		key, value, _ := strings.Cut(line, " ")
		switch {
		case n == 1:
			header = line
		case line == "":
		case key == "expr":
			e, err := strconv.Unquote(value)
			if err != nil {
				return nil, "", fmt.Errorf("%s:%d: %w", path, n, err)
			}
			recs = append(recs, record{Expr: e, Valid: true})
		case len(recs) == 0:
			return nil, "", fmt.Errorf("%s:%d: %q before the first expr", path, n, line)
		case key == "base":
			recs[len(recs)-1].Base = value
		case line == "invalid":
			recs[len(recs)-1].Valid = false
		case key == "norm":
			recs[len(recs)-1].Norm = value
		case key == "next":
			recs[len(recs)-1].Next = append(recs[len(recs)-1].Next, value)
		default:
			return nil, "", fmt.Errorf("%s:%d: unexpected line %q", path, n, line)
		}
	}
	return recs, header, sc.Err()
}
