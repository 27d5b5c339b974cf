package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"resil.dev/resil/desired"
	"resil.dev/resil/reconcile"
	"resil.dev/resil/reconcile/store"
)

func newEventsCmd(g *globals) *cobra.Command {
	var since time.Duration
	var object, typ, reason, output string
	var watch bool
	var limit int
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List the agent's recorded events (drift, failures, changes, restarts)",
		Long: "Reads the agent's store (<state-dir>/events.db) directly, oldest last-seen first. A repeat of the\n" +
			"same (object, reason, message) is one row with a COUNT. --watch prints new and repeated events as\n" +
			"they are recorded (-o json: one JSON object per line).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" {
				return exitCode(2, fmt.Errorf("-o must be json, got %q", output))
			}
			switch {
			case typ == "":
			case strings.EqualFold(typ, string(reconcile.Normal)):
				typ = string(reconcile.Normal)
			case strings.EqualFold(typ, string(reconcile.Warning)):
				typ = string(reconcile.Warning)
			default:
				return exitCode(2, fmt.Errorf("--type must be Normal or Warning, got %q", typ))
			}
			if reason != "" {
				r, ok := reconcile.ParseReason(reason)
				if !ok {
					return exitCode(2, fmt.Errorf("--reason %q is no event reason; one of (any case): %s", reason, reasonList()))
				}
				reason = string(r)
			}
			if since < 0 {
				return exitCode(2, fmt.Errorf("--since must be a positive duration (e.g. 24h), got %s", since))
			}
			s, err := store.OpenReader(storePath(g))
			if err != nil {
				return exitCode(2, err)
			}
			defer s.Close()
			ctx, cancel := signalContext()
			defer cancel()
			q := store.Query{Object: object, Type: reconcile.EventType(typ), Reason: reason, Limit: limit}
			if desired.IsUnitName(object) {
				q.Owner = eventsOwner(ctx, s, object)
			}
			if since > 0 {
				q.Since = time.Now().Add(-since)
			}
			out := cmd.OutOrStdout()
			if watch {
				return watchEvents(ctx, s, q, out, output == "json")
			}
			evs, err := s.Events(ctx, q)
			if err != nil {
				return exitCode(2, err)
			}
			if output == "json" {
				if evs == nil {
					evs = []store.StoredEvent{}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(evs)
			}
			if len(evs) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No events found.")
				return nil
			}
			return printEvents(out, evs, true, time.Now())
		},
	}
	f := cmd.Flags()
	f.DurationVar(&since, "since", 0, "only events last seen within this duration (e.g. 24h; default all retained)")
	f.StringVar(&object, "object", "", "only events of this object (web, Service/web) or unit (web.service: its own and its object's)")
	f.StringVar(&typ, "type", "", "only events of this type (Normal or Warning, any case)")
	f.StringVar(&reason, "reason", "", "only events with this reason (e.g. RestartStorm, any case; an unknown reason is refused)")
	f.IntVar(&limit, "limit", 0, "at most this many (the newest) events")
	f.StringVarP(&output, "output", "o", "", "output format: json (default: table)")
	f.BoolVarP(&watch, "watch", "w", false, "after listing, print events as they are recorded until interrupted")
	return cmd
}

// reasonList is every event reason, sorted, comma-separated.
func reasonList() string {
	var names []string
	for _, r := range reconcile.Reasons() {
		names = append(names, string(r))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// eventsOwner is the object whose events `events --object UNIT` lists
// with the unit's: the object that owns it in the agent's last pass (a
// timer's inline job: the timer), else the one the unit is named after
// (web.service: Service/web, job.timer: Timer/job).
func eventsOwner(ctx context.Context, s *store.Store, unit string) string {
	rows, _, _ := s.Status(ctx)
	if id := unitOwner(unit, nil, rows); id != "" {
		return id
	}
	if stem, ok := strings.CutSuffix(unit, ".timer"); ok {
		return string(desired.KindTimer) + "/" + stem
	}
	return string(desired.KindService) + "/" + strings.TrimSuffix(unit, ".service")
}

// watchEvents lists the matching events, then polls: each round reads the
// highest sequence number M first, then the matching events in
// (cursor, M], so a row recorded in between is never skipped.
func watchEvents(ctx context.Context, s *store.Store, q store.Query, out io.Writer, asJSON bool) error {
	cursor, err := s.MaxSeq(ctx)
	if err != nil {
		return exitCode(2, err)
	}
	q.UpToSeq = cursor
	first, err := s.Events(ctx, q)
	if err != nil {
		return exitCode(2, err)
	}
	enc := json.NewEncoder(out)
	emit := func(evs []store.StoredEvent, header bool) error {
		if asJSON {
			for _, e := range evs {
				if err := enc.Encode(e); err != nil {
					return err
				}
			}
			return nil
		}
		return printEvents(out, evs, header, time.Now())
	}
	if err := emit(first, true); err != nil {
		return err
	}
	q.Limit, q.Since = 0, time.Time{}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		top, err := s.MaxSeq(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return exitCode(2, err)
		}
		if top <= cursor {
			continue
		}
		q.AfterSeq, q.UpToSeq = cursor, top
		evs, err := s.Events(ctx, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return exitCode(2, err)
		}
		cursor = top
		if len(evs) > 0 {
			if err := emit(evs, false); err != nil {
				return err
			}
		}
	}
}

func printEvents(w io.Writer, evs []store.StoredEvent, header bool, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if header {
		fmt.Fprintln(tw, "LAST SEEN\tTYPE\tREASON\tOBJECT\tCOUNT\tMESSAGE")
	}
	for _, e := range evs {
		obj := reconcile.OrDash(e.Object)
		// One event, one line: a multi-line message is joined, and control
		// characters (a tab would also break the columns) are escaped.
		msg := desired.EscapeControl(strings.ReplaceAll(e.Message, "\n", " "))
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", shortAge(now.Sub(e.LastSeen)), e.Type, e.Reason, desired.EscapeControl(obj), e.Count, msg)
	}
	return tw.Flush()
}
