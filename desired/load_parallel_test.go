package desired

import (
	"fmt"
	"reflect"
	"testing"
)

// Parsing in parallel loads exactly what parsing in order does: the same
// set and the same errors in the same order, over files that are valid,
// broken YAML, of a bad type, unusable (bad kind), empty, with drop-ins,
// and duplicates.
func TestLoadParallelMatchesSerial(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for i := range 80 {
		n := fmt.Sprintf("s%03d", i)
		switch i % 8 {
		case 1:
			files[n+".yaml"] = "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: " + n + "\n" // broken YAML
		case 2:
			files[n+".yaml"] = "apiVersion: resil.dev/v1\nkind: Service\nmetadata: {name: " + n + "}\nspec: {command: 7}\n"
		case 3:
			files[n+".yaml"] = "apiVersion: resil.dev/v1\nkind: Gadget\nmetadata: {name: " + n + "}\nspec: {}\n"
			files[n+".d/10.yaml"] = "spec: {user: nobody}\n" // kept for a fixed manifest, not an orphan
		case 4:
			files[n+".yaml"] = "# nothing here\n"
		case 5:
			files[n+".yaml"] = svcDoc(n, "/bin/true") + "---\n" + svcDoc(n+"-b", "/bin/false")
			files[n+".d/10.yaml"] = "spec: {user: nobody}\n"
		case 6:
			files[n+".yaml"] = svcDoc(fmt.Sprintf("s%03d", i-6), "/bin/dup") // a duplicate
		default:
			files[n+".yaml"] = svcDoc(n, "/bin/true")
		}
	}
	writeFiles(t, dir, files)
	defer func(v int) { parallelParseMin = v }(parallelParseMin)
	load := func(min int) (*Set, string) {
		parallelParseMin = min
		set, err := loadInsecure(t, dir)
		return set, errorLines(t, err, dir)
	}
	serial, serialErr := load(1 << 30)
	parallel, parallelErr := load(4)
	if serialErr != parallelErr {
		t.Errorf("errors differ:\nserial:\n%s\nparallel:\n%s", serialErr, parallelErr)
	}
	// Broken holds multierrors, whose format func DeepEqual never equates:
	// compare their text.
	brokenText := func(s *Set) map[string]string {
		m := map[string]string{}
		for f, err := range s.Broken {
			m[f] = err.Error()
		}
		s.Broken = nil
		return m
	}
	if a, b := brokenText(serial), brokenText(parallel); !reflect.DeepEqual(a, b) {
		t.Errorf("Broken differs:\nserial %v\nparallel %v", a, b)
	}
	if !reflect.DeepEqual(serial, parallel) {
		t.Errorf("sets differ:\nserial %+v\nparallel %+v", serial, parallel)
	}
	if len(serial.Objects) == 0 || serialErr == "" || len(serial.Empty) == 0 || !serial.BrokenNames["s003"] {
		t.Fatalf("the fixture lost its point: %d objects, empty %v, errors %q", len(serial.Objects), serial.Empty, serialErr)
	}
}
