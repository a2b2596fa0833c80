// Package combine merges concurrent calls of one kind into batches, for
// stores whose backend does much less work for one request of many items
// than for many requests of one item.
//
// A Combiner queues the calls of one kind, and a batch takes the queue and
// runs it as one request to the backend (one statement, one transaction,
// one pipeline), which the Run function answers call by call. One batch
// of a kind runs at a time: the calls that come meanwhile go together in
// the next. A caller alone, with nothing of its kind running, runs at once
// in a batch of one. Calls that must not share a batch (two that update
// one row) name the same Key, and wait for the next.
package combine

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// maxYields bounds how many times Linger yields.
const maxYields = 8

// Linger lets the goroutines that are ready to run queue their calls
// before a batch starts: it yields the processor while queued (the length
// of the queue) grows, at most maxYields times. Callers tend to come
// together, and a batch of one costs about as much as a batch of several;
// a yield with nothing else to run returns at once. At 32 callers on two
// cores it took PostgreSQL's statements from about 5.4 calls each to 7.5,
// and SQLite's commits from about 13 writes each to 20.
func Linger(queued func() int) {
	for last, i := -1, 0; i < maxYields; i++ {
		n := queued()
		if n == last {
			return
		}
		last = n
		runtime.Gosched()
	}
}

// DefaultMaxBatch is the most calls a batch holds unless MaxBatch says
// otherwise.
const DefaultMaxBatch = 64

// Combiner merges the concurrent calls of one kind into batches. Set Run
// (and Key, MaxBatch, Leave) before the first call; the zero value of the
// rest is ready.
type Combiner[Req, Res any] struct {
	// Run answers every call of a batch: it sets each one's Res and Err.
	// Its context has the first call's values, and ends once every caller
	// in the batch has gone. It may reorder the batch.
	Run func(ctx context.Context, batch []*Call[Req, Res])
	// Key, if set, names what a call changes: calls with one key never
	// share a batch.
	Key func(Req) string
	// MaxBatch is the most calls a batch holds; DefaultMaxBatch if 0.
	MaxBatch int
	// Leave, if set, makes the error of a caller whose context ended
	// before its answer came, from the context's error.
	Leave func(error) error

	mu    sync.Mutex
	queue []*Call[Req, Res]
	// busy is set while a batch runs: one batch runs at a time, and the
	// calls that come meanwhile go together in the next. (Two or three at
	// a time made smaller batches, and fewer PostgreSQL pairs a second, at
	// 32 callers on two cores.)
	busy bool
	// batches and calls count what ran, for tests and benchmarks.
	batches, calls atomic.Int64
}

// Call is one caller's request and its answer.
type Call[Req, Res any] struct {
	Ctx  context.Context
	Req  Req
	Res  Res
	Err  error
	done chan struct{} // closed when Res and Err are final
}

// Do queues req and returns its answer once its batch has run. A caller
// whose ctx has ended before its batch starts gets ctx's error, and
// nothing of it runs: a ctx ended already is not queued, and a batch
// leaves out the calls whose ctx ended while they waited. One whose ctx
// ends while its batch runs returns ctx's error too, and the backend may
// still carry out its call, as it could a request of its own that was
// cancelled.
func (c *Combiner[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	if err := ctx.Err(); err != nil {
		var zero Res
		return zero, c.leave(err)
	}
	cl := &Call[Req, Res]{Ctx: ctx, Req: req, done: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, cl)
	if !c.busy {
		c.busy = true
		go c.lead()
	}
	c.mu.Unlock()
	select {
	case <-cl.done:
		return cl.Res, cl.Err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if i := slices.Index(c.queue, cl); i >= 0 {
		c.queue = slices.Delete(c.queue, i, i+1)
	}
	c.mu.Unlock()
	select {
	case <-cl.done: // answered meanwhile
		return cl.Res, cl.Err
	default:
		var zero Res
		return zero, c.leave(ctx.Err())
	}
}

// leave is the error of a caller whose ctx ended with err.
func (c *Combiner[Req, Res]) leave(err error) error {
	if c.Leave != nil {
		return c.Leave(err)
	}
	return err
}

// lead runs batches while calls are queued.
func (c *Combiner[Req, Res]) lead() {
	Linger(func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue)
	})
	for {
		c.mu.Lock()
		batch := c.next()
		if len(batch) == 0 {
			c.busy = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		// The calls whose caller has gone are answered, not run: the
		// others are moved, in order, to the front of batch (a slice of
		// its own), and run.
		live := 0
		for i, cl := range batch {
			if err := cl.Ctx.Err(); err != nil {
				cl.Err = c.leave(err)
				continue
			}
			batch[live], batch[i] = batch[i], batch[live]
			live++
		}
		if live > 0 {
			c.batches.Add(1)
			c.calls.Add(int64(live))
			ctx, stop := batchContext(batch[:live])
			c.Run(ctx, batch[:live])
			stop()
		}
		for _, cl := range batch {
			close(cl.done)
		}
	}
}

// next takes the next batch off the queue, in order: up to MaxBatch
// calls, of which no two share a key. c.mu is held.
func (c *Combiner[Req, Res]) next() []*Call[Req, Res] {
	limit := c.MaxBatch
	if limit <= 0 {
		limit = DefaultMaxBatch
	}
	if c.Key == nil || len(c.queue) == 1 {
		n := min(len(c.queue), limit)
		batch := slices.Clone(c.queue[:n])
		c.queue = slices.Delete(c.queue, 0, n)
		return batch
	}
	var (
		batch []*Call[Req, Res]
		keys  = make(map[string]bool, min(len(c.queue), limit))
		left  = c.queue[:0]
	)
	for _, cl := range c.queue {
		k := c.Key(cl.Req)
		if len(batch) == limit || keys[k] {
			left = append(left, cl)
			continue
		}
		keys[k] = true
		batch = append(batch, cl)
	}
	clear(c.queue[len(left):])
	c.queue = left
	return batch
}

// batchContext returns the context a batch runs with: the first call's
// values, cancelled once every call's context has ended (and by stop),
// so that a statement nobody waits for any more is not left running.
func batchContext[Req, Res any](batch []*Call[Req, Res]) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].Ctx))
	for _, cl := range batch {
		if cl.Ctx.Done() == nil { // a caller that waits for ever
			return ctx, cancel
		}
	}
	var left atomic.Int64
	left.Store(int64(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, cl := range batch {
		stops[i] = context.AfterFunc(cl.Ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// Counts returns how many batches have run, and how many calls they held.
func (c *Combiner[Req, Res]) Counts() (batches, calls int64) {
	return c.batches.Load(), c.calls.Load()
}

// Reqs returns the requests of a batch's calls.
func Reqs[Req, Res any](batch []*Call[Req, Res]) []Req {
	out := make([]Req, len(batch))
	for i, cl := range batch {
		out[i] = cl.Req
	}
	return out
}

// Fail answers every call of a batch with err.
func Fail[Req, Res any](batch []*Call[Req, Res], err error) {
	var zero Res
	for _, cl := range batch {
		cl.Res, cl.Err = zero, err
	}
}

// EachAlone answers every call of a batch by running it alone with one.
func EachAlone[Req, Res any](ctx context.Context, batch []*Call[Req, Res], one func(ctx context.Context, req Req) (Res, error)) {
	for _, cl := range batch {
		cl.Res, cl.Err = one(ctx, cl.Req)
	}
}
