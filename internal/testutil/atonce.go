package testutil

import "sync"

// AtOnce runs fn(0) … fn(n-1) on n goroutines released together, once all
// of them are waiting at the gate, as a burst of requests arrives, and
// returns when all have returned.
func AtOnce(n int, fn func(i int)) {
	gate := make(chan struct{})
	var ready, done sync.WaitGroup
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			ready.Done()
			<-gate
			fn(i)
		}()
	}
	ready.Wait()
	close(gate)
	done.Wait()
}
