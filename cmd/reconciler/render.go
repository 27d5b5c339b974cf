package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"resil.dev/resil/desired"
)

func newRenderCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "render [NAME...]",
		Short: "Print the unit files the manifests render to (systemd form)",
		Long:  "Render the valid objects selected for this host (or only those named) and print each file with its path.",
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := g.loadOptions()
			if err != nil {
				return err
			}
			set, lerr := desired.Load(g.manifests, opts)
			if set == nil {
				return exitCode(2, lerr)
			}
			want := map[string]bool{}
			for _, a := range args {
				want[a] = true
			}
			out := cmd.OutOrStdout()
			found := map[string]bool{}
			for _, o := range set.Sorted() {
				if len(want) > 0 && !want[o.Metadata.Name] && !want[o.ID()] {
					continue
				}
				if set.BrokenNames[o.Metadata.Name] {
					// A drop-in of its name is refused or broken: what
					// would run is its last good version, not this.
					continue
				}
				found[o.Metadata.Name], found[o.ID()] = true, true
				files, err := desired.Render(o)
				if err != nil {
					return exitCode(1, err)
				}
				for _, f := range files {
					dir := g.unitDir
					if f.Dir == desired.DirManager {
						dir = g.managerDir
					}
					fmt.Fprintf(out, "# %s\n%s\n", filepath.Join(dir, f.Name), f.Data)
				}
			}
			for a := range want {
				if !found[a] {
					return exitCode(1, fmt.Errorf("no valid object named %q selects this host", a))
				}
			}
			if lerr != nil {
				return exitCode(1, fmt.Errorf("some manifests are invalid (not rendered):\n%w", lerr))
			}
			return nil
		},
	}
}
