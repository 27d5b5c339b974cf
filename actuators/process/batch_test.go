package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

// ApplyBatch answers each step as Apply would alone: writes, enables and
// starts of several units at once, a foreign file failing only its own
// write, and a second batch changing nothing.
func TestApplyBatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "", Options{})
	h.run()
	ctx := context.Background()
	var writes, enables, starts []actuators.Step
	for i := 0; i < 12; i++ {
		o := service(fmt.Sprintf("b%02d", i), desired.ServiceSpec{Command: []string{"/bin/sleep", "infinity"}})
		o.APIVersion = desired.APIVersion
		files, err := Render(o)
		if err != nil {
			t.Fatal(err)
		}
		f := files[0]
		writes = append(writes, actuators.Step{Op: actuators.OpWriteFile, Unit: f.Name, Path: filepath.Join(h.s.UnitDir(), f.Name), Data: f.Data})
		enables = append(enables, actuators.Step{Op: actuators.OpEnable, Unit: f.Name})
		starts = append(starts, actuators.Step{Op: actuators.OpStart, Unit: f.Name})
	}
	if err := os.MkdirAll(h.s.UnitDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(h.s.UnitDir(), "b05.service")
	if err := os.WriteFile(foreign, []byte("[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(what string, steps []actuators.Step, want actuators.Result, bad string) {
		t.Helper()
		res, errs := h.a.ApplyBatch(ctx, steps)
		if len(res) != len(steps) || len(errs) != len(steps) {
			t.Fatalf("%s: %d results, %d errors for %d steps", what, len(res), len(errs), len(steps))
		}
		for i, s := range steps {
			if s.Unit == bad {
				if errs[i] == nil || !strings.Contains(errs[i].Error(), "not owned") {
					t.Errorf("%s %s: %v, want the foreign file refused", what, s.Unit, errs[i])
				}
				continue
			}
			if errs[i] != nil || res[i] != want {
				t.Errorf("%s %s: %s, %v; want %s", what, s.Unit, res[i], errs[i], want)
			}
		}
	}
	check("write", writes, actuators.Changed, "b05.service")
	check("write again", writes, actuators.Unchanged, "b05.service")
	if err := os.Remove(foreign); err != nil {
		t.Fatal(err)
	}
	check("write after the foreign file went", writes[5:6], actuators.Changed, "")
	if _, err := h.a.Apply(ctx, actuators.Step{Op: actuators.OpDaemonReload}); err != nil {
		t.Fatal(err)
	}
	check("enable", enables, actuators.Changed, "")
	check("start", starts, actuators.Changed, "")
	for _, s := range starts {
		if u := h.unit(s.Unit); !isActive(u) || u.MainPID == 0 {
			t.Errorf("%s after the start batch: %+v", s.Unit, u)
		}
	}
	check("start again", starts, actuators.Unchanged, "")
}
