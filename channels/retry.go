package channels

import (
	"context"
	"crypto/rand"
	"errors"
	"math/big"
	"time"
)

// RetryPolicy says how a provider channel retries a message that failed
// for a transient reason: a network error or timeout, HTTP 429 or 5xx, an
// SMTP 4xx reply, or a provider status documented as temporary. Permanent
// failures (an invalid number, a rejected sender, bad credentials) are
// never retried.
//
// Between attempts the channel waits a random duration between zero and
// BaseDelay·2ⁿ (capped at MaxDelay) — exponential backoff with full
// jitter — or, when the provider sent Retry-After, at least that long. The
// wait stops as soon as the Send context is done, and no retry is started
// that could not finish before the context's deadline: the engine's send
// timeout bounds the whole of Send, retries included.
//
// The zero value is the default policy: 3 attempts, 250ms base, 5s cap.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts, the first one included.
	// Defaults to 3; 1 disables retries.
	MaxAttempts int
	// BaseDelay is the backoff ceiling before the first retry; it doubles
	// for each further retry. Defaults to 250ms.
	BaseDelay time.Duration
	// MaxDelay caps the backoff, and the longest Retry-After the channel
	// is willing to honour: when a provider asks for a longer wait, the
	// channel stops retrying and returns the error, so that the engine can
	// move on to the next step. Defaults to 5s.
	MaxDelay time.Duration

	// sleep waits for d or until ctx is done; nil means sleepCtx. Tests
	// replace it to observe the waits without sleeping.
	sleep func(ctx context.Context, d time.Duration) error
}

const (
	defaultMaxAttempts = 3
	defaultBaseDelay   = 250 * time.Millisecond
	defaultMaxDelay    = 5 * time.Second
	defaultTimeout     = 10 * time.Second
)

// withDefaults fills in the zero fields.
func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = defaultMaxAttempts
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = defaultBaseDelay
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = defaultMaxDelay
	}
	if p.MaxDelay < p.BaseDelay {
		p.MaxDelay = p.BaseDelay
	}
	if p.sleep == nil {
		p.sleep = sleepCtx
	}
	return p
}

// backoff returns the full-jitter wait before retry number retry (1 for
// the first retry): a uniformly random duration in [0, min(MaxDelay,
// BaseDelay·2^(retry-1))).
func (p RetryPolicy) backoff(retry int) time.Duration {
	ceiling := p.BaseDelay
	for i := 1; i < retry && ceiling < p.MaxDelay; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, p.MaxDelay)
	if ceiling <= 0 {
		return 0
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(ceiling)))
	if err != nil {
		return ceiling
	}
	return time.Duration(n.Int64())
}

// attemptFunc makes one attempt. It returns nil on success; otherwise a
// *ProviderError saying whether the failure is permanent and how long the
// provider asked to wait, or the context's error.
type attemptFunc func(ctx context.Context, attempt int) error

// run calls attempt until it succeeds, fails permanently, the attempts
// are used up, or ctx is done. The error returned is the last attempt's,
// with ProviderError.Attempts set.
func (p RetryPolicy) run(ctx context.Context, attempt attemptFunc) error {
	p = p.withDefaults()
	var last error
	for n := 1; ; n++ {
		err := attempt(ctx, n)
		if err == nil {
			return nil
		}
		last = err
		var pe *ProviderError
		if errors.As(err, &pe) {
			pe.Attempts = n
		}
		if pe == nil || pe.Permanent || n >= p.MaxAttempts || ctx.Err() != nil {
			return last
		}
		wait := p.backoff(n)
		if pe.RetryAfter > 0 {
			if pe.RetryAfter > p.MaxDelay {
				return last // the provider wants a longer pause than we may take
			}
			wait = max(wait, pe.RetryAfter)
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= wait {
			return last // no time left for another attempt
		}
		if err := p.sleep(ctx, wait); err != nil {
			return last
		}
	}
}

// sleepCtx waits for d, or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
