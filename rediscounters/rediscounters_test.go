package rediscounters_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
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
