package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 9 item 1: validate names a file with no objects (the agent keeps
// what it held) and a file still open for writing (not read).
func TestValidateEmptyAndBusyFiles(t *testing.T) {
	dir := dirWith(t, map[string]string{"web.yaml": good, "empty.yaml": "", "comment.yaml": "# later\n---\n", "busy.yaml": good})
	w, err := os.OpenFile(filepath.Join(dir, "busy.yaml"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	out, code := runCLI(t, "validate", "--owner-check", "off", dir)
	for _, want := range []string{
		"busy.yaml: open for writing by some process; not read",
		"comment.yaml: holds no objects",
		"empty.yaml: holds no objects",
		"3 errors; 1 object valid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	// Validating one file reports only that file.
	out, code = runCLI(t, "validate", "--owner-check", "off", filepath.Join(dir, "empty.yaml"))
	if code != 1 || strings.Count(out, "holds no objects") != 1 || strings.Contains(out, "busy.yaml") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// Issue 9 item 6: a FIFO swapped in for a manifest makes validate return
// promptly with an error naming the file (it used to wait for a writer).
func TestValidateFIFOReturns(t *testing.T) {
	dir := dirWith(t, map[string]string{"web.yaml": good})
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "web.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out  string
		code int
	}
	done := make(chan result, 1)
	go func() {
		out, code := runCLI(t, "validate", "--owner-check", "off", dir)
		done <- result{out, code}
	}()
	select {
	case r := <-done:
		if r.code != 1 || !strings.Contains(r.out, filepath.Join(dir, "web.yaml")+": not a regular file") {
			t.Fatalf("exit %d:\n%s", r.code, r.out)
		}
	case <-time.After(time.Minute):
		t.Fatal("validate hangs on a FIFO")
	}
}

// validate -o json: each error has lower-case keys, its position and field
// when known, and the one-line message the text form prints.
func TestValidateJSONErrors(t *testing.T) {
	bad := strings.Replace(good, "kind: Service", "kind: Service\nbogus: 1", 1)
	if bad == good {
		t.Fatal("fixture: good manifest has no 'kind: Service' line")
	}
	dir := dirWith(t, map[string]string{"web.yaml": bad})
	out, code := runCLI(t, "validate", "--owner-check", "off", "-o", "json", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	var rep struct {
		Valid  bool
		Errors []map[string]any `json:"errors"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not json: %v\n%s", err, out)
	}
	if rep.Valid || len(rep.Errors) == 0 {
		t.Fatalf("report %+v", rep)
	}
	e := rep.Errors[0]
	for _, k := range []string{"file", "line", "detail", "message"} {
		if _, ok := e[k]; !ok {
			t.Errorf("error lacks key %q: %v", k, e)
		}
	}
	for k := range e {
		if k != strings.ToLower(k) {
			t.Errorf("key %q is not lower case", k)
		}
	}
	if msg, _ := e["message"].(string); !strings.Contains(msg, "web.yaml:") || !strings.Contains(msg, "bogus") {
		t.Errorf("message %q", msg)
	}
}

// An object whose drop-in is broken is neither counted valid by validate
// nor rendered by render: what runs is its last good version.
func TestBrokenDropInObjectNotValidNorRendered(t *testing.T) {
	dir := dirWith(t, map[string]string{"web.yaml": good})
	if err := os.MkdirAll(filepath.Join(dir, "web.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Refused (writable by others): the object itself loads without it.
	dropIn := filepath.Join(dir, "web.d", "10-local.yaml")
	if err := os.WriteFile(dropIn, []byte("spec: {user: nobody}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dropIn, 0o666); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "validate", "--owner-check", "on", dir)
	if code != 1 || !strings.Contains(out, "1 error; 0 objects valid") {
		t.Errorf("validate: exit %d:\n%s", code, out)
	}
	out, code = runCLIErr(t, "render", "--owner-check", "on", "--manifests", dir)
	if code != 1 || strings.Contains(out, "[Service]") {
		t.Errorf("render: exit %d:\n%s", code, out)
	}
}

// A drop-in file given alone is validated merged into its object (it
// needs no apiVersion, kind or name of its own); its object's problems
// are its problems. With --backend process, what that backend cannot
// honour is an error, as apply there refuses it.
func TestValidateDropInFileAndProcessBackend(t *testing.T) {
	dir := dirWith(t, map[string]string{
		"web.yaml":      good,
		"web.d/10.yaml": "spec: {description: hello}\n",
		"home.yaml":     "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: home}\nspec:\n  command: [/bin/true]\n  systemd: {Service: {WorkingDirectory: \"~\"}}\n",
	})
	if out, code := runCLI(t, "validate", "--owner-check", "off", filepath.Join(dir, "web.d", "10.yaml")); code != 0 || !strings.Contains(out, "1 object valid") {
		t.Errorf("valid drop-in alone: exit %d\n%s", code, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "web.d", "20.yaml"), []byte("spec: {bogus: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "validate", "--owner-check", "off", filepath.Join(dir, "web.d", "20.yaml"))
	if code != 1 || !strings.Contains(out, "web.d/20.yaml:1:8: spec.bogus: unknown field") || strings.Contains(out, "apiVersion") {
		t.Errorf("invalid drop-in alone: exit %d\n%s", code, out)
	}
	if err := os.Remove(filepath.Join(dir, "web.d", "20.yaml")); err != nil {
		t.Fatal(err)
	}
	// Its object's own file broken: that is the drop-in's problem too.
	if err := os.WriteFile(filepath.Join(dir, "web.yaml"), []byte(good+"  bad: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "validate", "--owner-check", "off", filepath.Join(dir, "web.d", "10.yaml")); code != 1 || !strings.Contains(out, "web.yaml:") || !strings.Contains(out, "invalid YAML") {
		t.Errorf("drop-in of a broken manifest: exit %d\n%s", code, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "web.yaml"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	// A file of a folder named *.d that is not a drop-in folder (the
	// manifests directory /etc/resil.d itself) is a manifest.
	etc := filepath.Join(t.TempDir(), "resil.d")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "web.yaml"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "validate", "--owner-check", "off", filepath.Join(etc, "web.yaml")); code != 0 || !strings.Contains(out, "1 object valid") {
		t.Errorf("a manifest in resil.d/: exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "validate", "--owner-check", "off", dir); code != 0 {
		t.Errorf("default validate (any backend): exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "validate", "--owner-check", "off", "--backend", "process", dir)
	if code != 1 || !strings.Contains(out, "home.yaml:6:23: spec.systemd.Service.WorkingDirectory: the process backend cannot honour it: \"~\" is not a clean absolute path") || !strings.Contains(out, "1 object valid") {
		t.Errorf("validate --backend process: exit %d\n%s", code, out)
	}
}

// A subfolder is not read: validate warns (exit 0: the manifests it read
// are valid), in text and JSON; validating one file does not.
func TestValidateWarnsOfFoldersNotRead(t *testing.T) {
	dir := dirWith(t, map[string]string{"web.yaml": good})
	if err := os.MkdirAll(filepath.Join(dir, "team"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "team", "api.yaml"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "validate", "--owner-check", "off", dir)
	if code != 0 || !strings.Contains(out, "warning: "+filepath.Join(dir, "team")+"/ is a folder, not read") || !strings.Contains(out, "1 object valid") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	out, _ = runCLI(t, "validate", "-o", "json", "--owner-check", "off", dir)
	var rep validateReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Warnings) != 1 || !rep.Valid {
		t.Fatalf("json: %v %+v\n%s", err, rep, out)
	}
	if out, code := runCLI(t, "validate", "--owner-check", "off", filepath.Join(dir, "web.yaml")); code != 0 || strings.Contains(out, "warning") {
		t.Fatalf("one file: exit %d\n%s", code, out)
	}
}

// A valid file whose object another, invalid file declares too is not
// valid: the agent holds the object until one of them is fixed or
// removed, so validate of the valid file names the other file's problem
// (QA: "0 objects valid", exit 0), as text and JSON, and the agent says
// which file holds it (it said "a drop-in of it is invalid"; there was
// none).
func TestValidateNamesInvalidFileDeclaringTheSameObject(t *testing.T) {
	e := newProcEnv(t)
	svc := "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: cutx}\nspec:\n  command: [\"/bin/sleep\", \"infinity\"]\n"
	e.write("new.yaml", svc)
	e.write("old.yaml", svc+"  restart: {policy: sometimes}\n")
	newFile := filepath.Join(e.manifests, "new.yaml")
	out, code := runCLI(t, "validate", "--owner-check", "off", newFile)
	want := newFile + ":3:12: metadata.name: Service/cutx will not be applied: old.yaml declares it too and is invalid (" +
		filepath.Join(e.manifests, "old.yaml") + ":6:13: spec.restart.policy:"
	if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, "1 error; 0 objects valid") {
		t.Errorf("validate new.yaml: exit %d, want 1 and %q\n%s", code, want, out)
	}
	out, code = runCLI(t, "validate", "--owner-check", "off", "-o", "json", newFile)
	var rep validateReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.Valid || len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0].Detail, "old.yaml declares it too") {
		t.Errorf("validate -o json new.yaml: exit %d, %v\n%s", code, err, out)
	}
	// The whole directory lists old.yaml's error once, nothing more.
	if out, code := runCLI(t, "validate", "--owner-check", "off", e.manifests); code != 1 || !strings.Contains(out, "1 error; 0 objects valid") {
		t.Errorf("validate dir: exit %d\n%s", code, out)
	}
	out, code = e.cli("apply")
	if code != 1 || !strings.Contains(out, "Service/cutx: old.yaml declares it too and is invalid;") || strings.Contains(out, "drop-in") {
		t.Errorf("apply: exit %d\n%s", code, out)
	}
}
