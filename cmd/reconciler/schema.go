package main

import (
	"github.com/spf13/cobra"

	"resil.dev/resil/schema"
)

// newSchemaCmd is `reconciler schema`: the JSON Schema of resil.dev/v1
// manifests, for editors.
func newSchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema (draft 2020-12) of resil.dev/v1 manifests",
		Long: `schema prints the JSON Schema of one manifest object, for editors
(yaml-language-server: "# yaml-language-server: $schema=PATH" in a manifest, or
yaml.schemas in the editor's settings). It checks structure: fields, types,
enums and required fields; reconciler validate checks everything else.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(schema.JSON())
			return err
		},
	}
}
