package desired

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTakeOver(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		valid      bool
		takesOver  bool
	}{
		{name: "default", spec: "  command: [/bin/true]\n", valid: true},
		{name: "service", spec: "  takeOver: true\n  command: [/bin/true]\n", valid: true, takesOver: true},
		{name: "explicit false", spec: "  takeOver: false\n  command: [/bin/true]\n", valid: true},
		{name: "not a bool", spec: "  takeOver: sometimes\n  command: [/bin/true]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			doc := "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: ssh}\nspec:\n" + tc.spec
			if err := os.WriteFile(filepath.Join(dir, "ssh.yaml"), []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			set, err := Load(dir, Options{Insecure: true})
			if !tc.valid {
				if err == nil {
					t.Fatalf("loaded %q", tc.spec)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			o := set.Sorted()[0]
			if o.TakesOver() != tc.takesOver {
				t.Errorf("TakesOver() = %v, want %v", o.TakesOver(), tc.takesOver)
			}
		})
	}
	timer := &Object{Kind: KindTimer, Timer: &TimerSpec{TakeOver: true}}
	if !timer.TakesOver() {
		t.Error("timer takeOver ignored")
	}
	if (&Object{Kind: KindWatchdog, Watchdog: &WatchdogSpec{}}).TakesOver() {
		t.Error("a Watchdog takes nothing over")
	}
}
