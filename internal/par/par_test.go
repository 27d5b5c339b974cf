package par

import (
	"sync/atomic"
	"testing"
)

func TestFor(t *testing.T) {
	for _, c := range []struct{ n, workers, minPer int }{
		{0, 4, 1}, {1, 4, 1}, {7, 1, 1}, {100, 4, 1}, {100, 4, 32}, {1000, 8, 64}, {5, 0, 0},
	} {
		seen := make([]atomic.Int32, c.n)
		For(c.n, c.workers, c.minPer, func(i int) { seen[i].Add(1) })
		for i := range seen {
			if got := seen[i].Load(); got != 1 {
				t.Errorf("n=%d workers=%d minPer=%d: index %d ran %d times", c.n, c.workers, c.minPer, i, got)
			}
		}
	}
}
