package desired

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"resil.dev/resil/e2e/sandbox"
)

// TestInvalidCorpus loads every case in testdata/invalid/ (a NAME.yaml file,
// or a NAME/ directory when it needs several files or drop-ins) on its own
// and compares the complete error list with NAME.err: file (relative),
// line, column, field path and message. Update with -update.
func TestInvalidCorpus(t *testing.T) {
	ents, err := os.ReadDir(filepath.Join("testdata", "invalid"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".err") {
			case_ := strings.TrimSuffix(name, ".err")
			if _, err1 := os.Stat(filepath.Join("testdata", "invalid", case_+".yaml")); err1 != nil {
				if _, err2 := os.Stat(filepath.Join("testdata", "invalid", case_)); err2 != nil {
					t.Errorf("%s has no case", name)
				}
			}
			continue
		}
		case_ := strings.TrimSuffix(name, ".yaml")
		n++
		t.Run(case_, func(t *testing.T) {
			src := filepath.Join("testdata", "invalid", name)
			dir := t.TempDir()
			if e.IsDir() {
				copyTree(t, src, dir)
			} else {
				copyTree(t, src, filepath.Join(dir, name))
			}
			set, err := loadInsecure(t, dir)
			if err == nil {
				t.Fatal("Load returned no error")
			}
			if errors.Is(err, ErrUnreadable) || set == nil {
				t.Fatalf("Load = %v, %v; want a set and field errors", set, err)
			}
			got := errorLines(t, err, dir)
			if n := len(FieldErrors(err)); strings.Count(err.Error(), "\n")+1 != n {
				t.Errorf("err.Error() does not list the %d problems one a line: %q", n, err.Error())
			}
			checkBrokenConsistent(t, set, err, dir)
			golden(t, filepath.Join("testdata", "invalid", case_+".err"), []byte(got))
		})
	}
	if n < 40 {
		t.Errorf("invalid corpus has %d cases, want at least 40", n)
	}
}

// checkBrokenConsistent: every error names a file listed in set.Broken,
// every broken file has errors, and every field error has a line.
func checkBrokenConsistent(t *testing.T, set *Set, err error, dir string) {
	t.Helper()
	files := map[string]bool{}
	for _, fe := range FieldErrors(err) {
		rel := relTo(dir, fe.File)
		files[rel] = true
		if _, ok := set.Broken[rel]; !ok {
			t.Errorf("error in %s, but Broken = %v", rel, sortedKeys(set.Broken))
		}
		if fe.Field != "" && fe.Line == 0 && !strings.HasPrefix(fe.Detail, "cannot merge") {
			t.Errorf("field error without a line: %v", fe)
		}
	}
	for f, e := range set.Broken {
		if !files[f] {
			t.Errorf("Broken[%s] = %v, but no error names it", f, e)
		}
		if e == nil {
			t.Errorf("Broken[%s] is a nil error", f)
		}
	}
}

// TestBadFileNeverHidesGoodOnes: good files load whatever their neighbours
// hold, Broken lists exactly the bad files, and BrokenNames/IsBroken say
// which objects must keep their last good version.
func TestBadFileNeverHidesGoodOnes(t *testing.T) {
	dir := t.TempDir()
	svc := func(name string) string {
		return fmt.Sprintf("apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: %s}\nspec: {command: [/bin/true]}\n", name)
	}
	writeFiles(t, dir, map[string]string{
		"a-good.yaml":      svc("a"),
		"b-syntax.yaml":    "apiVersion: [\n",
		"c-good.yaml":      svc("c") + "---\n" + svc("c2"),
		"d-mixed.yaml":     svc("d-ok") + "---\n" + strings.Replace(svc("d-bad"), "/bin/true", "true", 1),
		"e-dropin.yaml":    svc("e"),
		"e.d/10-bad.yaml":  "spec: {restart: {delay: never}}\n",
		"f-dup.yaml":       svc("f"),
		"g-dup.yaml":       svc("f"),
		"h-good.yml":       svc("h"),
		"i-good.yaml":      svc("i"),
		"i.d/10-good.yaml": "spec: {restart: {policy: always}}\n",
		"z-empty.yaml":     "",
		"z-comments.yaml":  "# nothing here yet\n---\n",
	})
	set, err := loadInsecure(t, dir)
	if err == nil || errors.Is(err, ErrUnreadable) {
		t.Fatalf("Load err = %v; want field errors", err)
	}
	var ids []string
	for _, o := range set.Sorted() {
		ids = append(ids, o.ID())
	}
	wantIDs := []string{"Service/a", "Service/c", "Service/c2", "Service/d-ok", "Service/h", "Service/i"}
	if !slices.Equal(ids, wantIDs) {
		t.Errorf("objects = %q, want %q", ids, wantIDs)
	}
	if got, want := sortedKeys(set.Broken), []string{"b-syntax.yaml", "d-mixed.yaml", "e.d/10-bad.yaml", "f-dup.yaml", "g-dup.yaml"}; !slices.Equal(got, want) {
		t.Errorf("Broken = %q, want %q", got, want)
	}
	if got, want := sortedKeys(set.BrokenNames), []string{"d-bad", "e", "f"}; !slices.Equal(got, want) {
		t.Errorf("BrokenNames = %q, want %q", got, want)
	}
	wantFiles := []string{"a-good.yaml", "b-syntax.yaml", "c-good.yaml", "d-mixed.yaml", "e-dropin.yaml", "f-dup.yaml", "g-dup.yaml", "h-good.yml", "i-good.yaml", "z-comments.yaml", "z-empty.yaml"}
	if !slices.Equal(set.Files, wantFiles) {
		t.Errorf("Files = %q, want %q", set.Files, wantFiles)
	}
	if got := set.Objects["Service/i"].Source.DropIns; !slices.Equal(got, []string{"i.d/10-good.yaml"}) {
		t.Errorf("Service/i DropIns = %q", got)
	}
	// IsBroken is asked about the last good objects of an earlier load.
	last := func(name, file string, dropIns ...string) *Object {
		return &Object{Kind: KindService, Metadata: ObjectMeta{Name: name}, Source: Source{File: file, DropIns: dropIns}}
	}
	for _, tc := range []struct {
		o    *Object
		want bool
	}{
		{last("a", "a-good.yaml"), false},
		{last("b", "b-syntax.yaml"), true},    // its file does not parse
		{last("d-bad", "d-mixed.yaml"), true}, // its document is invalid
		{last("e", "e-dropin.yaml"), true},    // a new drop-in is broken
		{last("f", "f-dup.yaml"), true},       // now defined twice
		{last("gone", "deleted.yaml"), false}, // really deleted: prune
		{last("i", "i-good.yaml", "i.d/10-good.yaml"), false},
		{last("x", "x.yaml", "e.d/10-bad.yaml"), true}, // a drop-in it had is broken
	} {
		if got := set.IsBroken(tc.o); got != tc.want {
			t.Errorf("IsBroken(%s from %s) = %v, want %v", tc.o, tc.o.Source.File, got, tc.want)
		}
	}
	// The error lists every problem; each *FieldError is reachable.
	if n := len(FieldErrors(err)); n != 5 {
		t.Errorf("%d field errors, want 5:\n%s", n, errorLines(t, err, dir))
	}
}

// TestLoadValid: a valid directory loads with a nil error and a full set.
func TestLoadValid(t *testing.T) {
	set, err := loadInsecure(t, exampleDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Broken) != 0 || len(set.BrokenNames) != 0 {
		t.Errorf("Broken = %v, BrokenNames = %v", set.Broken, set.BrokenNames)
	}
	if want, _ := filepath.EvalSymlinks(exampleDir); set.Dir != want {
		t.Errorf("Dir = %q, want %q", set.Dir, want)
	}
}

func TestLoadUnreadable(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"file.yaml": "x: 1\n"})
	for _, tc := range []struct {
		name string
		dir  string
		opts Options
	}{
		{"missing", filepath.Join(dir, "nope"), Options{Insecure: true}},
		{"not a directory", filepath.Join(dir, "file.yaml"), Options{Insecure: true}},
		{"dangling symlink", symlink(t, filepath.Join(dir, "nowhere"), filepath.Join(dir, "dangling")), Options{Insecure: true}},
		{"wrong owner", dir, Options{OwnerUID: os.Getuid() + 1}},
		{"group-writable", chmod(t, mkdir(t, filepath.Join(dir, "gw")), 0o775), Options{OwnerUID: os.Getuid()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := Load(tc.dir, tc.opts)
			if !errors.Is(err, ErrUnreadable) || set != nil {
				t.Fatalf("Load = %v, %v; want nil, ErrUnreadable", set, err)
			}
		})
	}
}

func mkdir(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func chmod(t *testing.T, p string, mode os.FileMode) string {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func symlink(t *testing.T, target, link string) string {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return link
}

// TestLoadFileChecks: per-file refusals (size, owner, mode, name) break only
// that file. Ownership is checked against the running uid (OwnerUID).
func TestLoadFileChecks(t *testing.T) {
	good := "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: good}\nspec: {command: [/bin/true]}\n"
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the bad file (relative)
		opts  Options
		want  string // the error line, relative
	}{
		{
			name: "too large",
			setup: func(t *testing.T, dir string) string {
				writeFiles(t, dir, map[string]string{"big.yaml": "# " + strings.Repeat("x", int(DefaultMaxFileBytes)) + "\n"})
				return "big.yaml"
			},
			opts: Options{Insecure: true},
			want: fmt.Sprintf("big.yaml: file is %d bytes, larger than the %d-byte cap", DefaultMaxFileBytes+3, DefaultMaxFileBytes),
		},
		{
			name: "custom cap",
			setup: func(t *testing.T, dir string) string {
				writeFiles(t, dir, map[string]string{"b.yaml": good + "# padding padding padding\n"})
				return "b.yaml"
			},
			opts: Options{Insecure: true, MaxFileBytes: int64(len(good) + 10)},
			want: fmt.Sprintf("b.yaml: file is %d bytes, larger than the %d-byte cap", len(good)+26, len(good)+10),
		},
		{
			name: "directory cap",
			setup: func(t *testing.T, dir string) string {
				writeFiles(t, dir, map[string]string{"b.yaml": strings.Replace(good, "good", "second", 1)})
				return "b.yaml"
			},
			opts: Options{Insecure: true, MaxDirBytes: int64(len(good) + 5)},
			want: fmt.Sprintf("b.yaml: directory size cap of %d bytes reached", len(good)+5),
		},
		{
			name: "group-writable",
			setup: func(t *testing.T, dir string) string {
				writeFiles(t, dir, map[string]string{"gw.yaml": good})
				chmod(t, filepath.Join(dir, "gw.yaml"), 0o666)
				return "gw.yaml"
			},
			opts: Options{OwnerUID: os.Getuid()},
			want: "gw.yaml: refused: mode 0666 is writable by group or others (manifests become root-run programs)",
		},
		{
			name: "wrong owner",
			setup: func(t *testing.T, dir string) string {
				writeFiles(t, dir, map[string]string{"owner.yaml": good})
				if err := os.Chown(filepath.Join(dir, "owner.yaml"), os.Getuid()+1, -1); err != nil {
					sandbox.Missing(t, "cannot chown as uid %d (needs root): %v", os.Getuid(), err)
				}
				return "owner.yaml"
			},
			opts: Options{OwnerUID: os.Getuid()},
			want: fmt.Sprintf("owner.yaml: refused: owned by uid %d, want uid %d (manifests become root-run programs)", os.Getuid()+1, os.Getuid()),
		},
		{
			name: "unsafe name",
			setup: func(t *testing.T, dir string) string {
				writeFiles(t, dir, map[string]string{"my file.yaml": good})
				return "my file.yaml"
			},
			opts: Options{Insecure: true},
			want: "my file.yaml: refused: file names may use only letters, digits and . _ - + @ =",
		},
		{
			name: "not a regular file",
			setup: func(t *testing.T, dir string) string {
				mkdir(t, filepath.Join(dir, "dir.yaml"))
				return "dir.yaml"
			},
			opts: Options{Insecure: true},
			want: "dir.yaml: not a regular file",
		},
		{
			name: "too many documents",
			setup: func(t *testing.T, dir string) string {
				writeFiles(t, dir, map[string]string{"many.yaml": strings.Repeat("---\nx: 1\n", maxDocsPerFile+1)})
				return "many.yaml"
			},
			opts: Options{Insecure: true},
			want: fmt.Sprintf("many.yaml: more than %d documents", maxDocsPerFile),
		},
		{
			name: "nested too deeply",
			setup: func(t *testing.T, dir string) string {
				writeFiles(t, dir, map[string]string{"deep.yaml": "a: " + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "\n"})
				return "deep.yaml"
			},
			opts: Options{Insecure: true},
			want: "deep.yaml:1:68: document nested too deeply",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"a-good.yaml": good})
			bad := tc.setup(t, dir)
			opts := tc.opts
			opts.Host = testHost
			set, err := Load(dir, opts)
			if errors.Is(err, ErrUnreadable) || set == nil {
				t.Fatalf("Load = %v, %v", set, err)
			}
			if got := strings.TrimSpace(errorLines(t, err, dir)); got != tc.want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, tc.want)
			}
			if _, ok := set.Broken[bad]; !ok {
				t.Errorf("Broken = %v, want %s", sortedKeys(set.Broken), bad)
			}
			if set.Objects["Service/good"] == nil {
				t.Errorf("the good file did not load; objects %v", sortedKeys(set.Objects))
			}
		})
	}
}

// TestLoadSecureOK: with the real checks on, files of the right owner and
// mode load.
func TestLoadSecureOK(t *testing.T) {
	dir := t.TempDir()
	chmod(t, dir, 0o755)
	writeFiles(t, dir, map[string]string{
		"a.yaml":      "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [/bin/true]}\n",
		"a.d/1.yaml":  "spec: {restart: {policy: always}}\n",
		"b.yaml":      "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: b}\nspec: {command: [/bin/true]}\n",
		"b.d/10.yaml": "spec: {restart: {policy: always}}\n",
	})
	chmod(t, filepath.Join(dir, "b.d"), 0o777)
	set, err := Load(dir, Options{OwnerUID: os.Getuid()})
	if got := errorLines(t, err, dir); got != "b.d: refused: mode 0777 is writable by group or others (manifests become root-run programs)\n" {
		t.Errorf("errors:\n%s", got)
	}
	if set.Objects["Service/a"] == nil || !set.BrokenNames["b"] {
		t.Errorf("objects %v, BrokenNames %v", sortedKeys(set.Objects), set.BrokenNames)
	}
}

// A NAME.d symlink whose target is gone is a drop-in folder that cannot be
// read: the object is broken (its last good version stays in force), not
// loaded without its drop-ins (which could drop its user: and run it as
// root).
func TestLoadDanglingDropInFolder(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"a.yaml": "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [/bin/true]}\n",
		"w.yaml": "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: w}\nspec: {command: [/bin/true]}\n",
	})
	if err := os.Symlink(filepath.Join(dir, "gone"), filepath.Join(dir, "w.d")); err != nil {
		t.Fatal(err)
	}
	set, err := Load(dir, Options{Insecure: true})
	if got := errorLines(t, err, dir); !strings.Contains(got, "w.d: cannot read drop-in folder") {
		t.Errorf("errors:\n%s", got)
	}
	if set.Objects["Service/a"] == nil || !set.BrokenNames["w"] {
		t.Errorf("objects %v, BrokenNames %v", sortedKeys(set.Objects), set.BrokenNames)
	}
}

// TestLoadSymlinkedDir: the directory is resolved once (a git-sync or
// ConfigMap "..data" swap), and Set.Dir is the resolved path.
func TestLoadSymlinkedDir(t *testing.T) {
	root := t.TempDir()
	v1 := mkdir(t, filepath.Join(root, "..2024_v1"))
	writeFiles(t, v1, map[string]string{"a.yaml": "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [/bin/true]}\n"})
	symlink(t, "..2024_v1", filepath.Join(root, "..data"))
	link := symlink(t, filepath.Join(root, "..data"), filepath.Join(root, "manifests"))
	set, err := loadInsecure(t, link)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.EvalSymlinks(v1)
	if set.Dir != want {
		t.Errorf("Dir = %q, want %q", set.Dir, want)
	}
	if set.Objects["Service/a"] == nil {
		t.Errorf("objects = %v", sortedKeys(set.Objects))
	}
	// Errors name files in the resolved directory.
	writeFiles(t, v1, map[string]string{"b.yaml": "kind: [\n"})
	_, err = loadInsecure(t, link)
	fes := FieldErrors(err)
	if len(fes) != 1 || filepath.Dir(fes[0].File) != want {
		t.Errorf("errors = %v", err)
	}
}

// TestLoadIgnoresLeftovers: hidden files, editor backups and swap files,
// package-manager leftovers and non-YAML files are not manifests.
func TestLoadIgnoresLeftovers(t *testing.T) {
	dir := t.TempDir()
	bad := "this is: [not valid\n"
	writeFiles(t, dir, map[string]string{
		"real.yaml":           "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: real}\nspec: {command: [/bin/true]}\n",
		".x.yaml":             bad,
		"x.yaml~":             bad,
		"x.yaml.swp":          bad,
		".x.yaml.swp":         bad,
		"#x.yaml#":            bad,
		"x.yaml.dpkg-old":     bad,
		"x.yaml.dpkg-dist":    bad,
		"x.yaml.rpmnew":       bad,
		"x.bak":               bad,
		"x.yaml.bak":          bad,
		"x.yaml.orig":         bad,
		"x.yaml.tmp":          bad,
		"README.md":           bad,
		"x.json":              bad,
		".hidden.d/1.yaml":    bad,
		"real.d/.1.yaml":      bad,
		"real.d/1.yaml~":      bad,
		"real.d/1.yaml.swp":   bad,
		"real.d/notes.txt":    bad,
		"sub/nested.yaml":     bad,
		"..data/nested.yaml":  bad,
		"real.d/#1.yaml#":     bad,
		"real.d/1.dpkg-new":   bad,
		"real.d/1.yaml.dpkg-": bad,
	})
	set, err := loadInsecure(t, dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !slices.Equal(set.Files, []string{"real.yaml"}) || len(set.Objects) != 1 {
		t.Errorf("Files = %q, objects = %v", set.Files, sortedKeys(set.Objects))
	}
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"a.yaml", true}, {"a.yml", true}, {"a-b_c.d.yaml", true},
		{".a.yaml", false}, {"a.yaml~", false}, {"a.yaml.swp", false}, {"#a.yaml#", false},
		{"a.yaml.dpkg-old", false}, {"a.yaml.dpkg-new", false}, {"a.yaml.rpmsave", false},
		{"a.bak", false}, {"a.yaml.tmp", false}, {"a.yaml.orig", false}, {"a.json", false},
		{"", false}, {"yaml", false},
	} {
		if got := IsManifestName(tc.name); got != tc.want {
			t.Errorf("IsManifestName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestHostSelection: objects are split into Objects and NotSelected by name
// globs and labels; Host.Selects follows the documented rules.
func TestHostSelection(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, filepath.Join("testdata", "render", "hosts.yaml"), filepath.Join(dir, "hosts.yaml"))
	for _, tc := range []struct {
		host        Host
		selected    []string
		notSelected []string
	}{
		{testHost, []string{"Service/by-labels", "Service/by-name", "Timer/by-both"}, []string{"Service/other-host", "Service/other-labels"}},
		{Host{Name: "db-01", Labels: map[string]string{"role": "db"}}, []string{"Service/by-name", "Service/other-host"}, []string{"Service/by-labels", "Service/other-labels", "Timer/by-both"}},
		{Host{Name: "web-01", Labels: map[string]string{"role": "db"}}, []string{"Service/by-name", "Service/other-labels"}, []string{"Service/by-labels", "Service/other-host", "Timer/by-both"}},
		{Host{Name: "web-100", Labels: map[string]string{"role": "web"}}, nil, []string{"Service/by-labels", "Service/by-name", "Service/other-host", "Service/other-labels", "Timer/by-both"}},
	} {
		t.Run(tc.host.Name, func(t *testing.T) {
			set, err := Load(dir, Options{Host: tc.host, Insecure: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := sortedKeys(set.Objects); !slices.Equal(got, tc.selected) && len(got)+len(tc.selected) > 0 {
				t.Errorf("Objects = %q, want %q", got, tc.selected)
			}
			if got := sortedKeys(set.NotSelected); !slices.Equal(got, tc.notSelected) {
				t.Errorf("NotSelected = %q, want %q", got, tc.notSelected)
			}
		})
	}

	for _, tc := range []struct {
		name string
		host Host
		sel  *HostSelector
		want bool
	}{
		{"nil selects all", Host{Name: "x"}, nil, true},
		{"empty selects all", Host{Name: "x"}, &HostSelector{}, true},
		{"glob", Host{Name: "web-01"}, &HostSelector{Names: []string{"web-*"}}, true},
		{"any glob", Host{Name: "db-01"}, &HostSelector{Names: []string{"web-*", "db-0?"}}, true},
		{"no glob", Host{Name: "cache-01"}, &HostSelector{Names: []string{"web-*", "db-*"}}, false},
		{"glob is whole name", Host{Name: "my-web-01"}, &HostSelector{Names: []string{"web-*"}}, false},
		{"class", Host{Name: "web-7"}, &HostSelector{Names: []string{"web-[0-5]"}}, false},
		{"labels all", Host{Labels: map[string]string{"a": "1", "b": "2"}}, &HostSelector{Labels: map[string]string{"a": "1", "b": "2"}}, true},
		{"label differs", Host{Labels: map[string]string{"a": "1", "b": "3"}}, &HostSelector{Labels: map[string]string{"a": "1", "b": "2"}}, false},
		{"label missing", Host{Labels: map[string]string{"a": "1"}}, &HostSelector{Labels: map[string]string{"b": ""}}, false},
		{"both must match", Host{Name: "web-01", Labels: map[string]string{"a": "1"}}, &HostSelector{Names: []string{"db-*"}, Labels: map[string]string{"a": "1"}}, false},
		{"both match", Host{Name: "web-01", Labels: map[string]string{"a": "1"}}, &HostSelector{Names: []string{"web-*"}, Labels: map[string]string{"a": "1"}}, true},
	} {
		if got := tc.host.Selects(tc.sel); got != tc.want {
			t.Errorf("%s: Selects = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLoadHostLabels(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"ok.yaml":       "role: web\nenv: prod\n",
		"bad.yaml":      "role: [web]\n",
		"typed.yaml":    "port: 8080\n",
		"open.yaml":     "role: db\n",
		"none.yaml":     "# no labels on this host\n{}\n",
		"empty.yaml":    "",
		"comments.yaml": "# role: web\n",
		"dashes.yaml":   "---\n",
		"start.yaml":    "---\nrole: web\n",
		"twodocs.yaml":  "role: web\n---\nrole: db\n",
		"trailing.yaml": "role: web\n---\n",
		"merge.yaml":    "base: &b {role: web}\n<<: *b\n",
		"alias.yaml":    "role: &r web\ntier: *r\n",
		"badkey.yaml":   "role: web\nnot a key: x\n",
		"slashkey.yaml": "resil.dev/role: web\n",
		"badval.yaml":   "role: \"web\\ndb\"\n",
		"dup.yaml":      "role: web\nrole: db\n",
		"list.yaml":     "- role\n",
		"syntax.yaml":   "role: web\n  env: [\n",
		"several.yaml":  "role: web\n-x-: 1\nenv: [prod]\n",
	}
	writeFiles(t, dir, files)
	// Checked as a manifest is (the owner is this test's user).
	opts := Options{OwnerUID: os.Geteuid()}
	for _, tc := range []struct {
		file string
		want map[string]string // on success
		err  string            // the error's text, "" for none; FILE is the file's path
	}{
		{file: "ok.yaml", want: map[string]string{"role": "web", "env": "prod"}},
		{file: "missing.yaml"},
		{file: "nodir/missing.yaml"},
		{file: "typed.yaml", want: map[string]string{"port": "8080"}},
		{file: "none.yaml", want: map[string]string{}},
		{file: "start.yaml", want: map[string]string{"role": "web"}},
		{file: "slashkey.yaml", want: map[string]string{"resil.dev/role": "web"}},
		{file: "bad.yaml", err: "host labels: FILE:1:7: role: label value must be a string"},
		// No document is not "no labels": every object selected by label
		// would be pruned at the first instant of `cat > labels.yaml`.
		{file: "empty.yaml", err: "host labels: FILE: no document (the file is empty or holds only comments); write {} for no labels"},
		{file: "comments.yaml", err: "host labels: FILE: no document (the file is empty or holds only comments); write {} for no labels"},
		{file: "dashes.yaml", err: "host labels: FILE: no document (the file is empty or holds only comments); write {} for no labels"},
		{file: "twodocs.yaml", err: "host labels: FILE:3:1: a second YAML document: a labels file is one mapping of labels"},
		{file: "trailing.yaml", err: "host labels: FILE:3:1: a second YAML document: a labels file is one mapping of labels"},
		{file: "merge.yaml", err: "host labels: FILE:1:7: base: label value must be a string\nFILE:2:1: YAML merge keys are not supported in a labels file"},
		{file: "alias.yaml", err: "host labels: FILE:2:1: YAML aliases are not supported in a labels file"},
		{file: "badkey.yaml", err: `host labels: FILE:2:1: invalid label key "not a key"`},
		{file: "badval.yaml", err: `host labels: FILE:1:7: role: control character '\n' not allowed (it could inject a line into a unit file)`},
		{file: "dup.yaml", err: "host labels: FILE:2:1: role: label already defined at line 1"},
		{file: "list.yaml", err: "host labels: FILE:1:1: not a mapping of labels (want key: value lines)"},
		{file: "syntax.yaml", err: "host labels: FILE:2: invalid YAML: mapping values are not allowed in this context"},
		{file: "several.yaml", err: "host labels: FILE:2:1: invalid label key \"-x-\"\nFILE:3:6: env: label value must be a string"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			file := filepath.Join(dir, tc.file)
			m, err := LoadHostLabels(file, opts)
			if tc.err != "" {
				want := strings.ReplaceAll(tc.err, "FILE", file)
				if err == nil || err.Error() != want {
					t.Fatalf("got %v, %v; want error\n%s", m, err, want)
				}
				if m != nil {
					t.Errorf("labels %v with the error", m)
				}
				if fes := FieldErrors(err); len(fes) == 0 || fes[0].File != file {
					t.Errorf("field errors %v, want ones naming %s", fes, file)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(m, tc.want) {
				t.Fatalf("got %#v, %v; want %#v", m, err, tc.want)
			}
		})
	}
	// Labels choose what runs and what is pruned: a file others may
	// write is refused, not read as no labels.
	open := filepath.Join(dir, "open.yaml")
	if err := os.Chmod(open, 0o666); err != nil {
		t.Fatal(err)
	}
	if m, err := LoadHostLabels(open, opts); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("group/other-writable labels file: %v, %v", m, err)
	}
	if m, err := LoadHostLabels(open, Options{Insecure: true}); err != nil || m["role"] != "db" {
		t.Errorf("insecure: %v, %v", m, err)
	}
}

func TestFieldErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    FieldError
		want string
	}{
		{FieldError{File: "a.yaml", Line: 3, Column: 5, Field: "spec.command", Detail: "required"}, "a.yaml:3:5: spec.command: required"},
		{FieldError{File: "a.yaml", Line: 3, Detail: "invalid YAML"}, "a.yaml:3: invalid YAML"},
		{FieldError{File: "a.yaml", Column: 3, Detail: "x"}, "a.yaml: x"},
		{FieldError{File: "a.yaml", Field: "spec", Detail: "required"}, "a.yaml: spec: required"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"restart.limit.burst", "restart.limit.burst"},
		{"command[0]", "command[0]"},
		{"preStart[1].command[0]", "preStart[1].command[0]"},
	} {
		if got := parsePath(tc.in).String(); got != tc.want {
			t.Errorf("parsePath(%q) = %q", tc.in, got)
		}
	}
}

// TestYAMLErrorLines: syntax errors point at the line of the construct that
// is broken (yaml.v3 reports parser errors 0-based; Load corrects that).
func TestYAMLErrorLines(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a: [1, 2\n", "m.yaml:1:9: invalid YAML: did not find expected ',' or ']' at the end of the file (is it cut short?)"}, // found at the end
		{"x: 1\na: [1, 2\n", "m.yaml:2: invalid YAML: did not find expected ',' or ']'"},
		{"x: 1\ny: 2\na: {b: 1\nc: 2\n", "m.yaml:3: invalid YAML: did not find expected ',' or '}'"},
		{"x: 1\ny: 2\n- a\n", "m.yaml:3: invalid YAML: did not find expected key"},
		{"x: 1\ny:\n  - a\n  b: 2\n", "m.yaml:4: invalid YAML: did not find expected '-' indicator"},
		// yaml.v3 names the line where the enclosing block began (6 and
		// 2 here); the error names the line it could not parse.
		{"a: 1\nspec:\n  command: [x]\n  env:\n    A: 1\n  restart:\n    policy: always\n   delay: 5s\n  stop: 1\n", "m.yaml:8: invalid YAML: did not find expected key"},
		{"x: 1\n---\na: 1\nb:\n  c: 1\n d: 2\n", "m.yaml:6: invalid YAML: did not find expected key"},
		{"x: 1\n\ty: 2\n", "m.yaml:2: invalid YAML: found a tab character that violates indentation"},
		{"x: 1\ny: 2\nz: a: b\n", "m.yaml:3: invalid YAML: mapping values are not allowed in this context"},
		{"x: 1\ny: 2\nz: 'abc\n", "m.yaml:3: invalid YAML: found unexpected end of stream"},
		{"x: 1\ny: 2\nz: @x\n", "m.yaml:3: invalid YAML: found character that cannot start any token"},
		{"x: 1\ny: 2\nx: 3\n", "m.yaml:3:1: x: mapping key \"x\" already defined at line 1"},
		{"x: 1\ny: 2\nz: !!int abc\n", "m.yaml:3:4: z: cannot decode !!str `abc` as a !!int"},
		{"x: 1\ny: &a 2\nz: *b\n", "m.yaml: invalid YAML: unknown anchor 'b' referenced"},
		{"x: 1\n---\ny: [\n", "m.yaml:3:5: invalid YAML: did not find expected node content at the end of the file (is it cut short?)"},
		// .inf and .nan have no JSON form: their text, so a number field
		// says it wants a number and a text field takes them as written.
		{"apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: w}\nspec:\n  command: [/bin/true]\n  description: .nan\n  restart: {limit: {burst: .inf, interval: 1s}}\n",
			"m.yaml:7:21: spec.restart.limit.burst: expected an integer, got string"},
		{"? [a]\n: x\n", "m.yaml:1:3: mapping keys must be strings"},
		// A last document empty after "---": a file cut short (or
		// written in two steps), never a file without its last objects.
		{"x: 1\n---\n", "m.yaml:2:1: invalid YAML: the file ends with a document separator and nothing after it (is it cut short?)"},
		{"x: 1\n---\ny: 2\n--- # more\n\n# soon\n", "m.yaml:4:1: invalid YAML: the file ends with a document separator and nothing after it (is it cut short?)"},
	} {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"m.yaml": tc.in})
		_, err := loadInsecure(t, dir)
		if got := strings.TrimSpace(errorLines(t, err, dir)); got != tc.want {
			t.Errorf("%q:\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

// TestValidMemoryMax: the bounds are those of systemd 252
// (systemd-analyze verify with MemoryMax=VALUE).
func TestValidMemoryMax(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"1", true}, {"512M", true}, {"infinity", true}, {"16777215T", true}, {"17179869183G", true},
		{"18446744073709551614", true},
		{"0", false}, {"0K", false}, {"16777216T", false}, {"17179869184G", false}, {"18446744073709551615", false},
		{"99999999999999999999", false}, {"1GB", false}, {"1.5G", false}, {"-1", false}, {"", false}, {"50%", false},
	} {
		if got := validMemoryMax(tc.in); got != tc.want {
			t.Errorf("validMemoryMax(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// Objects leave Load without their YAML parse trees: an agent keeps the
// objects between passes, and the trees only served this load's errors.
func TestLoadReleasesParseTrees(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "web.yaml"), []byte("apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  command: [/bin/true]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "web.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "web.d", "10.yaml"), []byte("spec:\n  environment: {A: b}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := Load(dir, Options{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	o := set.Objects["Service/web"]
	if o == nil || o.Service.Environment["A"] != "b" || len(o.Document()) == 0 {
		t.Fatalf("object %+v", o)
	}
	if o.docs != nil {
		t.Fatal("the object keeps its YAML parse trees after Load")
	}
}

// NAME.d/ is shared by every object named NAME (a Service and the Timer of
// that name): a drop-in that names a kind is for that kind only; one
// without applies to all of them; one naming a kind none has is an error.
func TestDropInKindTargetsOneObject(t *testing.T) {
	const base = "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: web}\nspec: {command: [/bin/sleep, '1000']}\n---\n" +
		"apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: api}\nspec: {command: [/bin/true]}\n---\n" +
		"apiVersion: resil.dev/v1\nkind: Timer\nmetadata: {name: web}\nspec: {schedule: [hourly], service: api}\n"
	for _, tt := range []struct {
		name, dropIn, errs string
		user               string // Service/web's user after the merge
		broken             bool
	}{
		{"kind Service: the Service only", "kind: Service\nspec: {user: nobody}\n", "", "nobody", false},
		{"no kind: every object of the name", "spec: {user: nobody}\n", `web.d/50-local.yaml:1:8: spec.user: only for an inline command; set it on Service "api" instead`, "nobody", true},
		{"a kind none has", "kind: Watchdog\nspec: {user: nobody}\n", `web.d/50-local.yaml:1:1: kind: drop-in for Watchdog "web", but no manifest defines one (Service/web, Timer/web)`, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"web.yaml": base, "web.d/50-local.yaml": tt.dropIn})
			set, err := loadInsecure(t, dir)
			if got := strings.TrimSpace(errorLines(t, err, dir)); got != tt.errs {
				t.Errorf("errors:\n%s\nwant:\n%s", got, tt.errs)
			}
			if set.BrokenNames["web"] != tt.broken {
				t.Errorf("web broken %v, want %v", set.BrokenNames["web"], tt.broken)
			}
			if o := set.Objects["Service/web"]; tt.user != "" && (o == nil || o.Service.User != tt.user) {
				t.Errorf("Service/web: %+v", o)
			}
			if !tt.broken && set.Objects["Timer/web"] == nil {
				t.Errorf("Timer/web missing: %v", sortedKeys(set.Objects))
			}
		})
	}
}

// TestSortByPosition: one file's errors read top to bottom; errors
// without a position come first, and equal positions keep the order they
// were found in.
func TestSortByPosition(t *testing.T) {
	fe := func(line, col int, d string) error { return &FieldError{File: "f", Line: line, Column: col, Detail: d} }
	for _, tc := range []struct {
		name string
		in   []error
		want string
	}{
		{"lines", []error{fe(8, 41, "a"), fe(7, 16, "b")}, "f:7:16: b\nf:8:41: a"},
		{"columns", []error{fe(7, 41, "a"), fe(7, 16, "b"), fe(7, 0, "c")}, "f:7: c\nf:7:16: b\nf:7:41: a"},
		{"no position first, stable", []error{fe(3, 1, "a"), fe(0, 0, "b"), errors.New("c"), fe(0, 0, "d")}, "f: b\nc\nf: d\nf:3:1: a"},
		{"same position stable", []error{fe(2, 2, "x"), fe(1, 1, "y"), fe(2, 2, "z")}, "f:1:1: y\nf:2:2: x\nf:2:2: z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sortByPosition(tc.in)
			if got := listFormat(tc.in); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// A field required under a parent that only a drop-in sets is reported at
// that drop-in, not at the deepest line of the base file; a parent both
// set stays the base file's.
func TestRequiredFieldOfADropInsParent(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"web.yaml":            "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  command: [/bin/sleep, \"100\"]\n  alert: {restarts: 3}\n",
		"web.d/50-local.yaml": "spec:\n  restart:\n    limit: {burst: 5}\n  watchdog: {notifyAccess: all}\n  alert: {command: [/bin/true]}\n",
	})
	_, err := loadInsecure(t, dir)
	want := strings.Join([]string{
		"web.d/50-local.yaml:3:12: spec.restart.limit.interval: required",
		"web.d/50-local.yaml:4:13: spec.watchdog.timeout: required",
		"web.yaml:6:10: spec.alert.within: required",
	}, "\n")
	if got := strings.TrimSpace(errorLines(t, err, dir)); got != want {
		t.Errorf("errors:\n%s\nwant:\n%s", got, want)
	}
}

// A drop-in file of two documents is one source of the object (its unit's
// X-Resil-Source names it once).
func TestMultiDocumentDropInListedOnce(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"web.yaml":        "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  command: [/bin/true]\n",
		"web.d/10.yaml":   "spec: {environment: {A: \"1\"}}\n---\nspec: {environment: {B: \"2\"}}\n",
		"web.d/20-b.yaml": "spec: {description: b}\n",
	})
	set, err := loadInsecure(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	o := set.Objects["Service/web"]
	if got := strings.Join(o.Source.DropIns, " "); got != "web.d/10.yaml web.d/20-b.yaml" {
		t.Errorf("drop-ins %q, want each file once", got)
	}
	if o.Service.Environment["A"] != "1" || o.Service.Environment["B"] != "2" {
		t.Errorf("environment %v, want both documents merged", o.Service.Environment)
	}
}

// Subfolders that are not NAME.d drop-in folders are not read; Load lists
// them (NotRead) so the caller can say so. Hidden ones, drop-in folders
// and files are not listed; a symlink to a folder is.
func TestLoadListsFoldersNotRead(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"web.yaml":            "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  command: [/bin/true]\n",
		"web.d/10.yaml":       "spec:\n  environment: {A: b}\n",
		"team/api.yaml":       "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: api}\nspec:\n  command: [/bin/true]\n",
		".git/config":         "x",
		"archive/old.yaml":    "x",
		"notes.txt":           "x",
		"elsewhere/keep.yaml": "x",
	})
	if err := os.Symlink(filepath.Join(dir, "elsewhere"), filepath.Join(dir, "linked")); err != nil {
		t.Fatal(err)
	}
	set, err := loadInsecure(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(set.NotRead, ","), "archive,elsewhere,linked,team"; got != want {
		t.Errorf("NotRead = %s, want %s", got, want)
	}
	if len(set.Objects) != 1 {
		t.Errorf("objects %v, want only web", set.Sorted())
	}
}

// suggest names the one field a misspelt key is within two edits of (or
// equal to but for case), and nothing for a short key or when two fields
// are as close.
func TestSuggest(t *testing.T) {
	fields := map[string]reflect.Type{"command": nil, "restart": nil, "delay": nil, "policy": nil, "user": nil, "users": nil}
	for _, tc := range []struct{ key, want string }{
		{"comand", ` (did you mean "command"?)`},
		{"Command", ` (did you mean "command"?)`},
		{"restrat", ` (did you mean "restart"?)`}, // two edits
		{"polcy", ` (did you mean "policy"?)`},
		{"usr", ""},         // too short to guess
		{"usere", ""},       // user and users both within two
		{"environment", ""}, // nothing close
	} {
		if got := suggest(tc.key, fields); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}
