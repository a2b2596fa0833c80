package rediscounters

import (
	"context"
	"time"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/combine"
)

// TakeBatch runs Takes, each at its time, as one pipeline, as concurrent
// callers' Takes would go.
func (c *Counters) TakeBatch(ctx context.Context, nows []time.Time, takes [][]verify.Take) ([]verify.Taken, []error) {
	batch := make([]*combine.Call[command, reply], len(takes))
	for i, ts := range takes {
		cmd, err := c.takeCommand(nows[i], ts)
		if err != nil {
			panic(err)
		}
		batch[i] = &combine.Call[command, reply]{Ctx: ctx, Req: cmd}
	}
	c.pipeline(ctx, batch)
	res, errs := make([]verify.Taken, len(takes)), make([]error, len(takes))
	for i, cl := range batch {
		res[i], errs[i] = taken(cl.Res.take, cl.Err, len(takes[i]))
	}
	return res, errs
}

// Pipelined returns how many round trips the Counters' calls have shared,
// and how many calls they carried.
func (c *Counters) Pipelined() (trips, calls int64) { return c.calls.Counts() }
