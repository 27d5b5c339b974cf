package desired

import (
	"strings"
	"testing"
)

func TestDecodeConfig(t *testing.T) {
	type cfg struct {
		Repo     string   `json:"repo"`
		Paths    []string `json:"paths"`
		Interval string   `json:"fetchInterval"`
		Force    bool     `json:"allowForcePush"`
	}
	for _, tc := range []struct {
		name, in, want string
	}{
		{"valid", "repo: x\npaths: [a, b]\n", ""},
		{"empty", "# nothing yet\n", ""},
		{"unknown field, typos", "repo: x\nreop: y\nRepo: z\n", "c.yaml:2:1: reop: unknown field (did you mean \"repo\"?)\nc.yaml:3:1: Repo: unknown field (did you mean \"repo\"?)"},
		{"type error", "repo: x\npaths: a\n", "c.yaml:2:1: paths: expected a list, got string"},
		{"bool", "allowForcePush: sometimes\n", "c.yaml:1:1: allowForcePush: expected true or false, got string"},
		{"syntax", "repo: x\n  - b: [\n", "c.yaml:"},
		{"two documents", "repo: x\n---\nrepo: y\n", "c.yaml:3:1: want one YAML document, found a second"},
		{"duplicate key", "repo: x\nrepo: y\n", "c.yaml:2:1: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c cfg
			err := DecodeConfig("c.yaml", []byte(tc.in), &c)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Fatalf("error %v, want prefix %q", err, tc.want)
			}
		})
	}
}
