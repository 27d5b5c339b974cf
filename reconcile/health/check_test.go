package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"resil.dev/resil/desired"
	"resil.dev/resil/e2e/sandbox"
)

func TestCheckers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
		case "/header":
			if r.Header.Get("X-Probe") != "yes" {
				w.WriteHeader(http.StatusForbidden)
			}
		case "/redirect":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/slow":
			time.Sleep(2 * time.Second)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()
	open, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")

	tests := []struct {
		name    string
		probe   desired.Probe
		timeout time.Duration
		wantErr string // "" passes
	}{
		{"http ok", desired.Probe{HTTP: &desired.HTTPProbe{URL: srv.URL + "/ok"}}, time.Second, ""},
		{"http 503", desired.Probe{HTTP: &desired.HTTPProbe{URL: srv.URL + "/down"}}, time.Second, "status 503"},
		{"http status range", desired.Probe{HTTP: &desired.HTTPProbe{URL: srv.URL + "/down", Status: "500-599"}}, time.Second, ""},
		{"http redirect is an answer", desired.Probe{HTTP: &desired.HTTPProbe{URL: srv.URL + "/redirect", Status: "302"}}, time.Second, ""},
		{"http header sent", desired.Probe{HTTP: &desired.HTTPProbe{URL: srv.URL + "/header", Headers: map[string]string{"X-Probe": "yes"}}}, time.Second, ""},
		{"http header missing", desired.Probe{HTTP: &desired.HTTPProbe{URL: srv.URL + "/header"}}, time.Second, "status 403"},
		{"http timeout", desired.Probe{HTTP: &desired.HTTPProbe{URL: srv.URL + "/slow"}}, 100 * time.Millisecond, "deadline exceeded"},
		{"tcp open", desired.Probe{TCP: open.Addr().String()}, time.Second, ""},
		{"tcp refused", desired.Probe{TCP: closedAddr}, time.Second, "refused"},
		{"exec passes", desired.Probe{Exec: []string{"/bin/true"}}, time.Second, ""},
		{"exec fails", desired.Probe{Exec: []string{"/bin/sh", "-c", "echo broken; exit 3"}}, time.Second, "exit status 3"},
		{"exec timeout kills the group", desired.Probe{Exec: []string{"/bin/sh", "-c", "sleep 30 & echo $! > " + pidFile + "; wait"}}, 300 * time.Millisecond, "timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewChecker(tt.probe.Effective(desired.ProbeLiveness), Identity{})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			err = c.Check(ctx)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("want pass, got %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("want error containing %q, got %v", tt.wantErr, err)
			}
		})
	}
	// The timed-out exec probe's child went with its group.
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(b))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat("/proc/" + pid); os.IsNotExist(err) {
			break
		}
		if st, _ := os.ReadFile("/proc/" + pid + "/stat"); strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %s of a timed-out exec probe still runs", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExecProbeRunsAsUser(t *testing.T) {
	sandbox.RequireRoot(t, "to run an exec probe as another user")
	c, err := NewChecker(desired.Probe{Exec: []string{"/bin/sh", "-c", `[ "$(id -u)" = 65534 ] || { id; exit 1; }`}}, Identity{User: "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(context.Background()); err != nil {
		t.Fatalf("exec probe as nobody: %v", err)
	}
}
