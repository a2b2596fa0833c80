package verify

import (
	"context"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate is a limit of Limit events per Per. In Protection, a zero Rate means
// the documented default and a negative Limit turns the limit off.
type Rate struct {
	Limit int
	Per   time.Duration
}

func (r Rate) off() bool { return r.Limit < 0 || r.Per <= 0 }

// Limiter decides whether one more event for a key is allowed at now, and
// if not, how long until it will be. The engine keys limits by recipient,
// IP, flow, number prefix and country.
type Limiter interface {
	Allow(ctx context.Context, key string, r Rate, now time.Time) (ok bool, retryAfter time.Duration, err error)
}

// LocalLimiter keeps one token bucket (golang.org/x/time/rate) per key in
// this process: Limit events at once, refilled evenly over Per. Buckets idle
// long enough to be full again are evicted, so memory stays proportional to
// the keys active within the longest Per. It is the default Limiter; it is
// exact for one process, but each engine counts alone, so with several
// instances use NewStoreLimiter. Safe for concurrent use.
type LocalLimiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	calls   int
}

type bucket struct {
	lim  *rate.Limiter
	r    Rate
	last time.Time
}

// NewLocalLimiter returns an empty LocalLimiter.
func NewLocalLimiter() *LocalLimiter {
	return &LocalLimiter{buckets: make(map[string]*bucket)}
}

// Allow implements Limiter.
func (l *LocalLimiter) Allow(_ context.Context, key string, r Rate, now time.Time) (bool, time.Duration, error) {
	if r.off() {
		return true, 0, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.calls%1024 == 0 {
		l.evict(now)
	}
	b, ok := l.buckets[key]
	if !ok || b.r != r {
		b = &bucket{lim: rate.NewLimiter(rate.Every(r.Per/time.Duration(r.Limit)), r.Limit), r: r}
		l.buckets[key] = b
	}
	b.last = now
	res := b.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		// Round up to the millisecond: the bucket's float arithmetic leaves
		// 999.999999ms where 1s is meant.
		return false, (d + time.Millisecond - 1).Truncate(time.Millisecond), nil
	}
	return true, 0, nil
}

// evict drops buckets unused for at least their Per: they have refilled,
// so a new bucket would behave the same.
func (l *LocalLimiter) evict(now time.Time) {
	for k, b := range l.buckets {
		if now.Sub(b.last) >= b.r.Per {
			delete(l.buckets, k)
		}
	}
}

// Len returns how many keys the limiter tracks.
func (l *LocalLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// StoreLimiter counts events in the Store's counters, so every engine on
// the Store shares the limits. It uses fixed windows of Per: at most Limit
// events per window, and RetryAfter is the time to the window's end.
type StoreLimiter struct {
	store Store
}

// NewStoreLimiter returns a Limiter over s's counters.
func NewStoreLimiter(s Store) *StoreLimiter { return &StoreLimiter{store: s} }

// Allow implements Limiter.
func (l *StoreLimiter) Allow(ctx context.Context, key string, r Rate, now time.Time) (bool, time.Duration, error) {
	if r.off() {
		return true, 0, nil
	}
	window := now.UnixNano() / int64(r.Per)
	end := time.Unix(0, (window+1)*int64(r.Per)).UTC()
	c, err := l.store.AddCounter(ctx, "rate:"+key+":"+strconv.FormatInt(window, 10), 1, end, now)
	if err != nil {
		return false, 0, err
	}
	if c.Value > int64(r.Limit) {
		return false, end.Sub(now), nil
	}
	return true, 0, nil
}
