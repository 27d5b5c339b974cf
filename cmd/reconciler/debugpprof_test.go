package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestDebugHandlers: the pprof handlers are on the metrics mux only when
// RESIL_DEBUG_PPROF=1.
func TestDebugHandlers(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want int
	}{
		{"", http.StatusNotFound},
		{"0", http.StatusNotFound},
		{"1", http.StatusOK},
	} {
		t.Run("env="+tc.env, func(t *testing.T) {
			t.Setenv(debugPprofEnv, tc.env)
			h := newMetrics(0, nil).handler()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/heap?debug=1", nil))
			if rec.Code != tc.want {
				t.Errorf("GET /debug/pprof/heap with %s=%q: %d, want %d", debugPprofEnv, tc.env, rec.Code, tc.want)
			}
		})
	}
}
