package schema

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/invopop/jsonschema"
	orderedmap "github.com/pb33f/ordered-map/v2"

	"resil.dev/resil/desired"
)

// ID is the schema's $id.
const ID = "https://resil.dev/schema/resil.dev_v1.json"

//go:embed resil.dev_v1.json
var committed []byte

// JSON returns the committed schema.
func JSON() []byte { return committed }

// enums are the string types of package desired with a fixed set of
// values.
var enums = map[reflect.Type][]any{
	reflect.TypeOf(desired.Kind("")):          {string(desired.KindService), string(desired.KindTimer), string(desired.KindWatchdog)},
	reflect.TypeOf(desired.State("")):         {string(desired.StateRunning), string(desired.StateStopped)},
	reflect.TypeOf(desired.RestartPolicy("")): {string(desired.RestartAlways), string(desired.RestartOnFailure), string(desired.RestartNever)},
	reflect.TypeOf(desired.DriftPolicy("")):   {string(desired.DriftEnforce), string(desired.DriftReport)},
	reflect.TypeOf(desired.CatchUp("")):       {string(desired.CatchUpOnce), string(desired.CatchUpSkip)},
}

// namePattern is what desired accepts as metadata.name (the loader checks
// it too, with its length and reserved names).
const namePattern = `^[A-Za-z0-9][A-Za-z0-9_.-]*$`

// durationPattern is Go's time.ParseDuration syntax.
const durationPattern = `^[-+]?(0|([0-9]*(\.[0-9]*)?(ns|us|µs|μs|ms|s|m|h))+)$`

// Generate builds the schema from the types of package desired. srcDir is
// the directory of package desired's source (for the field comments).
func Generate(srcDir string) ([]byte, error) {
	r := &jsonschema.Reflector{
		// A field without omitempty is required, as the strict decoder
		// requires it (it still may be empty where validate allows).
		RequiredFromJSONSchemaTags: false,
		Mapper: func(t reflect.Type) *jsonschema.Schema {
			if t == reflect.TypeOf(desired.Duration("")) {
				return &jsonschema.Schema{Type: "string", Pattern: durationPattern,
					Description: "A Go duration: 500ms, 5s, 1m30s.", Examples: []any{"5s"}}
			}
			if t == reflect.TypeOf(desired.HTTPStatus("")) {
				return &jsonschema.Schema{
					OneOf: []*jsonschema.Schema{
						{Type: "integer", Minimum: "100", Maximum: "599"},
						{Type: "string", Pattern: `^[0-9]{3}(-[0-9]{3})?$`},
					},
					Description: "An HTTP status code (204) or range (\"200-299\"); default 200-399.",
					Examples:    []any{204, "200-299"},
				}
			}
			if vals, ok := enums[t]; ok {
				return &jsonschema.Schema{Type: "string", Enum: vals}
			}
			return nil
		},
	}
	if err := r.AddGoComments("resil.dev/resil/desired", srcDir); err != nil {
		return nil, fmt.Errorf("read field comments: %w", err)
	}
	defs := jsonschema.Definitions{}
	for _, v := range []any{&desired.ServiceSpec{}, &desired.TimerSpec{}, &desired.WatchdogSpec{}, &desired.ObjectMeta{}} {
		for k, d := range r.Reflect(v).Definitions {
			defs[k] = d
		}
	}
	if meta := defs["ObjectMeta"]; meta != nil && meta.Properties != nil {
		if name, ok := meta.Properties.Get("name"); ok {
			name.Pattern = namePattern
			name.Description = "The object's name: its unit is NAME.service or NAME.timer."
		}
	}

	props := orderedmap.New[string, *jsonschema.Schema]()
	props.Set("apiVersion", &jsonschema.Schema{Type: "string", Const: desired.APIVersion, Description: "The manifest API version."})
	props.Set("kind", &jsonschema.Schema{Type: "string", Enum: enums[reflect.TypeOf(desired.Kind(""))], Description: "The type of object: Service, Timer or Watchdog."})
	props.Set("metadata", &jsonschema.Schema{Ref: "#/$defs/ObjectMeta"})
	props.Set("spec", &jsonschema.Schema{Type: "object", Description: "The object's desired state; its fields depend on kind."})
	root := &jsonschema.Schema{
		Version:              "https://json-schema.org/draft/2020-12/schema",
		ID:                   ID,
		Title:                "resil.dev/v1 manifest",
		Description:          "One object of a resil manifest (a YAML document in /etc/resil.d). See https://resil.dev and `reconciler validate`.",
		Type:                 "object",
		Properties:           props,
		Required:             []string{"apiVersion", "kind", "metadata"},
		AdditionalProperties: jsonschema.FalseSchema,
		Definitions:          defs,
	}
	for _, k := range []struct{ kind, def string }{
		{string(desired.KindService), "ServiceSpec"}, {string(desired.KindTimer), "TimerSpec"}, {string(desired.KindWatchdog), "WatchdogSpec"},
	} {
		ifp := orderedmap.New[string, *jsonschema.Schema]()
		ifp.Set("kind", &jsonschema.Schema{Const: k.kind})
		thenp := orderedmap.New[string, *jsonschema.Schema]()
		thenp.Set("spec", &jsonschema.Schema{Ref: "#/$defs/" + k.def})
		then := &jsonschema.Schema{Properties: thenp}
		if k.kind != string(desired.KindWatchdog) {
			then.Required = []string{"spec"}
		}
		root.AllOf = append(root.AllOf, &jsonschema.Schema{
			If:   &jsonschema.Schema{Properties: ifp, Required: []string{"kind"}},
			Then: then,
		})
	}
	b, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
