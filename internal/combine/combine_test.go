package combine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gatedCombiner is a combiner whose batches record what they held and
// answer each call with its request, and which holds its first batch
// until release is closed.
type gatedCombiner struct {
	Combiner[string, string]
	mu      sync.Mutex
	batches [][]string
	started chan struct{} // closed when the first batch runs
	release chan struct{}
	ctxs    []context.Context
}

func newGated(key func(string) string) *gatedCombiner {
	g := &gatedCombiner{started: make(chan struct{}), release: make(chan struct{})}
	g.Key = key
	first := true
	g.Run = func(ctx context.Context, batch []*Call[string, string]) {
		g.mu.Lock()
		g.batches = append(g.batches, Reqs(batch))
		g.ctxs = append(g.ctxs, ctx)
		wait := first
		first = false
		g.mu.Unlock()
		if wait {
			close(g.started)
			<-g.release
		}
		for _, cl := range batch {
			cl.Res = "answer to " + cl.Req
		}
	}
	return g
}

// queued waits until n calls wait in g's queue.
func (g *gatedCombiner) queued(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.Combiner.mu.Lock()
		defer g.Combiner.mu.Unlock()
		return len(g.queue) == n
	}, 5*time.Second, time.Millisecond)
}

// pending is a call made in a goroutine.
type pending struct {
	done chan struct{} // closed when err is set
	err  error
}

// wait returns the call's error once it has returned.
func (p *pending) wait() error {
	<-p.done
	return p.err
}

// returned reports whether the call has returned.
func (p *pending) returned() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// doAsync calls g.Do(ctx, req) in a goroutine.
func (g *gatedCombiner) doAsync(ctx context.Context, req string) *pending {
	p := &pending{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		res, err := g.Do(ctx, req)
		if err == nil && res != "answer to "+req {
			err = fmt.Errorf("%s answered %q", req, res)
		}
		p.err = err
	}()
	return p
}

// TestCombinerBatchesWhatQueues: a call alone runs at once; the calls that
// come while it runs go together, in order, in the next batch; calls that
// share a key go in separate batches; every caller gets its own answer.
func TestCombinerBatchesWhatQueues(t *testing.T) {
	ctx := context.Background()
	g := newGated(func(req string) string { return req[:1] })
	first := g.doAsync(ctx, "a0")
	<-g.started
	var rest []*pending
	for i, req := range []string{"b1", "c2", "b3", "d4", "b5"} {
		rest = append(rest, g.doAsync(ctx, req))
		g.queued(t, i+1)
	}
	close(g.release)
	require.NoError(t, first.wait())
	for _, p := range rest {
		require.NoError(t, p.wait())
	}
	assert.Equal(t, [][]string{{"a0"}, {"b1", "c2", "d4"}, {"b3"}, {"b5"}}, g.batches)
	batches, calls := g.Counts()
	assert.Equal(t, int64(4), batches)
	assert.Equal(t, int64(6), calls)
}

// TestCombinerBatchSize: no batch holds more than DefaultMaxBatch calls.
func TestCombinerBatchSize(t *testing.T) {
	ctx := context.Background()
	g := newGated(nil)
	first := g.doAsync(ctx, "first")
	<-g.started
	var rest []*pending
	for i := range DefaultMaxBatch + 3 {
		rest = append(rest, g.doAsync(ctx, fmt.Sprint(i)))
	}
	g.queued(t, DefaultMaxBatch+3)
	close(g.release)
	require.NoError(t, first.wait())
	for _, p := range rest {
		require.NoError(t, p.wait())
	}
	require.Len(t, g.batches, 3)
	assert.Len(t, g.batches[1], DefaultMaxBatch)
	assert.Len(t, g.batches[2], 3)
}

// TestCombinerCallerLeavesTheQueue: a caller whose context ends while its
// call waits in the queue gets the context's error, and its call never
// runs.
func TestCombinerCallerLeavesTheQueue(t *testing.T) {
	g := newGated(nil)
	first := g.doAsync(context.Background(), "first")
	<-g.started
	ctx, cancel := context.WithCancel(context.Background())
	left := g.doAsync(ctx, "left")
	g.queued(t, 1)
	cancel()
	require.ErrorIs(t, left.wait(), context.Canceled)
	stays := g.doAsync(context.Background(), "stays")
	g.queued(t, 1)
	close(g.release)
	require.NoError(t, first.wait())
	require.NoError(t, stays.wait())
	assert.Equal(t, [][]string{{"first"}, {"stays"}}, g.batches)
}

// TestCombinerRunsNoEndedCall: a call whose context has ended already is
// never queued, and one whose context ends after the queue's lead took it,
// before its batch runs, is left out of the batch: neither runs, and both
// get the context's error.
func TestCombinerRunsNoEndedCall(t *testing.T) {
	g := newGated(nil)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := g.Do(ended, "ended")
	require.ErrorIs(t, err, context.Canceled)
	first := g.doAsync(context.Background(), "first")
	<-g.started
	// Queued behind the running batch, then its context ends as the next
	// batch is taken: the lead finds it ended.
	late, cancelLate := context.WithCancel(context.Background())
	g.Combiner.mu.Lock()
	cl := &Call[string, string]{Ctx: late, Req: "late", done: make(chan struct{})}
	g.Combiner.queue = append(g.Combiner.queue, cl)
	g.Combiner.mu.Unlock()
	stays := g.doAsync(context.Background(), "stays")
	g.queued(t, 2)
	cancelLate()
	close(g.release)
	require.NoError(t, first.wait())
	require.NoError(t, stays.wait())
	<-cl.done
	require.ErrorIs(t, cl.Err, context.Canceled)
	assert.Equal(t, [][]string{{"first"}, {"stays"}}, g.batches, "neither ended call ran")
}

// TestCombinerCallerLeavesARunningBatch: a caller whose context ends while
// its batch runs returns at once with the context's error. The batch's own
// context ends only once every caller in it has gone.
func TestCombinerCallerLeavesARunningBatch(t *testing.T) {
	g := newGated(nil)
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Hour)
	defer cancel2()
	first := g.doAsync(ctx1, "first")
	<-g.started
	// Batches of one have the caller's context's values; the batch's
	// context is cancelled only through the callers'.
	cancel1()
	require.ErrorIs(t, first.wait(), context.Canceled)
	g.mu.Lock()
	batchCtx := g.ctxs[0]
	g.mu.Unlock()
	select {
	case <-batchCtx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the batch's context outlived its only caller")
	}
	close(g.release)

	// Two callers: one leaving leaves the batch's context alone.
	g2 := newGated(nil)
	blocker := g2.doAsync(context.Background(), "blocker")
	<-g2.started
	ctx3, cancel3 := context.WithCancel(context.Background())
	a := g2.doAsync(ctx3, "a")
	b := g2.doAsync(ctx2, "b")
	g2.queued(t, 2)
	g2.Run = func(ctx context.Context, batch []*Call[string, string]) {
		// The second batch: both callers are in it.
		cancel3()
		require.Eventually(t, a.returned, 5*time.Second, time.Millisecond)
		assert.NoError(t, ctx.Err(), "one caller is still waiting")
		for _, cl := range batch {
			cl.Res = "answer to " + cl.Req
		}
	}
	close(g2.release)
	require.NoError(t, blocker.wait())
	require.NoError(t, b.wait())
	require.ErrorIs(t, a.wait(), context.Canceled)
}

// TestCombinerUnderLoad: many callers released at once, with some
// leaving early, each get their own answer or their context's error, and
// every call that ran ran once.
func TestCombinerUnderLoad(t *testing.T) {
	var (
		mu  sync.Mutex
		ran []string
	)
	var c Combiner[string, string]
	c.Key = func(req string) string { return req[:2] }
	c.Run = func(ctx context.Context, batch []*Call[string, string]) {
		keys := map[string]bool{}
		for _, cl := range batch {
			k := cl.Req[:2]
			if keys[k] {
				panic("two calls with one key in a batch")
			}
			keys[k] = true
			cl.Res = "answer to " + cl.Req
		}
		mu.Lock()
		ran = append(ran, Reqs(batch)...)
		mu.Unlock()
		time.Sleep(100 * time.Microsecond)
	}
	const callers = 200
	var (
		wg       sync.WaitGroup
		gate     = make(chan struct{})
		answered = make([]bool, callers)
	)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			if i%7 == 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Duration(i%3)*50*time.Microsecond)
				defer cancel()
			}
			req := fmt.Sprintf("%02d-%d", i%20, i)
			<-gate
			res, err := c.Do(ctx, req)
			switch {
			case err == nil:
				assert.Equal(t, "answer to "+req, res)
				answered[i] = true
			case errors.Is(err, context.DeadlineExceeded):
				assert.True(t, i%7 == 0, "only callers with a deadline time out")
			default:
				t.Error(err)
			}
		}()
	}
	close(gate)
	wg.Wait()
	// Every answered call ran exactly once; a call may have run for a
	// caller that left.
	for i, ok := range answered {
		if ok {
			req := fmt.Sprintf("%02d-%d", i%20, i)
			assert.Equal(t, 1, count(ran, req), req)
		}
	}
	slices.Sort(ran)
	assert.Equal(t, len(ran), len(slices.Compact(slices.Clone(ran))), "a call ran twice")
}

func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}
