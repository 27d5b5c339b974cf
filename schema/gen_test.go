package schema

import (
	"bytes"
	"os"
	"testing"
)

// TestSchemaUpToDate fails when the committed schema is not what Generate
// makes from today's types; RESIL_UPDATE_SCHEMA=1 rewrites it.
func TestSchemaUpToDate(t *testing.T) {
	got, err := Generate("../desired")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("RESIL_UPDATE_SCHEMA") == "1" {
		if err := os.WriteFile("resil.dev_v1.json", got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(got, committed) {
		t.Fatal("schema/resil.dev_v1.json is out of date: run `make schema` and commit it")
	}
}
