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
// installed, a policy-rc.d that exits 101 is in place during both installs
// (so no service starts), and the previous policy-rc.d (none, or another
// one) is back afterwards.
func TestPostgresDepsScript(t *testing.T) {
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "test-deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	sh := RequireProgram(t, "sh", "dash")
	for _, tc := range []struct {
		name, policy, missing, wantApt string
	}{
		{"no policy-rc.d", "", "postgresql",
			"update -qq [exit 101]\ninstall -y -qq --no-install-recommends postgresql-common [exit 101]\n" +
				"install -y -qq --no-install-recommends postgresql [exit 101]\ncreate_main_cluster = false\n"},
		{"another policy-rc.d", "#!/bin/sh\nexit 0\n", "curl postgresql",
			"update -qq [exit 0]\ninstall -y -qq --no-install-recommends curl [exit 0]\n" +
				"update -qq [exit 101]\ninstall -y -qq --no-install-recommends postgresql-common [exit 101]\n" +
				"install -y -qq --no-install-recommends postgresql [exit 101]\ncreate_main_cluster = false\n"},
		{"present", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := t.TempDir()
			log, policy, conf := filepath.Join(bin, "apt.log"), filepath.Join(bin, "policy-rc.d"), filepath.Join(bin, "createcluster.conf")
			if tc.policy != "" {
				if err := os.WriteFile(policy, []byte(tc.policy), 0o755); err != nil {
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
			cmd := exec.Command(sh, script)
			cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "MISSING=" + tc.missing, "APT_LOG=" + log,
				"RESIL_POLICY_RC_D=" + policy, "RESIL_CREATECLUSTER_CONF=" + conf}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("test-deps.sh: %v\n%s", err, out)
			}
			apt, _ := os.ReadFile(log)
			if string(apt) != tc.wantApt {
				t.Errorf("apt-get calls:\n%s\nwant\n%s", apt, tc.wantApt)
			}
			left, err := os.ReadFile(policy)
			switch {
			case tc.policy == "" && !os.IsNotExist(err):
				t.Errorf("policy-rc.d left behind: %q %v", left, err)
			case tc.policy != "" && string(left) != tc.policy:
				t.Errorf("policy-rc.d not restored: %q %v", left, err)
			}
		})
	}
}
