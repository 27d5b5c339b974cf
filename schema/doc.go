// Package schema holds the JSON Schema (draft 2020-12) of resil.dev/v1
// manifests, for editors (yaml-language-server) and CI.
//
// Files:
//
//	resil.dev_v1.json  the schema, committed; `reconciler schema` prints it
//	schema.go          JSON (the embedded file) and Generate, which builds it
//	                   from the Go types of package desired with
//	                   github.com/invopop/jsonschema (descriptions from the
//	                   field comments, which it reads from the source tree)
//	schema_test.go     the committed file is what Generate makes; every
//	                   example and golden manifest validates, and the
//	                   structural cases of the invalid corpus do not (with
//	                   github.com/santhosh-tekuri/jsonschema, an independent
//	                   validator)
//
// Regenerate after changing a manifest type: `make schema`.
//
// The schema checks structure (fields, types, enums, required fields,
// simple patterns). What depends on more than one value or on the host
// (paths, unit names, calendar expressions, line lengths, cross-object
// rules) is checked by `reconciler validate` alone, and drop-in files
// (NAME.d/*.yaml, partial documents) are not covered.
package schema
