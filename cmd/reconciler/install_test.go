package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"

	"resil.dev/resil/internal/ownmark"
)

func TestAgentUnit(t *testing.T) {
	p := agentUnitParams{Version: "v1", Name: AgentUnit, Binary: "/usr/local/bin/reconciler", Manifests: "/etc/resil.d",
		StateDir: "/var/lib/resil", UnitDir: "/etc/systemd/system", ManagerDir: "/etc/systemd/system.conf.d",
		WatchdogSec: "120s", RestartSec: "2s", StartTimeout: "300s", Resync: "5m0s"}
	data, err := renderAgentUnit(p)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := renderAgentUnit(p); !bytes.Equal(again, data) {
		t.Errorf("not deterministic")
	}
	if _, owned := ownmark.IsOwned(data); owned {
		t.Errorf("the agent's unit carries the ownership marker: the agent would prune itself")
	}
	opts, err := unit.DeserializeOptions(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range opts {
		got[o.Section+"."+o.Name] = o.Value
	}
	for k, v := range map[string]string{
		"Service.Type": "notify", "Service.WatchdogSec": "120s", "Service.Restart": "always", "Service.NotifyAccess": "main",
		"Service.ProtectSystem": "strict", "Service.ProtectHome": "yes", "Service.NoNewPrivileges": "yes",
		"Service.ReadWritePaths":     "/etc/systemd/system /etc/systemd/system.conf.d /var/lib/resil -/var/lib/systemd/timers /run",
		"Service.ExecStart":          "/usr/local/bin/reconciler run --backend systemd --manifests /etc/resil.d --state-dir /var/lib/resil --unit-dir /etc/systemd/system --manager-dir /etc/systemd/system.conf.d --resync 5m0s",
		"Unit.StartLimitIntervalSec": "0", "Install.WantedBy": "multi-user.target",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestInstallDryRunChangesNothing(t *testing.T) {
	root := t.TempDir()
	bin := filepath.Join(root, "src-reconciler")
	if err := os.WriteFile(bin, []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	dirs := map[string]string{}
	for _, d := range []string{"manifests", "state", "units", "conf", "bin"} {
		dirs[d] = filepath.Join(root, d)
	}
	out, code := runCLI(t, "install", "--dry-run", "--binary", bin, "--manifests", dirs["manifests"], "--state-dir", dirs["state"],
		"--unit-dir", dirs["units"], "--manager-dir", dirs["conf"], "--bin-dir", dirs["bin"])
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{"would create directory " + dirs["manifests"] + " (0755, root)",
		"would write " + filepath.Join(dirs["bin"], "reconciler"), "would write " + filepath.Join(dirs["units"], AgentUnit),
		"ExecStart=" + filepath.Join(dirs["bin"], "reconciler") + " run", "would daemon-reload", "would enable " + AgentUnit} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q:\n%s", want, out)
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("dry run created %s", d)
		}
	}
	if out, code := runCLI(t, "install", "--dry-run", "--manifests", "relative"); code != 2 {
		t.Errorf("relative path: exit %d %s", code, out)
	}
}
