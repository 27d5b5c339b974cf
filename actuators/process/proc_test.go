package process

import (
	"slices"
	"testing"
)

func TestReadProcStat(t *testing.T) {
	st, err := readProcStat("testdata/proc", 4242)
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{PID: 4242, State: 'S', PPID: 1, PGID: 4242, StartTime: 987654}
	if st != want {
		t.Fatalf("got %+v, want %+v", st, want)
	}
	if _, err := readProcStat("testdata/proc", 1); err == nil {
		t.Fatal("missing pid: no error")
	}
	if _, err := parseProcStat([]byte("12 (x) S 1")); err == nil {
		t.Fatal("short line: no error")
	}
}

func TestGroupMembers(t *testing.T) {
	tests := []struct {
		minStart uint64
		want     []int
	}{
		{0, []int{4242, 4243}}, // the zombie is skipped
		{987654, []int{4242, 4243}},
		{987655, []int{4243}}, // started before the recorded main process: not ours
		{999999, nil},
	}
	for _, tc := range tests {
		got := groupMembers("testdata/proc", 4242, tc.minStart)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("minStart %d: got %v, want %v", tc.minStart, got, tc.want)
		}
	}
}
