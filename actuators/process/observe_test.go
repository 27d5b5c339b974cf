package process

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

func TestObserveListsOwnedFiles(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	h.install(service("listed", desired.ServiceSpec{Command: []string{"true"}}), true)
	os.WriteFile(filepath.Join(h.s.UnitDir(), "foreign.service"), []byte("{}"), 0o644)
	st, err := h.s.Observe(context.Background(), []string{"wanted.service"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range st.Units {
		names = append(names, n)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "listed.service,wanted.service" {
		t.Fatalf("units %v", names)
	}
	if u := st.Units["wanted.service"]; u.LoadState != "not-found" || u.Exists() {
		t.Fatalf("wanted: %+v", u)
	}
	if u := st.Units["listed.service"]; u.UnitFileState != "enabled" || u.Owner != "Service/listed" || u.File == nil {
		t.Fatalf("listed: %+v", u)
	}
	// Removing refuses foreign files and is idempotent for owned ones.
	if _, err := h.a.Apply(context.Background(), actuators.Step{Op: actuators.OpRemoveFile, Path: filepath.Join(h.s.UnitDir(), "foreign.service")}); err == nil {
		t.Fatal("removed a foreign file")
	}
	for i, want := range []actuators.Result{actuators.Changed, actuators.Unchanged} {
		res, err := h.a.Apply(context.Background(), actuators.Step{Op: actuators.OpRemoveFile, Path: filepath.Join(h.s.UnitDir(), "listed.service")})
		if err != nil || res != want {
			t.Fatalf("remove #%d: %v %v", i, res, err)
		}
	}
}
