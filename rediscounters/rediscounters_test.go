package rediscounters_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/rediscounters"
	"github.com/openverify/verify/storetest"
)

// redisClient connects to $VERIFY_REDIS_ADDR (host:port). Without it the
// test is skipped, except under CI=true, where it fails: CI must run the
// Redis tests (see .ci/run).
func redisClient(tb testing.TB) *redis.Client {
	tb.Helper()
	addr := os.Getenv("VERIFY_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("VERIFY_REDIS_ADDR is not set, but CI=true: CI must run the Redis tests (see .ci/run)")
		}
		tb.Skip("VERIFY_REDIS_ADDR is not set; skipping Redis (set it to host:port of a redis-server)")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	tb.Cleanup(func() { rdb.Close() })
	require.NoError(tb, rdb.Ping(context.Background()).Err(), "connecting to VERIFY_REDIS_ADDR")
	return rdb
}

// newCounters returns Counters under a prefix of their own, whose keys are
// deleted when the test ends.
func newCounters(tb testing.TB, opts ...rediscounters.Option) *rediscounters.Counters {
	tb.Helper()
	rdb := redisClient(tb)
	b := make([]byte, 8)
	rand.Read(b)
	prefix := "{test-" + hex.EncodeToString(b) + "}:"
	tb.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
	return rediscounters.New(rdb, append([]rediscounters.Option{rediscounters.WithPrefix(prefix)}, opts...)...)
}

func TestConformance(t *testing.T) {
	storetest.RunCounters(t, func(t *testing.T) verify.Counters { return newCounters(t) })
}

// TestBackoffAsApplyTakes: delays that are not whole microseconds double
// as Backoff.Delay doubles them (in nanoseconds), and NotBefore is the
// result cut to the microsecond, as ApplyTakes's is once stored.
func TestBackoffAsApplyTakes(t *testing.T) {
	c := newCounters(t)
	now := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	for _, b := range []verify.Backoff{
		{Free: 0, Base: 1500 * time.Nanosecond, Max: time.Hour},
		{Free: 1, Base: time.Second / 3, Max: time.Hour},
		{Free: 2, Base: 700 * time.Nanosecond, Max: 0},
	} {
		key := fmt.Sprintf("b-%d-%d", b.Free, b.Base)
		var want verify.Counter
		for range 12 {
			take := verify.Take{Key: key, Delta: 1, Max: verify.NoLimit, ExpiresAt: now.Add(time.Hour), Backoff: b}
			got, err := c.Take(context.Background(), now, []verify.Take{take})
			require.NoError(t, err)
			require.True(t, got.OK, "%+v: refused at value %d, now %v, retry after %v", b, want.Value, now, got.RetryAfter)
			want = verify.ApplyTakes([]verify.Counter{want}, []verify.Take{take}, now).Counters[0]
			assert.Equal(t, want.NotBefore.Truncate(time.Microsecond), got.Counters[0].NotBefore, "%+v at %d", b, want.Value)
			if want.NotBefore.IsZero() {
				now = now.Add(time.Second)
			} else {
				now = want.NotBefore.Truncate(time.Microsecond).Add(time.Microsecond)
			}
		}
	}
}

// TestPipelinedTakes: the Takes of one pipeline run in turn, each atomic
// and all or nothing, as if one after another; a script Redis has dropped
// from its cache (NOSCRIPT) is sent again, and its Take counted once.
func TestPipelinedTakes(t *testing.T) {
	ctx := context.Background()
	c := newCounters(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	exp := now.Add(time.Hour)
	one := func(key string, max int64) []verify.Take {
		return []verify.Take{{Key: key, Delta: 1, Max: max, ExpiresAt: exp}}
	}
	for _, flush := range []bool{false, true} {
		if flush {
			require.NoError(t, redisClient(t).ScriptFlush(ctx).Err())
		}
		k := fmt.Sprint("k-", flush)
		calls := [][]verify.Take{
			one(k, 2), one(k, 2),
			{{Key: "a", Delta: 1, Max: 100, ExpiresAt: exp}, {Key: k, Delta: 1, Max: 2, ExpiresAt: exp}}, // refused by k
			one(k, 2),
			{{Key: k, Delta: -1, Max: verify.NoLimit}},
			one(k, 2),
		}
		nows := make([]time.Time, len(calls))
		for i := range nows {
			nows[i] = now
		}
		res, errs := c.TakeBatch(ctx, nows, calls)
		var ok []bool
		for i, err := range errs {
			require.NoError(t, err, "flushed %v, take %d", flush, i)
			ok = append(ok, res[i].OK)
		}
		assert.Equal(t, []bool{true, true, false, false, true, true}, ok, "flushed %v", flush)
		got, err := c.GetCounter(ctx, k, now)
		require.NoError(t, err)
		assert.Equal(t, int64(2), got.Value)
	}
	a, err := c.GetCounter(ctx, "a", now)
	require.NoError(t, err)
	assert.Zero(t, a.Value, "a refused Take counts nothing")
}

// TestConcurrentCallsSharePipelines: 64 callers released at once, each
// taking one of 40 slots and reading the counter, share round trips, and
// exactly 40 are counted.
func TestConcurrentCallsSharePipelines(t *testing.T) {
	ctx := context.Background()
	c := newCounters(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const callers, slots = 64, 40
	var (
		wg      sync.WaitGroup
		gate    = make(chan struct{})
		granted atomic.Int32
	)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			res, err := c.Take(ctx, now, []verify.Take{{Key: "slots", Delta: 1, Max: slots, ExpiresAt: now.Add(time.Hour)}})
			if !assert.NoError(t, err) {
				return
			}
			if res.OK {
				granted.Add(1)
			}
			got, err := c.GetCounter(ctx, "slots", now)
			assert.NoError(t, err)
			assert.GreaterOrEqual(t, got.Value, int64(1))
		}()
	}
	close(gate)
	wg.Wait()
	assert.Equal(t, int32(slots), granted.Load())
	trips, calls := c.Pipelined()
	t.Logf("%d calls in %d round trips", calls, trips)
	assert.Equal(t, int64(2*callers), calls)
	assert.Less(t, trips, calls, "no two calls shared a round trip")
}

// TestRedisExpiry: Redis keeps a counter until its ExpiresAt plus the
// grace period, counted from the Take that set that ExpiresAt: a Take that
// keeps the ExpiresAt (a fixed window's next count, a give-back) keeps the
// key's expiry, one that moves it moves the expiry, and one that leaves
// the counter expired deletes the key.
func TestRedisExpiry(t *testing.T) {
	ctx := context.Background()
	rdb := redisClient(t)
	b := make([]byte, 8)
	rand.Read(b)
	prefix := "{expiry-" + hex.EncodeToString(b) + "}:"
	t.Cleanup(func() { rdb.Del(context.Background(), prefix+"k", prefix+"fresh") })
	const grace = 30 * time.Second
	c := rediscounters.New(rdb, rediscounters.WithPrefix(prefix), rediscounters.WithGrace(grace))
	now := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	take := func(at time.Time, key string, delta int64, exp time.Time) {
		t.Helper()
		got, err := c.Take(ctx, at, []verify.Take{{Key: key, Delta: delta, Max: verify.NoLimit, ExpiresAt: exp}})
		require.NoError(t, err)
		require.True(t, got.OK)
	}
	ttl := func(key string) time.Duration {
		t.Helper()
		d, err := rdb.PTTL(ctx, prefix+key).Result()
		require.NoError(t, err)
		return d
	}
	// about is d, less the real time the calls took.
	about := func(want, got time.Duration, what string) {
		t.Helper()
		assert.LessOrEqual(t, got, want, what)
		assert.Greater(t, got, want-5*time.Second, what)
	}

	window := now.Add(10 * time.Minute)
	take(now, "k", 1, window)
	about(10*time.Minute+grace, ttl("k"), "a new counter")
	take(now.Add(4*time.Minute), "k", 1, window)
	about(10*time.Minute+grace, ttl("k"), "a count in the same window keeps the expiry the first set")
	take(now.Add(5*time.Minute), "k", -1, time.Time{})
	about(10*time.Minute+grace, ttl("k"), "a give-back keeps it")
	v, err := c.GetCounter(ctx, "k", now.Add(5*time.Minute))
	require.NoError(t, err)
	assert.Equal(t, int64(1), v.Value)

	later := now.Add(3 * time.Minute)
	take(later, "k", 1, later.Add(time.Hour))
	about(time.Hour+grace, ttl("k"), "a later ExpiresAt moves the expiry")
	take(later, "k", 1, later.Add(time.Minute))
	about(time.Minute+grace, ttl("k"), "an earlier one too")

	// Past its ExpiresAt by the engine's clock, within the grace period
	// Redis still holds it: a give-back then deletes it.
	take(now, "fresh", 1, now.Add(time.Minute))
	take(now.Add(90*time.Second), "fresh", -1, time.Time{})
	n, err := rdb.Exists(ctx, prefix+"fresh").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "a counter left expired is deleted")
	// A counter that expired by the engine's clock and counts again is a
	// new one, with its new window's expiry.
	take(now, "fresh", 1, now.Add(time.Minute))
	take(now.Add(2*time.Minute), "fresh", 1, now.Add(2*time.Minute+20*time.Second))
	about(20*time.Second+grace, ttl("fresh"), "a new window after expiry")
	v, err = c.GetCounter(ctx, "fresh", now.Add(2*time.Minute))
	require.NoError(t, err)
	assert.Equal(t, int64(1), v.Value)
}

// TestValueBeyondExact: a count that would take a counter past 2^53, where
// Redis's Lua numbers stop being exact, fails the Take with an error and
// writes nothing, not even the Take's other counters; a Take that another
// of its counters refuses is refused, as ever.
func TestValueBeyondExact(t *testing.T) {
	ctx := context.Background()
	c := newCounters(t)
	now := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	exp := now.Add(time.Hour)
	const top = 1<<53 - 1
	take := func(key string, delta int64) verify.Take {
		return verify.Take{Key: key, Delta: delta, Max: verify.NoLimit, ExpiresAt: exp}
	}
	got, err := c.Take(ctx, now, []verify.Take{take("big", top-1)})
	require.NoError(t, err)
	require.True(t, got.OK)
	got, err = c.Take(ctx, now, []verify.Take{take("big", 1)})
	require.NoError(t, err, "up to 2^53 - 1")
	assert.Equal(t, int64(top), got.Counters[0].Value)

	_, err = c.Take(ctx, now, []verify.Take{take("other", 1), take("big", 1)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "2^53")
	// Refused by another of its counters, such a Take is a refusal.
	got, err = c.Take(ctx, now, []verify.Take{{Key: "full", Delta: 1, Max: 0, ExpiresAt: exp}, take("big", 1)})
	require.NoError(t, err)
	assert.False(t, got.OK)
	assert.Equal(t, 0, got.Refused)
	for key, want := range map[string]int64{"big": top, "other": 0} {
		v, err := c.GetCounter(ctx, key, now)
		require.NoError(t, err, key)
		assert.Equal(t, want, v.Value, key)
	}
}
