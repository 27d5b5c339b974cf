package ownmark

import (
	"reflect"
	"strings"
	"testing"
)

func TestMarks(t *testing.T) {
	body := "[Unit]\nX-Resil-Object=Service/web\nX-Resil-Source=web.yaml web.d/10.yaml\n\n[Service]\nExecStart=/bin/true\n"
	stamped := body[:len("[Unit]\n")] + KeyHash + "=" + Hash([]byte(body)) + "\n" + body[len("[Unit]\n"):]
	since := strings.Replace(stamped, "\n[Service]", "\n"+KeyProcessSince+"=1700000000000000\n[Service]", 1)
	short := strings.TrimSuffix(body, "\n")
	stampedShort := short[:len("[Unit]\n")] + KeyHash + "=" + Hash([]byte(short)) + "\n" + short[len("[Unit]\n"):]
	for _, tc := range []struct {
		name   string
		data   string
		owner  string
		owned  bool
		source []string
		intact bool
	}{
		{"stamped unit", stamped, "Service/web", true, []string{"web.yaml", "web.d/10.yaml"}, true},
		{"stamped, with its process-since line", since, "Service/web", true, []string{"web.yaml", "web.d/10.yaml"}, true},
		{"stamped, no final newline", stampedShort, "Service/web", true, []string{"web.yaml", "web.d/10.yaml"}, true},
		{"no final newline, hash of the body with one", stampedShort + "\n", "Service/web", true, []string{"web.yaml", "web.d/10.yaml"}, false},
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

func TestProcessSince(t *testing.T) {
	body := "[Unit]\nDescription=x\nX-Resil-Object=Service/x\n"
	file := []byte(body + KeyHash + "=" + Hash([]byte(body+"\n[Service]\nExecStart=/bin/true\n")) + "\n\n[Service]\nExecStart=/bin/true\n")
	if _, intact := HashOf(file); !intact {
		t.Fatal("fixture not intact")
	}
	if _, ok := ProcessSince(file); ok {
		t.Fatal("marker found in a file without one")
	}
	marked := WithProcessSince(file, 1733000000123456)
	if got, ok := ProcessSince(marked); !ok || got != 1733000000123456 {
		t.Fatalf("ProcessSince = %d, %v", got, ok)
	}
	if _, intact := HashOf(marked); !intact {
		t.Fatalf("the marker broke the hash:\n%s", marked)
	}
	if !strings.Contains(string(marked), KeyHash+"=sha256:") || strings.Index(string(marked), KeyProcessSince) < strings.Index(string(marked), KeyHash) {
		t.Fatalf("marker not after the hash line:\n%s", marked)
	}
	if again := WithProcessSince(marked, 42); strings.Count(string(again), KeyProcessSince) != 1 {
		t.Fatalf("marker twice:\n%s", again)
	}
	if got := WithoutProcessSince(marked); string(got) != string(file) {
		t.Fatalf("WithoutProcessSince:\n%s\nwant:\n%s", got, file)
	}
	if got := WithProcessSince([]byte("[Unit]\n"), 1); string(got) != "[Unit]\n" {
		t.Fatalf("a file without a hash line got a marker: %q", got)
	}
	// A hand edit of the marker's neighbours still breaks the hash.
	edited := []byte(strings.Replace(string(marked), "Description=x", "Description=y", 1))
	if _, intact := HashOf(edited); intact {
		t.Fatal("edited file reads as intact")
	}
}
