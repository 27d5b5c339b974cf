package ownmark

import (
	"reflect"
	"testing"
)

func TestMarks(t *testing.T) {
	body := "[Unit]\nX-Resil-Object=Service/web\nX-Resil-Source=web.yaml web.d/10.yaml\n\n[Service]\nExecStart=/bin/true\n"
	stamped := body[:len("[Unit]\n")] + KeyHash + "=" + Hash([]byte(body)) + "\n" + body[len("[Unit]\n"):]
	for _, tc := range []struct {
		name   string
		data   string
		owner  string
		owned  bool
		source []string
		intact bool
	}{
		{"stamped unit", stamped, "Service/web", true, []string{"web.yaml", "web.d/10.yaml"}, true},
		{"edited unit", stamped + "# edited\n", "Service/web", true, []string{"web.yaml", "web.d/10.yaml"}, false},
		{"no hash", body, "Service/web", true, []string{"web.yaml", "web.d/10.yaml"}, false},
		{"manager drop-in", "# X-Resil-Object=Watchdog/host\n[Manager]\nRuntimeWatchdogSec=30s\n", "Watchdog/host", true, nil, false},
		{"foreign", "[Service]\nExecStart=/bin/true\n", "", false, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			owner, owned := IsOwned([]byte(tc.data))
			if owner != tc.owner || owned != tc.owned {
				t.Errorf("IsOwned = %q, %v; want %q, %v", owner, owned, tc.owner, tc.owned)
			}
			if got := SourceOf([]byte(tc.data)); !reflect.DeepEqual(got, tc.source) {
				t.Errorf("SourceOf = %q, want %q", got, tc.source)
			}
			if _, intact := HashOf([]byte(tc.data)); intact != tc.intact {
				t.Errorf("HashOf intact = %v, want %v", intact, tc.intact)
			}
		})
	}
}
