// Package lazydeadline is context.WithTimeout for calls that usually
// return before anything waits on their context.
//
// context.WithTimeout starts a timer at once and stops it when the call
// returns. The engine gives every channel Send a timeout, and a channel
// that answers at once (one that hands the message to a queue in memory,
// say) never looks at its context's Done: for it the timer is close to
// half of what the engine spends on a delivery. WithTimeout here keeps the
// deadline as a time until a caller asks for Done, or for a value that
// may lead to it, and only then makes the context.WithDeadline it stands
// for. A channel that waits on Done (any network client does) pays what
// context.WithTimeout costs, and sees the same behaviour.
package lazydeadline

import (
	"context"
	"sync"
	"time"
)

// WithTimeout returns a copy of parent that is done when parent is, when
// timeout has passed, or when cancel is called, whichever is first, as
// context.WithTimeout does. Call cancel as soon as the work is done.
func WithTimeout(parent context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(timeout)
	if pd, ok := parent.Deadline(); ok && pd.Before(deadline) {
		deadline = pd
	}
	c := &lazyCtx{parent: parent, deadline: deadline}
	return c, c.cancel
}

// lazyCtx is parent with a deadline, and a context.WithDeadline made
// from them (inner) once a caller needs one. Until then its state is read
// from parent and the clock; afterwards it is inner's.
type lazyCtx struct {
	parent   context.Context
	deadline time.Time

	mu    sync.Mutex
	inner context.Context // nil until made
	stop  context.CancelFunc
	// ended is the error cancel found while nothing was made: parent's,
	// DeadlineExceeded or Canceled, whichever came first. It is the
	// context's error from then on, and inner's when it is made later.
	ended       error
	parentEnded bool // ended is parent's error
}

func (c *lazyCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// Done makes the inner context: a channel that closes needs a timer, or
// parent's Done, to close it.
func (c *lazyCtx) Done() <-chan struct{} { return c.make().Done() }

// Err is inner's error once it is made; before, what inner would say if
// it were made now (a Done made later is closed for it).
func (c *lazyCtx) Err() error {
	c.mu.Lock()
	inner, ended := c.inner, c.ended
	c.mu.Unlock()
	switch {
	case ended != nil:
		return ended
	case inner != nil:
		return inner.Err()
	}
	return c.errNow()
}

// errNow is the context's error, with nothing made and no cancel yet:
// parent's, else DeadlineExceeded past the deadline.
func (c *lazyCtx) errNow() error {
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value is parent's value for key while nothing is made and the context
// is not done: the context package finds a parent's cancellation state
// through Value (context.Cause, and contexts derived from this one, which
// first call Done), so once the context is done, or made, Value is
// inner's, where that state is this context's own.
func (c *lazyCtx) Value(key any) any {
	c.mu.Lock()
	made := c.inner != nil
	c.mu.Unlock()
	if !made && c.Err() == nil {
		return c.parent.Value(key)
	}
	return c.make().Value(key)
}

// make returns the inner context, making it on the first call: a
// context.WithDeadline of parent, or, after cancel, a context done with
// the error cancel found.
func (c *lazyCtx) make() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.inner != nil:
	case c.parentEnded:
		// parent is done, and so is inner at once, with its cause.
		c.inner, c.stop = context.WithCancel(c.parent)
	case c.ended == context.DeadlineExceeded:
		// Past its deadline: done at once, with DeadlineExceeded even if
		// parent has been canceled since.
		c.inner, c.stop = context.WithDeadline(context.WithoutCancel(c.parent), c.deadline)
	case c.ended != nil:
		// Canceled, whatever parent has done since.
		c.inner, c.stop = context.WithCancel(context.WithoutCancel(c.parent))
		c.stop()
	default:
		c.inner, c.stop = context.WithDeadline(c.parent, c.deadline)
	}
	return c.inner
}

func (c *lazyCtx) cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner != nil {
		c.stop()
		return
	}
	if c.ended != nil {
		return
	}
	if c.ended = c.parent.Err(); c.ended != nil {
		c.parentEnded = true
	} else if c.ended = c.errNow(); c.ended == nil {
		c.ended = context.Canceled
	}
}

// String names the context and its deadline, for debugging.
func (c *lazyCtx) String() string {
	return "lazydeadline.WithTimeout(" + c.deadline.String() + ")"
}
