package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"resil.dev/resil/desired"
)

type validateReport struct {
	Valid   bool                  `json:"valid"`
	Objects []string              `json:"objects"`
	Errors  []*desired.FieldError `json:"errors"`
}

func newValidateCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "validate [PATH...]",
		Short: "Check manifests: every error with file:line:column: field",
		Long: "Validate manifest directories or files (default: --manifests). Prints every problem.\n" +
			"Exit status: 0 valid, 1 some manifest is invalid, 2 usage error.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return exitCode(2, fmt.Errorf("-o must be text or json, got %q", output))
			}
			opts, err := g.loadOptions()
			if err != nil {
				return err
			}
			if len(args) == 0 {
				args = []string{g.manifests}
			}
			rep := validateReport{Valid: true, Objects: []string{}, Errors: []*desired.FieldError{}}
			for _, a := range args {
				objs, errs, err := validatePath(a, opts)
				if err != nil {
					return exitCode(2, err)
				}
				rep.Objects = append(rep.Objects, objs...)
				rep.Errors = append(rep.Errors, errs...)
			}
			rep.Valid = len(rep.Errors) == 0
			out := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				for _, e := range rep.Errors {
					fmt.Fprintln(out, e.Error())
				}
				if rep.Valid {
					fmt.Fprintf(out, "%d objects valid\n", len(rep.Objects))
				} else {
					fmt.Fprintf(out, "%d errors; %d objects valid\n", len(rep.Errors), len(rep.Objects))
				}
			}
			if !rep.Valid {
				return exitCode(1, nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

// validatePath validates a directory, or one file (with its drop-ins) by
// loading its directory and keeping what concerns that file.
func validatePath(p string, opts desired.Options) ([]string, []*desired.FieldError, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, nil, fmt.Errorf("validate: %w", err)
	}
	dir, only := p, ""
	if !st.IsDir() {
		dir, only = filepath.Dir(p), filepath.Base(p)
		if !desired.IsManifestName(only) {
			return nil, nil, fmt.Errorf("validate %s: not a manifest file name (*.yaml, *.yml)", p)
		}
	}
	// Validation must see every object, whatever host it is meant for.
	set, lerr := desired.Load(dir, opts)
	if set == nil {
		if errors.Is(lerr, desired.ErrUnreadable) {
			return nil, []*desired.FieldError{{File: p, Detail: strings.TrimPrefix(lerr.Error(), desired.ErrUnreadable.Error()+": ")}}, nil
		}
		return nil, nil, lerr
	}
	var objs []string
	for _, m := range []map[string]*desired.Object{set.Objects, set.NotSelected} {
		for id, o := range m {
			// An object whose drop-in folder has a refused or broken
			// file is not valid: the agent keeps its last good version.
			if (only == "" || o.Source.File == only) && !set.BrokenNames[o.Metadata.Name] {
				objs = append(objs, id)
			}
		}
	}
	sort.Strings(objs)
	var errs []*desired.FieldError
	for _, fe := range desired.FieldErrors(lerr) {
		if only != "" {
			rel, _ := filepath.Rel(set.Dir, fe.File)
			stem := strings.TrimSuffix(strings.TrimSuffix(only, ".yaml"), ".yml")
			if rel != only && !strings.HasPrefix(rel, stem+".d/") && filepath.Base(fe.File) != only {
				continue
			}
		}
		errs = append(errs, fe)
	}
	return objs, append(errs, unsettledErrors(set, only)...), nil
}

// unsettledErrors reports files the agent would not act on: open for
// writing (not read), or holding no objects (what they held keeps its last
// good version; only deleting the file removes it).
func unsettledErrors(set *desired.Set, only string) []*desired.FieldError {
	stem := strings.TrimSuffix(strings.TrimSuffix(only, ".yaml"), ".yml")
	var errs []*desired.FieldError
	for _, m := range []struct {
		files  map[string]bool
		detail string
	}{
		{set.Busy, "open for writing by some process; not read (validate again once it is closed)"},
		{set.Empty, `holds no objects (empty, only comments or only "---"); the agent keeps what it last applied from it: delete the file to remove its objects`},
	} {
		files := make([]string, 0, len(m.files))
		for f := range m.files {
			if only == "" || f == only || strings.HasPrefix(f, stem+".d/") {
				files = append(files, f)
			}
		}
		sort.Strings(files)
		for _, f := range files {
			errs = append(errs, &desired.FieldError{File: filepath.Join(set.Dir, f), Detail: m.detail})
		}
	}
	return errs
}
