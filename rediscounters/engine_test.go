package rediscounters_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/internal/testutil"
	"github.com/openverify/verify/memstore"
	"github.com/openverify/verify/rediscounters"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

// fleet is n engines sharing one store, one clock and one Counters on
// Redis, for the protection counters and (through a StoreLimiter) the
// rate limits, as instances behind a load balancer share them.
func fleet(t *testing.T, n int, c verify.Counters, p verify.Protection) ([]*verify.Engine, *channels.Recorder) {
	t.Helper()
	return fleetOn(t, memstore.New(), n, c, p)
}

func fleetOn(t *testing.T, store verify.Store, n int, c verify.Counters, p verify.Protection) ([]*verify.Engine, *channels.Recorder) {
	t.Helper()
	clk := clock.NewMock()
	clk.Set(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	sms := channels.NewRecorder("sms")
	var engines []*verify.Engine
	for range n {
		eng, err := verify.New(store, verify.WithChannels(sms), verify.WithSecret(secret), verify.WithClock(clk),
			verify.WithLogger(slog.New(slog.DiscardHandler)), verify.WithProtection(p),
			verify.WithCounters(c), verify.WithLimiter(verify.NewStoreLimiter(c)))
		require.NoError(t, err)
		engines = append(engines, eng)
	}
	_, err := engines[0].CreateFlow(context.Background(), verify.Flow{Name: "login", Default: true,
		Duplicates: verify.DuplicateAllow, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	return engines, sms
}

// race releases n goroutines at once, the i-th running f(i).
func race(n int, f func(i int)) { testutil.AtOnce(n, f) }

// TestFleetSharesLimits: 64 sends to one recipient, released at once over
// three engines, against a limit of 5: exactly 5 go out.
func TestFleetSharesLimits(t *testing.T) {
	p := verify.NoProtection()
	p.RecipientSends = verify.Rate{Limit: 5, Per: time.Hour}
	engines, sms := fleet(t, 3, newCounters(t), p)
	var sent, limited atomic.Int64
	race(64, func(i int) {
		_, err := engines[i%3].Send(context.Background(), verify.SendRequest{To: verify.Recipient{Phone: "+4791234567"}})
		switch {
		case err == nil:
			sent.Add(1)
		case errors.Is(err, verify.ErrRateLimited):
			limited.Add(1)
			ve, _ := verify.AsError(err)
			assert.Positive(t, ve.RetryAfter)
		default:
			t.Error(err)
		}
	})
	assert.Equal(t, int64(5), sent.Load())
	assert.Equal(t, int64(59), limited.Load())
	assert.Len(t, sms.Messages(), 5)
}

// TestFleetSharesLockout: 64 wrong codes for one recipient's
// verifications, released at once over three engines, with a lockout
// after 10 consecutive failures: the lockout holds, so at most 10 codes
// are judged, and the right code is refused while it lasts.
func TestFleetSharesLockout(t *testing.T) {
	p := verify.NoProtection()
	p.FreeFailures, p.MaxFailures, p.LockFor = 100, 10, time.Hour
	engines, sms := fleet(t, 3, newCounters(t), p)
	ctx := context.Background()
	var ids []string
	for range 20 {
		v, err := engines[0].Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4791234567"}})
		require.NoError(t, err)
		ids = append(ids, v.ID)
	}
	var judged, locked atomic.Int64
	race(64, func(i int) {
		_, err := engines[i%3].Check(ctx, verify.CheckRequest{VerifyID: ids[i%len(ids)], Code: "000000"})
		switch {
		case errors.Is(err, verify.ErrInvalidOTP), errors.Is(err, verify.ErrMaxAttempts):
			judged.Add(1)
		case errors.Is(err, verify.ErrLocked), errors.Is(err, verify.ErrRateLimited):
			locked.Add(1)
		case err == nil:
			// "000000" may be a verification's code.
		default:
			t.Error(err)
		}
	})
	assert.LessOrEqual(t, judged.Load(), int64(10), "no more wrong codes judged than the lockout allows")
	assert.Positive(t, locked.Load())
	m, _ := sms.Last()
	_, err := engines[1].Check(ctx, verify.CheckRequest{VerifyID: m.VerificationID, Code: m.Code})
	assert.ErrorIs(t, err, verify.ErrLocked, "the recipient is locked out, the right code too")
}

// fleetNow is the time on the fleet's clock.
var fleetNow = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

// sum adds up the values of the counters on c whose key starts with
// prefix.
func sum(t *testing.T, c *rediscounters.Counters, prefix string) int64 {
	t.Helper()
	return testutil.SumCounters(t, c, prefix, fleetNow)
}

// TestFleetChecksOnRedis: right and wrong codes for one recipient, from
// one IP, released at once over three engines whose Check is one Take on
// Redis. The failures never pass MaxFailures, the per-IP limit holds and
// counts only the checks it let through to the failures, and the
// conversion monitor counts exactly the verifications that were
// verified; 32 copies of one right code, at once, verify it once and
// count it once.
func TestFleetChecksOnRedis(t *testing.T) {
	const n, maxFailures, ipLimit = 64, 5, 12
	p := verify.NoProtection()
	p.FreeFailures, p.MaxFailures, p.LockFor = 100, maxFailures, time.Hour
	p.IPChecks = verify.Rate{Limit: ipLimit, Per: time.Hour}
	p.Conversion = verify.Conversion{Window: time.Hour, MinSends: 1000, Threshold: 0.2, BlockFor: time.Hour}
	c := newCounters(t)
	engines, sms := fleet(t, 3, c, p)
	ctx := context.Background()
	type sent struct{ id, code string }
	var vs []sent
	for range n {
		v, err := engines[0].Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4791234567"}})
		require.NoError(t, err)
		m, _ := sms.Last()
		vs = append(vs, sent{v.ID, m.Code})
	}
	var verified, judged, lockedOut, ipRefused atomic.Int64
	race(n, func(i int) {
		code := vs[i].code
		if i%2 == 1 {
			code = testutil.OtherCode(code)
		}
		_, err := engines[i%3].Check(ctx, verify.CheckRequest{VerifyID: vs[i].id, Code: code, IPAddress: "198.51.100.7"})
		e, _ := verify.AsError(err)
		switch {
		case err == nil:
			verified.Add(1)
		case errors.Is(err, verify.ErrInvalidOTP):
			judged.Add(1)
		case errors.Is(err, verify.ErrLocked):
			lockedOut.Add(1)
		case errors.Is(err, verify.ErrRateLimited) && e != nil && strings.Contains(e.Message, "IP address"):
			ipRefused.Add(1)
		default:
			t.Errorf("check %d: %v", i, err)
		}
	})
	t.Logf("verified %d, judged %d, locked out %d, IP refused %d", verified.Load(), judged.Load(), lockedOut.Load(), ipRefused.Load())
	passed := verified.Load() + judged.Load()
	// A right code that verifies resets the failures (they count
	// consecutive wrong codes), so more than maxFailures may be judged in
	// all; the count never passes it.
	assert.LessOrEqual(t, sum(t, c, "fail:"), int64(maxFailures), "the failures never pass MaxFailures")
	assert.Equal(t, int64(n), passed+lockedOut.Load()+ipRefused.Load())
	assert.LessOrEqual(t, passed, int64(ipLimit), "no more checks let through than the per-IP limit")
	if passed < ipLimit {
		assert.Zero(t, ipRefused.Load(), "the per-IP limit refuses only once reached")
	}
	assert.Equal(t, passed, sum(t, c, "rate:check:ip:"), "a refused check spends no per-IP check")
	assert.Equal(t, verified.Load(), sum(t, c, "conv:ok:"), "every verification counted once, and nothing else")

	// One right code, 32 times at once (a double-clicked form, or a
	// replay), on engines that all remember the verification.
	c2 := newCounters(t)
	engines, sms = fleet(t, 3, c2, verify.DefaultProtection())
	v, err := engines[0].Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4791234567"}})
	require.NoError(t, err)
	m, _ := sms.Last()
	for _, e := range engines[1:] { // each engine remembers it, as after a wrong code
		_, err := e.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: testutil.OtherCode(m.Code)})
		require.ErrorIs(t, err, verify.ErrInvalidOTP)
	}
	var ok, already atomic.Int64
	race(32, func(i int) {
		_, err := engines[i%3].Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
		switch {
		case err == nil:
			ok.Add(1)
		case errors.Is(err, verify.ErrAlreadyVerified):
			already.Add(1)
		default:
			t.Error(err)
		}
	})
	assert.Equal(t, int64(1), ok.Load(), "verified once")
	assert.Equal(t, int64(31), already.Load())
	assert.Equal(t, int64(1), sum(t, c2, "conv:ok:"), "and counted once")
}

// TestRedisDownIsUnavailable: with Redis unreachable, a Send and a Check
// fail with E926 (unavailable, retry), never as a refusal or a success.
func TestRedisDownIsUnavailable(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	store := memstore.New()
	engines, sms := fleetOn(t, store, 1, rediscounters.New(rdb), verify.DefaultProtection())
	ctx := context.Background()
	_, err := engines[0].Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4791234567"}})
	require.Error(t, err)
	assert.ErrorIs(t, err, verify.ErrUnavailable, "%v", err)
	assert.True(t, verify.IsTransient(err))
	assert.Empty(t, sms.Messages(), "nothing sent")

	// A verification started while the counters were elsewhere: its Check
	// cannot take the failure slot.
	healthy, err := verify.New(store, verify.WithChannels(sms), verify.WithSecret(secret),
		verify.WithLogger(slog.New(slog.DiscardHandler)), verify.WithProtection(verify.NoProtection()))
	require.NoError(t, err)
	v, err := healthy.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4791234567"}})
	require.NoError(t, err)
	m, _ := sms.Last()
	_, err = engines[0].Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
	assert.ErrorIs(t, err, verify.ErrUnavailable, "%v", err)
	got, err := healthy.Get(ctx, v.ID)
	require.NoError(t, err)
	assert.NotEqual(t, verify.StatusVerified, got.Status, "not verified while the lockout could not be checked")
	assert.Zero(t, got.Attempts, "and no attempt spent")
}
