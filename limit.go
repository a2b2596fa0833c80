package verify

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"time"
)

// Rate is a limit of Limit events per Per. In Protection, a zero Rate means
// the documented default and a negative Limit turns the limit off.
type Rate struct {
	Limit int
	Per   time.Duration
}

func (r Rate) off() bool { return r.Limit < 0 || r.Per <= 0 }

// Limit is one rate limit on one key, for a Limiter.
type Limit struct {
	Key  string
	Rate Rate
}

// Limiter decides and counts rate limits. The engine keys limits by
// recipient, IP, flow, number prefix and country, and asks for all the
// limits of one request in one Allow, so that a request refused by one
// limit spends nothing from the others.
type Limiter interface {
	// Allow counts one event against every limit, all or nothing, in one
	// atomic step: if each limit allows one more event at now, it counts
	// them all and returns an Allowance with OK set; otherwise it counts
	// none and names the first limit that refused, and how long until it
	// would allow. Limits whose Rate is off are allowed and not counted.
	Allow(ctx context.Context, now time.Time, limits []Limit) (Allowance, error)
	// Refund gives back the events an allowed Allow counted, for a request
	// that a later protection refused. Refunding an Allowance that is not
	// OK does nothing.
	Refund(ctx context.Context, a Allowance) error
}

// Allowance is a Limiter's decision on one request's limits.
type Allowance struct {
	OK bool
	// Refused is the index in Limits of the first limit that refused; -1
	// when OK.
	Refused    int
	RetryAfter time.Duration
	// Now and Limits are the Allow call's, for Refund.
	Now    time.Time
	Limits []Limit
}

// LocalLimiter keeps one token bucket per key in this process: Limit
// events at once, refilled evenly over Per. (Its buckets are its own rather
// than golang.org/x/time/rate's, whose reservations cannot be given back
// once time has moved on: a Refund must return the token whenever the
// request is refused.) Buckets idle long enough to be
// full again are evicted, so memory stays proportional to the keys active
// within the longest Per. It is the default Limiter; it is exact for one
// process, but each engine counts alone, so with several instances use
// NewStoreLimiter. Safe for concurrent use.
type LocalLimiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	calls   int
}

// bucket is a token bucket: tokens at last, refilled at Limit per Per up
// to Limit.
type bucket struct {
	r      Rate
	tokens float64
	last   time.Time
}

// fill refills b up to now and returns its tokens.
func (b *bucket) fill(now time.Time) float64 {
	if now.After(b.last) {
		b.tokens = min(float64(b.r.Limit), b.tokens+float64(now.Sub(b.last))*float64(b.r.Limit)/float64(b.r.Per))
		b.last = now
	}
	return b.tokens
}

// NewLocalLimiter returns an empty LocalLimiter.
func NewLocalLimiter() *LocalLimiter {
	return &LocalLimiter{buckets: make(map[string]*bucket)}
}

// Allow implements Limiter: the buckets are checked and taken from under
// one lock.
func (l *LocalLimiter) Allow(_ context.Context, now time.Time, limits []Limit) (Allowance, error) {
	a := Allowance{Refused: -1, Now: now, Limits: limits}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.calls%1024 == 0 {
		l.evict(now)
	}
	for i, lim := range limits {
		if lim.Rate.off() {
			continue
		}
		b := l.bucket(lim, now)
		if t := b.fill(now); t < 1 {
			wait := time.Duration((1 - t) * float64(lim.Rate.Per) / float64(lim.Rate.Limit))
			// Round up to the millisecond, so a caller that waits that
			// long finds a whole token.
			a.Refused, a.RetryAfter = i, (wait + time.Millisecond - 1).Truncate(time.Millisecond)
			return a, nil
		}
	}
	for _, lim := range limits {
		if !lim.Rate.off() {
			l.buckets[lim.Key].tokens--
		}
	}
	a.OK = true
	return a, nil
}

// bucket returns lim's bucket, a full new one if it has none (or its rate
// changed). The caller holds l.mu.
func (l *LocalLimiter) bucket(lim Limit, now time.Time) *bucket {
	b, ok := l.buckets[lim.Key]
	if !ok || b.r != lim.Rate {
		b = &bucket{r: lim.Rate, tokens: float64(lim.Rate.Limit), last: now}
		l.buckets[lim.Key] = b
	}
	return b
}

// Refund implements Limiter: each bucket gets its token back (up to full).
func (l *LocalLimiter) Refund(_ context.Context, a Allowance) error {
	if !a.OK {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, lim := range a.Limits {
		if b, ok := l.buckets[lim.Key]; ok && !lim.Rate.off() && b.r == lim.Rate {
			b.fill(a.Now)
			b.tokens = min(float64(lim.Rate.Limit), b.tokens+1)
		}
	}
	return nil
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

// StoreLimiter counts events in a Counters backend (the Store's, or
// another such as Redis), so every engine on it shares the limits. It uses
// fixed windows of Per: at most Limit events per window, and RetryAfter is
// the time to the window's end. One Allow is one Counters.Take.
type StoreLimiter struct {
	counters Counters
}

// NewStoreLimiter returns a Limiter over c's counters; a Store is a
// Counters.
func NewStoreLimiter(c Counters) *StoreLimiter { return &StoreLimiter{counters: c} }

// takes turns limits into counter takes of delta in the windows of now.
func storeTakes(now time.Time, limits []Limit, delta int64) (takes []Take, index []int) {
	takes = make([]Take, 0, len(limits))
	index = make([]int, 0, len(limits))
	for i, lim := range limits {
		if lim.Rate.off() {
			continue
		}
		window := now.UnixNano() / int64(lim.Rate.Per)
		end := time.Unix(0, (window+1)*int64(lim.Rate.Per)).UTC()
		takes = append(takes, Take{Key: "rate:" + lim.Key + ":" + strconv.FormatInt(window, 10),
			Delta: delta, Max: int64(lim.Rate.Limit), ExpiresAt: end})
		index = append(index, i)
	}
	return takes, index
}

// Allow implements Limiter with one Counters.Take.
func (l *StoreLimiter) Allow(ctx context.Context, now time.Time, limits []Limit) (Allowance, error) {
	a := Allowance{Refused: -1, Now: now, Limits: limits}
	takes, index := storeTakes(now, limits, 1)
	if len(takes) == 0 {
		a.OK = true
		return a, nil
	}
	res, err := l.counters.Take(ctx, now, takes)
	if err != nil {
		return a, err
	}
	if !res.OK {
		a.Refused, a.RetryAfter = index[res.Refused], res.RetryAfter
		return a, nil
	}
	a.OK = true
	return a, nil
}

// allowWith is Allow with takes of the caller's own before (first) and
// after (last) the limits', all in one Counters.Take: for an engine whose
// other counters are the same Counters, so that a request's counters cost
// one call. The Allowance refunds the limits only; a refusal by one of the
// caller's own leaves Refused -1 and sets refusedOwn. The Taken is the
// Take's whole result: first's counters come first, last's last.
func (l *StoreLimiter) allowWith(ctx context.Context, now time.Time, limits []Limit, first, last []Take) (a Allowance, res Taken, refusedOwn bool, err error) {
	a = Allowance{Refused: -1, Now: now, Limits: limits}
	takes, index := storeTakes(now, limits, 1)
	all := make([]Take, 0, len(first)+len(takes)+len(last))
	all = append(append(append(all, first...), takes...), last...)
	if res, err = takeAll(ctx, l.counters, now, all); err != nil {
		return a, res, false, err
	}
	switch {
	case res.OK:
		a.OK = true
	case res.Refused < len(first) || res.Refused >= len(first)+len(takes):
		refusedOwn = true
	default:
		a.Refused, a.RetryAfter = index[res.Refused-len(first)], res.RetryAfter
	}
	return a, res, refusedOwn, nil
}

// takeAll is c.Take, which must answer a counter for each take.
func takeAll(ctx context.Context, c Counters, now time.Time, takes []Take) (Taken, error) {
	res, err := c.Take(ctx, now, takes)
	if err == nil && len(res.Counters) != len(takes) {
		err = fmt.Errorf("the counters returned %d counters for %d takes", len(res.Counters), len(takes))
	}
	return res, err
}

// sameCounters reports whether a and b are one Counters. Values of a type
// that cannot be compared are never the same.
func sameCounters(a, b Counters) bool {
	t := reflect.TypeOf(a)
	return t != nil && t == reflect.TypeOf(b) && t.Comparable() && a == b
}

// Refund implements Limiter: it takes -1 from the same windows.
func (l *StoreLimiter) Refund(ctx context.Context, a Allowance) error {
	if !a.OK {
		return nil
	}
	takes, _ := storeTakes(a.Now, a.Limits, -1)
	if len(takes) == 0 {
		return nil
	}
	_, err := l.counters.Take(ctx, a.Now, takes)
	return err
}

// Allow counts one event of the host's own against a rate limit, through
// the engine's Limiter (WithLimiter), so that instances that share a
// StoreLimiter count it together; the console uses it for sign-ins. The
// key is the host's: it is counted apart from the engine's own keys. A
// refused event is not counted, and the Allowance says how long until one
// would be allowed (RetryAfter). A Rate that is off allows every event.
func (e *Engine) Allow(ctx context.Context, key string, r Rate) (Allowance, error) {
	if key == "" {
		return Allowance{}, invalid(ErrMissingField, "key", "key field is mandatory")
	}
	now := e.now()
	if r.off() {
		return Allowance{OK: true, Refused: -1, Now: now}, nil
	}
	a, err := e.limiter.Allow(ctx, now, []Limit{{Key: "host:" + key, Rate: r}})
	if err != nil {
		return Allowance{}, storeErr(ctx, "rate limit", err)
	}
	return a, nil
}
