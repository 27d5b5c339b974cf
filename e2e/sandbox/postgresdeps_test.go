package sandbox

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestPostgresDepsScript runs scripts/test-deps.sh with postgresql missing,
// as root, against fake dpkg-query, id and apt-get: postgresql-common is
// installed first, create_main_cluster is set to false before postgresql is
// installed and put back as it was afterwards, a policy-rc.d that exits 101
// is in place during both installs (so no service starts), and the previous
// policy-rc.d (none, or another one) is back afterwards. What a run killed
// with -9 left behind (its marked policy-rc.d, the saved policy-rc.d and
// createcluster.conf) is put back by the next run, even one with nothing
// to install.
func TestPostgresDepsScript(t *testing.T) {
	scripts, err := filepath.Abs(filepath.Join("..", "..", "scripts"))
	if err != nil {
		t.Fatal(err)
	}
	sh := RequireProgram(t, "sh", "dash")
	const (
		fakeConf = "# comment\n#create_main_cluster = true\n" // as the fake postgresql-common installs it
		other    = "#!/bin/sh\nexit 0\n"
		ours     = "#!/bin/sh\n# resil postgres-deps: temporary, start no service while installing\nexit 101\n"
	)
	for _, tc := range []struct {
		name, policy, missing, wantApt string
		saved, conf, confSaved         string // leftovers of a killed run
		wantPolicy, wantConf           string
		direct                         bool // run postgres-deps.sh itself (test-deps.sh runs it only when postgresql is missing)
	}{
		{name: "no policy-rc.d", missing: "postgresql", wantConf: fakeConf,
			wantApt: "update -qq [exit 101]\ninstall -y -qq --no-install-recommends postgresql-common [exit 101]\n" +
				"install -y -qq --no-install-recommends postgresql [exit 101]\ncreate_main_cluster = false\n"},
		{name: "another policy-rc.d", policy: other, missing: "curl postgresql", wantPolicy: other, wantConf: fakeConf,
			wantApt: "update -qq [exit 0]\ninstall -y -qq --no-install-recommends curl [exit 0]\n" +
				"update -qq [exit 101]\ninstall -y -qq --no-install-recommends postgresql-common [exit 101]\n" +
				"install -y -qq --no-install-recommends postgresql [exit 101]\ncreate_main_cluster = false\n"},
		{name: "present"},
		{name: "leftover policy-rc.d", policy: ours, missing: "postgresql", wantConf: fakeConf,
			wantApt: "update -qq [exit 101]\ninstall -y -qq --no-install-recommends postgresql-common [exit 101]\n" +
				"install -y -qq --no-install-recommends postgresql [exit 101]\ncreate_main_cluster = false\n"},
		{name: "leftovers, present", policy: ours, saved: other, conf: "create_main_cluster = false\n", confSaved: "create_main_cluster = true\n",
			wantPolicy: other, wantConf: "create_main_cluster = true\n", direct: true},
		{name: "leftover policy-rc.d, present", policy: ours, direct: true},
		{name: "killed between the moves, present", saved: other, wantPolicy: other, direct: true},
		{name: "another exit 101 policy-rc.d kept, present", policy: "#!/bin/sh\nexit 101\n", wantPolicy: "#!/bin/sh\nexit 101\n", direct: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := t.TempDir()
			log, policy, conf := filepath.Join(bin, "apt.log"), filepath.Join(bin, "policy-rc.d"), filepath.Join(bin, "createcluster.conf")
			for path, content := range map[string]string{policy: tc.policy, policy + ".resil-saved": tc.saved, conf: tc.conf, conf + ".resil-saved": tc.confSaved} {
				if content == "" {
					continue
				}
				if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			fakes := map[string]string{
				"dpkg-query": "for p; do :; done\ncase \" $MISSING \" in *\" $p \"*) exit 1;; esac\nprintf installed\n",
				"id":         "echo 0\n",
				// Logs the call with the policy in force and, when
				// postgresql is installed, the cluster setting its
				// postinst reads.
				"apt-get": `echo "$* [$(tail -n1 "$RESIL_POLICY_RC_D" 2>/dev/null || echo none)]" >>"$APT_LOG"
case "$*" in
*" postgresql-common") printf '# comment\n#create_main_cluster = true\n' >"$RESIL_CREATECLUSTER_CONF" ;;
*" postgresql") grep create_main_cluster "$RESIL_CREATECLUSTER_CONF" >>"$APT_LOG" ;;
esac
`,
			}
			for name, body := range fakes {
				if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			script := filepath.Join(scripts, "test-deps.sh")
			if tc.direct {
				script = filepath.Join(scripts, "postgres-deps.sh")
			}
			cmd := exec.Command(sh, script)
			cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "MISSING=" + tc.missing, "APT_LOG=" + log,
				"RESIL_POLICY_RC_D=" + policy, "RESIL_CREATECLUSTER_CONF=" + conf}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", filepath.Base(script), err, out)
			}
			apt, _ := os.ReadFile(log)
			if string(apt) != tc.wantApt {
				t.Errorf("apt-get calls:\n%s\nwant\n%s", apt, tc.wantApt)
			}
			for path, want := range map[string]string{policy: tc.wantPolicy, conf: tc.wantConf, policy + ".resil-saved": "", conf + ".resil-saved": ""} {
				got, err := os.ReadFile(path)
				switch {
				case want == "" && !os.IsNotExist(err):
					t.Errorf("%s left behind: %q %v", filepath.Base(path), got, err)
				case want != "" && string(got) != want:
					t.Errorf("%s: %q %v, want %q", filepath.Base(path), got, err, want)
				}
			}
		})
	}
}
