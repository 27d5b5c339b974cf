package sandbox

import (
	"bufio"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// skipCall matches a test skipping itself.
var skipCall = regexp.MustCompile(`\.(Skip|Skipf|SkipNow)\(`)

// TestSkipsGoThroughMissing: a test that cannot run for want of root, a
// program, zoneinfo or a sandbox must give up through Missing (which
// RESIL_E2E_REQUIRE=1 turns into a failure), never by a bare t.Skip. The
// few skips that are not about the host (an opt-in benchmark, -short, the
// helper run of a re-executed test binary) say so on their line with
// "// not a prerequisite: why".
func TestSkipsGoThroughMissing(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found at %s: %v", root, err)
	}
	n := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && p != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for line := 1; sc.Scan(); line++ {
			l := sc.Text()
			if !skipCall.MatchString(l) || strings.HasPrefix(strings.TrimSpace(l), "//") || strings.Contains(l, "skipCall") {
				continue
			}
			n++
			if !strings.Contains(l, "// not a prerequisite: ") {
				rel, _ := filepath.Rel(root, p)
				t.Errorf("%s:%d: skip not through sandbox.Missing (or marked \"// not a prerequisite: why\"): %s", rel, line, strings.TrimSpace(l))
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Errorf("no deliberate skip found; is the walk looking at the repository?")
	}
}

// TestTestDepsInstallsPrerequisites: the package list `make test` installs
// (scripts/test-deps.sh, also run by .ci/run) has every package the sandbox
// needs and those of the programs tests ask for with RequireProgram.
func TestTestDepsInstallsPrerequisites(t *testing.T) {
	root := filepath.Join("..", "..")
	script, err := os.ReadFile(filepath.Join(root, "scripts", "test-deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^pkgs="([^"]*)"$`).FindSubmatch(script)
	if m == nil {
		t.Fatalf("scripts/test-deps.sh: no pkgs=\"...\" line")
	}
	have := map[string]bool{}
	for _, p := range strings.Fields(string(m[1])) {
		have[p] = true
	}
	want := strings.Fields(Packages)
	// RequireProgram(t, name, pkg) calls name their package.
	req := regexp.MustCompile(`RequireProgram\([^,]+, "[^"]+", "([^"]+)"\)`)
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, "_test.go") {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range req.FindAllSubmatch(data, -1) {
			want = append(want, string(s[1]))
		}
		return nil
	})
	for _, p := range want {
		if !have[p] {
			t.Errorf("scripts/test-deps.sh does not install %s", p)
		}
	}
	for _, f := range []string{"Makefile", filepath.Join(".ci", "run")} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "scripts/test-deps.sh") {
			t.Errorf("%s does not run scripts/test-deps.sh", f)
		}
	}
}

// TestTestDepsScript runs scripts/test-deps.sh against fake dpkg-query, id
// and apt-get: nothing missing, it calls no apt-get; missing as root, it
// installs exactly what is missing; missing as another user, it says so and
// leaves the tests to skip.
func TestTestDepsScript(t *testing.T) {
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "test-deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	sh := RequireProgram(t, "sh", "dash")
	for _, tc := range []struct {
		name, missing, uid, wantApt, wantErr string
	}{
		{"all present", "", "0", "", ""},
		{"missing as root", "netcat-openbsd tzdata", "0", "update -qq\ninstall -y -qq --no-install-recommends netcat-openbsd tzdata\n", ""},
		{"missing as a user", "curl", "1000", "", "test-deps: missing: curl. As root: apt-get install curl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := t.TempDir()
			log := filepath.Join(bin, "apt.log")
			fakes := map[string]string{
				"dpkg-query": "for p; do :; done\ncase \" $MISSING \" in *\" $p \"*) exit 1;; esac\nprintf installed\n",
				"id":         "echo \"$FAKE_UID\"\n",
				"apt-get":    "echo \"$*\" >>\"$APT_LOG\"\n",
			}
			for name, body := range fakes {
				if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command(sh, script)
			cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "MISSING=" + tc.missing, "FAKE_UID=" + tc.uid, "APT_LOG=" + log}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("test-deps.sh: %v\n%s", err, stderr.String())
			}
			apt, _ := os.ReadFile(log)
			if string(apt) != tc.wantApt {
				t.Errorf("apt-get calls:\n%q\nwant\n%q", apt, tc.wantApt)
			}
			if !strings.Contains(stderr.String(), tc.wantErr) || (tc.wantErr == "" && stderr.Len() > 0) {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.wantErr)
			}
		})
	}
}
