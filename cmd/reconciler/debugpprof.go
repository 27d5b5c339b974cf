package main

import (
	"net/http"
	"net/http/pprof"
	"os"
	rpprof "runtime/pprof"
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

// cpuProfileEnv names a file that receives a CPU profile of the whole
// command (e.g. one `apply` or `diff`) when set. For measurement only
// (the issue-12 profiles of a converged apply); off by default, no flag.
const cpuProfileEnv = "RESIL_CPUPROFILE"

// startCPUProfile starts the CPU profile cpuProfileEnv asks for and
// returns the function that stops it and closes its file (a no-op when
// the variable is unset or the file cannot be created).
func startCPUProfile() (stop func()) {
	path := os.Getenv(cpuProfileEnv)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		return func() {}
	}
	if err := rpprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() {
		rpprof.StopCPUProfile()
		f.Close()
	}
}
