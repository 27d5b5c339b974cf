package desired

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// update regenerates the golden files: go test ./desired/ -update
var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// testHost is the host the test corpora are loaded for.
var testHost = Host{Name: "web-01", Labels: map[string]string{"role": "web", "env": "prod"}}

// copyTree copies src (a file or a directory tree) to dst.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// writeFiles creates files (relative path → content) below dir.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// loadInsecure loads dir for testHost without the ownership checks (test
// files belong to whoever checked the repository out).
func loadInsecure(t testing.TB, dir string) (*Set, error) {
	t.Helper()
	return Load(dir, Options{Host: testHost, Insecure: true})
}

// errorLines renders every FieldError of err as "file:line:col: field: detail"
// with dir stripped from the file names, one per line, in Load's order.
func errorLines(t testing.TB, err error, dir string) string {
	t.Helper()
	if err == nil {
		return ""
	}
	fes := FieldErrors(err)
	if len(fes) == 0 {
		t.Fatalf("error carries no *FieldError: %v", err)
	}
	var b strings.Builder
	for _, fe := range fes {
		c := *fe
		c.File = relTo(dir, c.File)
		c.Detail = strings.ReplaceAll(c.Detail, dir+string(filepath.Separator), "")
		b.WriteString(c.Error())
		b.WriteByte('\n')
	}
	return b.String()
}

func relTo(dir, file string) string {
	if rel, err := filepath.Rel(dir, file); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return file
}

// golden compares got with the file at path, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("golden file %s is missing; run go test ./desired/ -update", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update to accept):\n%s", path, lineDiff(string(want), string(got)))
	}
}

// goldenDir compares a whole directory of expected files with got (file name
// → content): no file may be missing or extra. -update rewrites the directory.
func goldenDir(t *testing.T, dir string, got map[string][]byte) {
	t.Helper()
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range got {
		golden(t, filepath.Join(dir, name), data)
	}
	if *update {
		return
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("golden directory: %v", err)
	}
	for _, e := range ents {
		if _, ok := got[e.Name()]; !ok {
			t.Errorf("golden file %s was not rendered (stale? run with -update)", filepath.Join(dir, e.Name()))
		}
	}
}

// lineDiff is a small line diff: "-" lines only in want, "+" lines only in got.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	// Longest common subsequence, fine for files of a few hundred lines.
	lcs := make([][]int, len(w)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(g)+1)
	}
	for i := len(w) - 1; i >= 0; i-- {
		for j := len(g) - 1; j >= 0; j-- {
			if w[i] == g[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var b strings.Builder
	i, j := 0, 0
	for i < len(w) || j < len(g) {
		switch {
		case i < len(w) && j < len(g) && w[i] == g[j]:
			b.WriteString("  " + w[i] + "\n")
			i, j = i+1, j+1
		case j < len(g) && (i == len(w) || lcs[i][j+1] >= lcs[i+1][j]):
			b.WriteString("+ " + g[j] + "\n")
			j++
		default:
			b.WriteString("- " + w[i] + "\n")
			i++
		}
	}
	return b.String()
}

// bench1000 writes 1000 manifests as the systemd benchmark writes them
// (e2e/bench_test.go: writeServices) into a new directory.
func bench1000(b *testing.B) string {
	dir := b.TempDir()
	files := map[string]string{}
	for i := 1; i <= 1000; i++ {
		n := fmt.Sprintf("b%04d", i)
		files[n+".yaml"] = "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: " + n + "}\nspec:\n  command: [\"/bin/sleep\", \"infinity\"]\n  restart: {policy: always, delay: 100ms}\n  environment: {GEN: \"v-0-x\"}\n"
	}
	writeFiles(b, dir, files)
	return dir
}
