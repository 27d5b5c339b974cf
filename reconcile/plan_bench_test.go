package reconcile

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ownmark"
	"resil.dev/resil/observed"
)

// convergedInput is the planner's input for n running services whose unit
// files are what their manifests render: a converged host, the plan of
// every pass that finds nothing to do (and of apply's read after its steps).
func convergedInput(b *testing.B, n int) Input {
	b.Helper()
	dir := b.TempDir()
	for i := range n {
		name := fmt.Sprintf("b%04d", i)
		m := "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: " + name + "}\nspec:\n  command: [\"/bin/sleep\", \"infinity\"]\n" +
			"  restart: {policy: always, delay: 100ms}\n  environment: {GEN: \"v-0-x\"}\n"
		if err := os.WriteFile(filepath.Join(dir, name+".yaml"), []byte(m), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	set, err := desired.Load(dir, desired.Options{Insecure: true})
	if err != nil {
		b.Fatal(err)
	}
	in := Input{Files: map[string][]desired.UnitFile{}, UnitDir: unitDir, ManagerDir: "/etc/systemd/system.conf.d",
		Prune: true, Protected: map[string]bool{}, BrokenFiles: map[string]bool{}}
	st := &observed.State{Backend: "systemd", UnitDir: unitDir, Units: map[string]*observed.Unit{}}
	for _, o := range set.Sorted() {
		fs, err := desired.Render(o)
		if err != nil {
			b.Fatal(err)
		}
		in.Objects = append(in.Objects, o)
		in.Files[o.ID()] = fs
		for _, f := range fs {
			owner, _ := ownmark.IsOwned(f.Data)
			st.Units[f.Name] = &observed.Unit{Name: f.Name, Path: filepath.Join(unitDir, f.Name), File: f.Data, Owner: owner,
				LoadState: "loaded", ActiveState: "active", SubState: "running", UnitFileState: "enabled",
				InstallLinks: []string{"multi-user.target.wants"}, InstallLinksKnown: true, MainPID: uint32(1000 + len(st.Units))}
		}
	}
	in.Observed = st
	if p := Compute(in); len(p.Steps) != 0 {
		b.Fatalf("not converged: %v", p.Steps)
	}
	return in
}

// BenchmarkComputeConverged1000 is the planner alone on a converged host of
// 1000 services (no I/O).
func BenchmarkComputeConverged1000(b *testing.B) {
	in := convergedInput(b, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		Compute(in)
	}
}
