package main

import (
	"net/http"
	"net/http/pprof"
	"os"
)

// debugPprofEnv turns on Go's profiling handlers on the metrics listener
// (--metrics-addr) when set to "1": /debug/pprof/heap?gc=1 and the rest of
// net/http/pprof. For measurement only (e2e/bench/README.md uses it to say
// where run's memory goes); off by default, no flag.
const debugPprofEnv = "RESIL_DEBUG_PPROF"

// addDebugHandlers adds the pprof handlers to mux when debugPprofEnv=1.
func addDebugHandlers(mux *http.ServeMux) {
	if os.Getenv(debugPprofEnv) != "1" {
		return
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
