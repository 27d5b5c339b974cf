package main

import (
	"fmt"
	"os"
	"time"
)

var phase0 = time.Now()

func phase(s string) {
	if os.Getenv("RESIL_PHASE") != "" {
		fmt.Fprintf(os.Stderr, "%6.2fms %s\n", float64(time.Since(phase0).Microseconds())/1000, s)
	}
}
