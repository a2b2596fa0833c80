package sqlstore

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// On PostgreSQL a statement's fixed cost (the protocol messages, binding,
// starting the executor, the commit) outweighs the rows it writes, and the
// database's CPU, not the round trip, is what runs out first under load.
// So the Store merges concurrent calls of one kind (creating a
// verification, recording a delivery, counting an attempt, reading a
// counter, taking counters) into one statement over arrays of their
// arguments, or for Take one transaction: a combiner queues the calls, and
// a batch takes the queue and runs it, committing (or failing) as one.
// Each caller is answered after the commit that holds its call, with its
// own answer; a statement that fails on one call's data is run again one
// call at a time (see pgbatch.go), so one caller's refusal never fails
// the others'. Calls that must not share a statement (two that update one
// row) wait for the next batch. A caller alone, with nothing of its kind
// running, runs at once in a batch of one.

// maxCombined is the most calls one statement carries.
const maxCombined = 64

// combiner merges the concurrent calls of one kind into batches.
type combiner[Req, Res any] struct {
	// run answers every call of a batch: it sets each one's res and err.
	// Its context ends once every caller in the batch has gone.
	run func(ctx context.Context, batch []*call[Req, Res])
	// key, if set, names the row a call changes: calls with one key never
	// share a batch.
	key func(Req) string
	// op names the calls in the errors of callers who leave.
	op string

	mu    sync.Mutex
	queue []*call[Req, Res]
	// busy is set while a batch runs: one statement of a kind runs at a
	// time, and the calls that come meanwhile go together in the next.
	// (Two or three at a time made smaller batches, and fewer pairs a
	// second, at 32 callers on two cores.)
	busy bool
	// batches and calls count what ran, for tests and benchmarks.
	batches, calls atomic.Int64
}

// call is one caller's request and its answer.
type call[Req, Res any] struct {
	ctx  context.Context
	req  Req
	res  Res
	err  error
	done chan struct{} // closed when res and err are final
}

// do queues req and returns its answer once its batch has run. A caller
// whose ctx ends while req still waits in the queue takes it out and
// returns ctx's error: nothing of it ran. One whose ctx ends while its
// batch runs returns ctx's error too, and the statement may still commit
// its call, as one of its own could after it was cancelled.
func (c *combiner[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	cl := &call[Req, Res]{ctx: ctx, req: req, done: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, cl)
	if !c.busy {
		c.busy = true
		go c.lead()
	}
	c.mu.Unlock()
	select {
	case <-cl.done:
		return cl.res, cl.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if i := slices.Index(c.queue, cl); i >= 0 {
		c.queue = slices.Delete(c.queue, i, i+1)
	}
	c.mu.Unlock()
	select {
	case <-cl.done: // answered meanwhile
		return cl.res, cl.err
	default:
		var zero Res
		return zero, wrap(c.op, ctx.Err())
	}
}

// lead runs batches while calls are queued.
func (c *combiner[Req, Res]) lead() {
	for {
		c.mu.Lock()
		batch := c.next()
		if len(batch) == 0 {
			c.busy = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.batches.Add(1)
		c.calls.Add(int64(len(batch)))
		ctx, stop := batchContext(batch)
		c.run(ctx, batch)
		stop()
		for _, cl := range batch {
			close(cl.done)
		}
	}
}

// next takes the next batch off the queue, in order: up to maxCombined
// calls, of which no two share a key. c.mu is held.
func (c *combiner[Req, Res]) next() []*call[Req, Res] {
	if c.key == nil || len(c.queue) == 1 {
		n := min(len(c.queue), maxCombined)
		batch := slices.Clone(c.queue[:n])
		c.queue = slices.Delete(c.queue, 0, n)
		return batch
	}
	var (
		batch []*call[Req, Res]
		keys  = make(map[string]bool, min(len(c.queue), maxCombined))
		left  = c.queue[:0]
	)
	for _, cl := range c.queue {
		k := c.key(cl.req)
		if len(batch) == maxCombined || keys[k] {
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
func batchContext[Req, Res any](batch []*call[Req, Res]) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	for _, cl := range batch {
		if cl.ctx.Done() == nil { // a caller that waits for ever
			return ctx, cancel
		}
	}
	var left atomic.Int64
	left.Store(int64(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, cl := range batch {
		stops[i] = context.AfterFunc(cl.ctx, func() {
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

// counts returns how many batches have run, and how many calls they held.
func (c *combiner[Req, Res]) counts() (batches, calls int64) {
	return c.batches.Load(), c.calls.Load()
}
