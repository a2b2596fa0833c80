package verify_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/memstore"
)

func TestBackoffDelay(t *testing.T) {
	b := verify.Backoff{Free: 2, Base: time.Second, Max: 10 * time.Second}
	for n, want := range map[int64]time.Duration{0: 0, 1: 0, 2: time.Second, 3: 2 * time.Second, 4: 4 * time.Second,
		5: 8 * time.Second, 6: 10 * time.Second, 70: 10 * time.Second, 1 << 62: 10 * time.Second} {
		assert.Equal(t, want, b.Delay(n), "Delay(%d)", n)
	}
	assert.Zero(t, verify.Backoff{}.Delay(100), "the zero Backoff never delays")
	huge := verify.Backoff{Base: time.Duration(1) << 61, Max: time.Duration(1<<63 - 1)}
	assert.Equal(t, time.Duration(1<<63-1), huge.Delay(5), "no overflow")
}

func TestApplyTakes(t *testing.T) {
	now := start
	full := verify.Counter{Value: 3, UpdatedAt: now, ExpiresAt: now.Add(time.Minute)}
	res := verify.ApplyTakes([]verify.Counter{{}, full}, []verify.Take{
		{Key: "a", Delta: 1, Max: 5, ExpiresAt: now.Add(time.Hour)},
		{Key: "b", Delta: 1, Max: 3, ExpiresAt: now.Add(time.Hour)},
	}, now)
	assert.False(t, res.OK)
	assert.Equal(t, 1, res.Refused)
	assert.Equal(t, time.Minute, res.RetryAfter, "a full counter allows again when it expires")
	assert.Equal(t, []verify.Counter{{}, full}, res.Counters, "nothing changes on a refusal")

	expired := verify.Counter{Value: 3, ExpiresAt: now, NotBefore: now.Add(time.Hour)}
	res = verify.ApplyTakes([]verify.Counter{expired}, []verify.Take{{Key: "b", Delta: 1, Max: 3, ExpiresAt: now.Add(time.Hour),
		Backoff: verify.Backoff{Free: 1, Base: time.Minute, Max: time.Hour}}}, now)
	require.True(t, res.OK, "an expired counter starts again from zero")
	assert.Equal(t, verify.Counter{Value: 1, UpdatedAt: now, ExpiresAt: now.Add(time.Hour), NotBefore: now.Add(time.Minute)}, res.Counters[0])

	waiting := res.Counters[0]
	res = verify.ApplyTakes([]verify.Counter{waiting}, []verify.Take{{Key: "b", Delta: 1, Max: 3}}, now.Add(time.Second))
	assert.False(t, res.OK)
	assert.Equal(t, 59*time.Second, res.RetryAfter, "a take waits for NotBefore")
	owes := verify.Backoff{Free: 0, Base: time.Minute}
	res = verify.ApplyTakes([]verify.Counter{waiting}, []verify.Take{{Key: "b", Delta: -1, Max: verify.NoLimit, Backoff: owes}}, now.Add(time.Second))
	require.True(t, res.OK, "a refund never waits")
	assert.Equal(t, int64(0), res.Counters[0].Value)
	assert.Equal(t, waiting.NotBefore, res.Counters[0].NotBefore, "a refund keeps a wait the value still owes")
	res = verify.ApplyTakes([]verify.Counter{waiting}, []verify.Take{{Key: "b", Delta: -1, Max: verify.NoLimit,
		Backoff: verify.Backoff{Free: 1, Base: time.Minute}}}, now.Add(time.Second))
	assert.Zero(t, res.Counters[0].NotBefore, "and lifts one it no longer owes")
	res = verify.ApplyTakes([]verify.Counter{{}}, []verify.Take{{Key: "c", Delta: -1, Max: verify.NoLimit}}, now)
	assert.Equal(t, int64(0), res.Counters[0].Value, "never below zero")

	blocked := verify.Counter{Value: 1, ExpiresAt: now.Add(time.Hour)}
	res = verify.ApplyTakes([]verify.Counter{blocked}, []verify.Take{{Key: "block", Delta: 0, Max: 0}}, now)
	assert.False(t, res.OK, "a check-only take refuses above Max")
	assert.Equal(t, time.Hour, res.RetryAfter)
	res = verify.ApplyTakes([]verify.Counter{{}}, []verify.Take{{Key: "block", Delta: 0, Max: 0}}, now)
	assert.True(t, res.OK)
	assert.Equal(t, verify.Counter{}, res.Counters[0], "a check-only take changes nothing")
}

func TestLocalLimiterAllOrNothing(t *testing.T) {
	ctx := context.Background()
	l := verify.NewLocalLimiter()
	one := verify.Rate{Limit: 1, Per: time.Minute}
	two := verify.Rate{Limit: 2, Per: time.Minute}
	a, err := l.Allow(ctx, start, []verify.Limit{{Key: "x", Rate: one}})
	require.NoError(t, err)
	require.True(t, a.OK)
	a, err = l.Allow(ctx, start, []verify.Limit{{Key: "y", Rate: two}, {Key: "x", Rate: one}})
	require.NoError(t, err)
	assert.False(t, a.OK)
	assert.Equal(t, 1, a.Refused)
	assert.Equal(t, time.Minute, a.RetryAfter)
	// y was not spent by the refused call: two more fit.
	for range 2 {
		a, err = l.Allow(ctx, start, []verify.Limit{{Key: "y", Rate: two}})
		require.NoError(t, err)
		require.True(t, a.OK)
	}
	require.NoError(t, l.Refund(ctx, a))
	a, err = l.Allow(ctx, start, []verify.Limit{{Key: "y", Rate: two}})
	require.NoError(t, err)
	assert.True(t, a.OK, "a refunded event can be taken again")
	a, err = l.Allow(ctx, start, []verify.Limit{{Key: "y", Rate: two}})
	require.NoError(t, err)
	assert.False(t, a.OK)
	assert.Equal(t, 30*time.Second, a.RetryAfter, "one token refills in Per/Limit")
}

func TestStoreLimiterRefund(t *testing.T) {
	ctx := context.Background()
	l := verify.NewStoreLimiter(memstore.New())
	r := verify.Rate{Limit: 2, Per: time.Minute}
	a, err := l.Allow(ctx, start, []verify.Limit{{Key: "x", Rate: r}, {Key: "y", Rate: verify.Rate{Limit: 1, Per: time.Hour}}})
	require.NoError(t, err)
	require.True(t, a.OK)
	a2, err := l.Allow(ctx, start, []verify.Limit{{Key: "x", Rate: r}, {Key: "y", Rate: verify.Rate{Limit: 1, Per: time.Hour}}})
	require.NoError(t, err)
	assert.False(t, a2.OK, "y is full")
	assert.Equal(t, 1, a2.Refused)
	require.NoError(t, l.Refund(ctx, a))
	for range 2 {
		a, err = l.Allow(ctx, start, []verify.Limit{{Key: "x", Rate: r}})
		require.NoError(t, err)
		assert.True(t, a.OK, "the refused call and the refund left x with both events")
	}
}

// TestRefusedCheckSpendsNothing: a check refused by the lockout gives back
// the per-IP check it counted.
func TestRefusedCheckSpendsNothing(t *testing.T) {
	h := protected(t, only(func(p *verify.Protection) {
		p.IPChecks = verify.Rate{Limit: 3, Per: time.Hour}
		p.MaxFailures, p.FreeFailures = 1, 100
	}))
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	check := func(c string) error {
		_, err := h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: c, IPAddress: "203.0.113.9"})
		return err
	}
	requireCode(t, check(wrong(code)), verify.ErrInvalidOTP)
	for range 5 {
		requireCode(t, check(wrong(code)), verify.ErrLocked)
	}
	require.NoError(t, h.eng.Unlock(h.ctx, ana))
	require.NoError(t, check(code), "the locked-out checks did not spend the IP's limit")
}

// TestIdempotencyAcrossSecretRotation: a retried Send with the same key,
// after a new secret was put first, matches the original request.
func TestIdempotencyAcrossSecretRotation(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	req := verify.SendRequest{To: ana, IdempotencyKey: "order-11", ForeignID: "order-11", Code: "424242"}
	v1, err := h.eng.Send(h.ctx, req)
	require.NoError(t, err)
	rotated := h.engine(verify.WithSecret([]byte("a-brand-new-secret-0123456789abcd"), secret))
	v2, err := rotated.Send(h.ctx, req)
	require.NoError(t, err, "the same request under the old secret")
	assert.Equal(t, v1.ID, v2.ID)
	assert.Equal(t, 1, h.sms.Len())
	other := req
	other.Code = "434343"
	_, err = rotated.Send(h.ctx, other)
	requireCode(t, err, verify.ErrIdempotencyMismatch)
}

// finishFails is a Store whose Finish fails.
type finishFails struct{ *memstore.Store }

func (finishFails) Finish(context.Context, string, verify.Status, time.Time) (verify.VerificationRecord, bool, error) {
	return verify.VerificationRecord{}, false, errors.New("connection reset")
}

// TestCancelErrorSaysItOnce: a store failure in Cancel names the operation
// once.
func TestCancelErrorSaysItOnce(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	v, _ := h.send()
	eng, err := verify.New(finishFails{h.store}, verify.WithClock(h.clock), verify.WithSecret(secret),
		verify.WithChannels(h.sms), verify.WithLogger(newTextLogger(h.logs)))
	require.NoError(t, err)
	_, err = eng.Cancel(h.ctx, v.ID)
	require.Error(t, err)
	assert.Equal(t, "verify: E925 Internal error: finish verification: connection reset", err.Error())
}

// purgeSpy records the PurgeCounters calls of a Counters backend.
type purgeSpy struct {
	verify.Counters
	before []time.Time
}

func (p *purgeSpy) PurgeCounters(ctx context.Context, before time.Time, limit int) (int, error) {
	p.before = append(p.before, before)
	return p.Counters.PurgeCounters(ctx, before, limit)
}

// TestPurgeDeletesExpiredCounters: Purge also clears the expired counters
// of the engine's Counters, which may be another backend than the Store.
func TestPurgeDeletesExpiredCounters(t *testing.T) {
	h := newHarness(t)
	counters := &purgeSpy{Counters: memstore.New()}
	eng := h.engine(verify.WithCounters(counters), verify.WithProtection(verify.Protection{}))
	_, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "f", Default: true, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	_, err = eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	c, err := counters.GetCounter(h.ctx, "block:prefix:+4712", h.clock.Now())
	require.NoError(t, err)
	assert.Zero(t, c.Value)
	h.clock.Add(48 * time.Hour)
	_, err = eng.Purge(h.ctx)
	require.NoError(t, err)
	require.Len(t, counters.before, 1)
	assert.True(t, counters.before[0].Equal(h.clock.Now()), "counters expired before now are purged")
	n, err := counters.PurgeCounters(h.ctx, h.clock.Now(), 1000)
	require.NoError(t, err)
	assert.Zero(t, n, "nothing expired is left")
}

// TestCheckOrderLockoutBeforeEnded: the recipient's lockout is answered
// before the state of an ended verification, on an engine that has the
// verification in memory and on one that reads it.
func TestCheckOrderLockoutBeforeEnded(t *testing.T) {
	p := only(func(p *verify.Protection) { p.MaxFailures, p.FreeFailures = 2, 100 })
	h := protected(t, p)
	h.flow(verify.Step{Channel: "sms"})
	done, code := h.send()
	_, err := h.check(done.ID, code)
	require.NoError(t, err)
	v, other := h.send()
	for range 2 {
		_, err := h.check(v.ID, wrong(other))
		requireCode(t, err, verify.ErrInvalidOTP)
	}
	fresh := h.engine(verify.WithProtection(p))
	for _, e := range []*verify.Engine{h.eng, fresh} {
		_, err := e.Check(h.ctx, verify.CheckRequest{VerifyID: done.ID, Code: code})
		requireCode(t, err, verify.ErrLocked)
	}
	require.NoError(t, h.eng.Unlock(h.ctx, ana))
	for range 3 {
		_, err = fresh.Check(h.ctx, verify.CheckRequest{VerifyID: done.ID, Code: code})
		requireCode(t, err, verify.ErrAlreadyVerified)
	}
	_, err = fresh.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: other})
	require.NoError(t, err, "the checks of the ended verification gave their failure slots back")
}
