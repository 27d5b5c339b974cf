// Package par runs the iterations of a loop on a few goroutines. It is the
// one place resil spreads CPU or system-call work over workers (manifest
// parsing, the manifest cache file, reading the unit directory); the
// standard library has no parallel loop, and errgroup's per-task goroutine
// is more than an index needs.
package par

import "sync"

// For calls fn(i) for every i in [0, n) on at most workers goroutines
// (fewer when n is small: at least minPer iterations each), and returns
// when every call has returned. With one worker it runs on the calling
// goroutine. fn must be safe to call concurrently for distinct i.
func For(n, workers, minPer int, fn func(i int)) {
	workers = min(workers, n/max(minPer, 1))
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				fn(i)
			}
		}()
	}
	wg.Wait()
}
