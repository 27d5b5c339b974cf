package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"resil.dev/resil/reconcile"
)

// timerNotes describes last and next runs of the timers in the plan's
// observed state, for diff output when nothing changes.
func timerNotes(res reconcile.Result) []string {
	var out []string
	names := make([]string, 0, len(res.Observed.Units))
	for n := range res.Observed.Units {
		if strings.HasSuffix(n, ".timer") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		u := res.Observed.Units[n]
		if u.File == nil {
			continue
		}
		out = append(out, fmt.Sprintf("  timer %s: last %s, next %s", n, usec(u.LastTriggerUSec), usec(u.NextElapseUSecRealtime)))
	}
	if len(out) > 0 {
		out = append([]string{"Timers:"}, out...)
	}
	return out
}

func usec(v uint64) string {
	if v == 0 || v == ^uint64(0) {
		return "-"
	}
	return time.UnixMicro(int64(v)).UTC().Format(time.RFC3339)
}
