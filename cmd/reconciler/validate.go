package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"resil.dev/resil/actuators"
	"resil.dev/resil/actuators/process"
	"resil.dev/resil/desired"
)

type validateReport struct {
	Valid   bool                  `json:"valid"`
	Objects []string              `json:"objects"`
	Errors  []*desired.FieldError `json:"errors"`
	// Warnings do not make the manifests invalid: subfolders not read.
	Warnings []string `json:"warnings,omitempty"`
}

func newValidateCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "validate [PATH...]",
		Short: "Check manifests: every error with file:line:column: field",
		Long: "Validate manifest directories or files (default: --manifests). Prints every problem. A file\n" +
			"in a drop-in folder (NAME.d/FILE.yaml) is validated merged into its object. With --backend\n" +
			"process, what that backend cannot honour is an error too (apply refuses it there).\n" +
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
				objs, errs, warns, err := validatePath(a, opts, g.backend == "process")
				if err != nil {
					return exitCode(2, err)
				}
				rep.Objects = append(rep.Objects, objs...)
				rep.Errors = append(rep.Errors, errs...)
				rep.Warnings = append(rep.Warnings, warns...)
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
				for _, w := range rep.Warnings {
					fmt.Fprintln(out, "warning: "+w)
				}
				if rep.Valid {
					fmt.Fprintf(out, "%s valid\n", count(len(rep.Objects), "object"))
				} else {
					fmt.Fprintf(out, "%s; %s valid\n", count(len(rep.Errors), "error"), count(len(rep.Objects), "object"))
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
// loading its directory and keeping what concerns that file; a file of a
// drop-in folder (NAME.d/) by loading the folder's parent and keeping what
// concerns the objects named NAME. With forProcess, what the process backend
// cannot honour is an error too.
func validatePath(p string, opts desired.Options, forProcess bool) ([]string, []*desired.FieldError, []string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("validate: %w", err)
	}
	dir, only, dropInOf, mainFile := p, "", "", ""
	if !st.IsDir() {
		dir, only = filepath.Dir(p), filepath.Base(p)
		if !desired.IsManifestName(only) {
			return nil, nil, nil, fmt.Errorf("validate %s: not a manifest file name (*.yaml, *.yml)", p)
		}
		// A drop-in: a file of NAME.d/ beside a manifest NAME.yaml (or
		// .yml); its object is loaded from the folder's parent. A folder
		// named so for another reason (/etc/resil.d itself) is not one.
		if sub := filepath.Base(dir); strings.HasSuffix(sub, ".d") && sub != ".d" {
			name := strings.TrimSuffix(sub, ".d")
			for _, ext := range []string{".yaml", ".yml"} {
				if st, err := os.Stat(filepath.Join(filepath.Dir(dir), name+ext)); err == nil && st.Mode().IsRegular() {
					dropInOf, mainFile = name, name+ext
					dir, only = filepath.Dir(dir), sub+"/"+only
					break
				}
			}
		}
	}
	// Validation must see every object, whatever host it is meant for.
	set, lerr := desired.Load(dir, opts)
	if set == nil {
		if errors.Is(lerr, desired.ErrUnreadable) {
			return nil, []*desired.FieldError{{File: p, Detail: strings.TrimPrefix(lerr.Error(), desired.ErrUnreadable.Error()+": ")}}, nil, nil
		}
		return nil, nil, nil, lerr
	}
	// concerns says whether an object is one the path validates.
	concerns := func(o *desired.Object) bool {
		switch {
		case dropInOf != "":
			return o.Metadata.Name == dropInOf
		case only != "":
			return o.Source.File == only
		}
		return true
	}
	var objs []string
	var errs []*desired.FieldError
	// held: the objects the path declares that are valid but held back
	// by a problem of their name elsewhere (another manifest declaring
	// it, a drop-in), by ID.
	held := map[string]*desired.Object{}
	// A drop-in's objects' own files: their errors are the drop-in's too
	// (an object that does not load cannot take it).
	mains := map[string]bool{mainFile: true}
	for _, m := range []map[string]*desired.Object{set.Objects, set.NotSelected} {
		for id, o := range m {
			if dropInOf != "" && o.Metadata.Name == dropInOf {
				mains[o.Source.File] = true
			}
			// An object whose drop-in folder has a refused or broken
			// file is not valid: the agent keeps its last good version.
			if !concerns(o) {
				continue
			}
			if set.BrokenNames[o.Metadata.Name] {
				held[id] = o
				continue
			}
			if forProcess {
				if _, err := process.Render(o); errors.Is(err, actuators.ErrUnsupported) {
					rs := actuators.Refusals(err)
					if len(rs) == 0 {
						errs = append(errs, &desired.FieldError{File: filepath.Join(set.Dir, o.Source.File), Field: "spec", Detail: err.Error()})
					}
					for _, r := range rs {
						errs = append(errs, desired.Locate(set.Dir, o, r.Field, "the process backend cannot honour it: "+r.Reason))
					}
					continue
				}
			}
			objs = append(objs, id)
		}
	}
	sort.Strings(objs)
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].File < errs[j].File })
	for _, fe := range desired.FieldErrors(lerr) {
		if only != "" {
			rel, _ := filepath.Rel(set.Dir, fe.File)
			stem := strings.TrimSuffix(strings.TrimSuffix(only, ".yaml"), ".yml")
			switch {
			case dropInOf != "":
				if !strings.HasPrefix(rel, dropInOf+".d/") && !mains[rel] {
					continue
				}
			case rel != only && !strings.HasPrefix(rel, stem+".d/") && filepath.Base(fe.File) != only:
				continue
			}
		}
		errs = append(errs, fe)
	}
	errs = append(errs, heldErrors(set, held, desired.FieldErrors(lerr), errs)...)
	if dropInOf != "" {
		only = mainFile // its busy and empty files, and its folder's
	}
	var warns []string
	if only == "" {
		for _, d := range set.NotRead {
			warns = append(warns, fmt.Sprintf("%s/ is a folder, not read: manifests are read from the top level only (NAME.d/ holds the drop-ins of NAME)", filepath.Join(set.Dir, d)))
		}
	}
	return objs, append(errs, unsettledErrors(set, only)...), warns, nil
}

// heldErrors reports each object of held that no error in shown already
// explains: valid in its file, it is not applied because another manifest
// declaring its name is invalid (QA: validate new.yaml said "0 objects
// valid", exit 0, while old.yaml, half edited, declared the same
// service), or a drop-in of its name is. The error is at the object's
// name and names the first problem of that other file (all holds every
// load error).
func heldErrors(set *desired.Set, held map[string]*desired.Object, all, shown []*desired.FieldError) []*desired.FieldError {
	var out []*desired.FieldError
	for _, id := range slices.Sorted(maps.Keys(held)) {
		o := held[id]
		name := o.Metadata.Name
		other := set.DeclaredInvalid[name]
		if other == o.Source.File {
			other = ""
		}
		related := func(fe *desired.FieldError) bool {
			rel, err := filepath.Rel(set.Dir, fe.File)
			return err == nil && (rel == other || strings.HasPrefix(rel, name+".d/"))
		}
		if slices.ContainsFunc(shown, related) {
			continue // its drop-in's errors are listed
		}
		detail := fmt.Sprintf("%s will not be applied: a drop-in of %q or another manifest declaring it is invalid", id, name)
		if i := slices.IndexFunc(all, related); i >= 0 {
			fe := all[i]
			what := "a drop-in of it is invalid"
			if rel, _ := filepath.Rel(set.Dir, fe.File); rel == other {
				what = other + " declares it too and is invalid"
			}
			detail = fmt.Sprintf("%s will not be applied: %s (%s)", id, what, fe.Error())
		}
		out = append(out, desired.Locate(set.Dir, o, "metadata.name", detail))
	}
	return out
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

// count is "1 error", "2 errors".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
