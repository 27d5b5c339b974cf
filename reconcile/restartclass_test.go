package reconcile

import (
	"reflect"
	"testing"
)

func TestClassifyUnitChange(t *testing.T) {
	const base = `# Managed by resil
[Unit]
Description=web
After=network.target
StartLimitIntervalSec=10s
StartLimitBurst=5

[Service]
ExecStart=/bin/sleep 1000
Environment=A=1
Restart=always
RestartSec=100ms

[Install]
WantedBy=multi-user.target
`
	tests := []struct {
		name, old, new string
		want           UnitChange
	}{
		{"same", base, base, UnitChange{}},
		{"comment only", base, "# Managed by resil (v2)\n" + base[len("# Managed by resil\n"):], UnitChange{}},
		{"RestartSec", base, replace(base, "RestartSec=100ms", "RestartSec=2s"), UnitChange{Keys: []string{"RestartSec"}}},
		{"description and ordering", base, replace(replace(base, "Description=web", "Description=the web"), "After=network.target", "After=network-online.target"),
			UnitChange{Keys: []string{"After", "Description"}}},
		{"start limit", base, replace(base, "StartLimitBurst=5", "StartLimitBurst=50"), UnitChange{Keys: []string{"StartLimitBurst"}}},
		{"install", base, replace(base, "WantedBy=multi-user.target", "WantedBy=default.target"), UnitChange{Keys: []string{"WantedBy"}}},
		{"command", base, replace(base, "ExecStart=/bin/sleep 1000", "ExecStart=/bin/sleep 2000"), UnitChange{Restart: true, Keys: []string{"ExecStart"}}},
		{"environment and restart policy", base, replace(replace(base, "Environment=A=1", "Environment=A=2"), "Restart=always", "Restart=on-failure"),
			UnitChange{Restart: true, Keys: []string{"Environment"}}},
		{"added user", base, replace(base, "[Service]\n", "[Service]\nUser=nobody\n"), UnitChange{Restart: true, Keys: []string{"User"}}},
		{"removed setting", base, replace(base, "Environment=A=1\n", ""), UnitChange{Restart: true, Keys: []string{"Environment"}}},
		{"moved to another section", base, replace(replace(base, "Restart=always\n", ""), "[Unit]\n", "[Unit]\nRestart=always\n"),
			UnitChange{Restart: true, Keys: []string{"Restart"}}},
		{"continuation line", base, replace(base, "ExecStart=/bin/sleep 1000", "ExecStart=/bin/sleep\\\n1000"), UnitChange{}},
		{"continuation changes spacing", base, replace(base, "ExecStart=/bin/sleep 1000", "ExecStart=/bin/sleep \\\n1000"), UnitChange{Restart: true, Keys: []string{"ExecStart"}}},
		{"garbage line", base, replace(base, "Restart=always", "Restart=always\nnot a setting"), UnitChange{Restart: true, Keys: []string{"[Service] line"}}},
		{"unknown key", base, replace(base, "[Service]\n", "[Service]\nFooBar=1\n"), UnitChange{Restart: true, Keys: []string{"FooBar"}}},
		{"new file", "", base, UnitChange{Restart: true, Keys: []string{"Environment", "ExecStart"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ClassifyUnitChange([]byte(tt.old), []byte(tt.new))
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestUnitChangeReason(t *testing.T) {
	tests := []struct {
		c    UnitChange
		want string
	}{
		{UnitChange{Keys: []string{"RestartSec"}}, "reload only: RestartSec changed"},
		{UnitChange{Restart: true, Keys: []string{"Environment", "ExecStart"}}, "unit file changed: Environment, ExecStart"},
		{UnitChange{}, "unit file changed: comments only"},
	}
	for _, tt := range tests {
		if got := tt.c.Reason(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.c, got, tt.want)
		}
	}
}

func replace(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	panic("replace: " + old + " not found")
}
