package verify_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/memstore"
	"github.com/openverify/verify/phone"
)

// protected returns a harness whose engine uses p (on top of NoProtection
// for fields p leaves zero) and a default flow with the given duplicates
// policy.
func protected(t *testing.T, p verify.Protection, opts ...verify.Option) *harness {
	t.Helper()
	h := newHarness(t, append([]verify.Option{verify.WithProtection(p)}, opts...)...)
	return h
}

// only returns a Protection with every limit off but the ones set by fn.
func only(fn func(p *verify.Protection)) verify.Protection {
	p := verify.NoProtection()
	fn(&p)
	return p
}

func TestRecipientSendLimit(t *testing.T) {
	h := protected(t, only(func(p *verify.Protection) { p.RecipientSends = verify.Rate{Limit: 5, Per: 10 * time.Minute} }))
	h.flow(verify.Step{Channel: "sms"})
	for range 5 {
		_, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err)
	}
	_, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	e := requireCode(t, err, verify.ErrRateLimited)
	assert.Equal(t, 2*time.Minute, e.RetryAfter, "one send refills every 10m/5")
	assert.Equal(t, 429, e.HTTPStatus())
	assert.Equal(t, 5, h.sms.Len(), "a limited send sends nothing")

	_, err = h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4798765432"}})
	require.NoError(t, err, "other recipients are not limited")

	h.clock.Add(2*time.Minute - time.Second)
	_, err = h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	e = requireCode(t, err, verify.ErrRateLimited)
	assert.Equal(t, time.Second, e.RetryAfter)
	h.clock.Add(time.Second)
	_, err = h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err, "allowed again once the window passes")
}

func TestIPFlowAndGlobalSendLimits(t *testing.T) {
	h := protected(t, only(func(p *verify.Protection) {
		p.IPSends = verify.Rate{Limit: 2, Per: time.Minute}
		p.FlowSends = verify.Rate{Limit: 3, Per: time.Minute}
		p.GlobalSends = verify.Rate{Limit: 4, Per: time.Minute}
	}))
	h.flow(verify.Step{Channel: "sms"})
	other, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "other", Duplicates: verify.DuplicateAllow, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	to := func(i int) verify.Recipient { return verify.Recipient{Phone: fmt.Sprintf("+47900000%02d", i)} }

	send := func(flow string, i int, ip string) error {
		_, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: flow, To: to(i), IPAddress: ip})
		return err
	}
	require.NoError(t, send("", 1, "192.0.2.1"))
	require.NoError(t, send("", 2, "192.0.2.1"))
	requireCode(t, send("", 3, "192.0.2.1"), verify.ErrRateLimited) // per IP
	require.NoError(t, send("", 4, "192.0.2.2"))
	requireCode(t, send("", 5, "192.0.2.3"), verify.ErrRateLimited) // per flow: 3 sent
	require.NoError(t, send(other.ID, 6, "192.0.2.4"))
	e := requireCode(t, send(other.ID, 7, "192.0.2.5"), verify.ErrRateLimited) // global: 4 sent
	assert.Contains(t, e.Message, "codes sent")
	h.clock.Add(time.Minute)
	require.NoError(t, send("", 8, "192.0.2.1"))
}

func TestSharedLimiterAcrossEngines(t *testing.T) {
	{
		h := newHarness(t)
		limiter := verify.NewStoreLimiter(h.store)
		p := only(func(p *verify.Protection) { p.RecipientSends = verify.Rate{Limit: 5, Per: 10 * time.Minute} })
		a := h.engine(verify.WithProtection(p), verify.WithLimiter(limiter))
		b := h.engine(verify.WithProtection(p), verify.WithLimiter(verify.NewStoreLimiter(h.store)))
		h.flow(verify.Step{Channel: "sms"})
		h.clock.Set(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)) // a window boundary
		for i := range 5 {
			e := []*verify.Engine{a, b}[i%2]
			_, err := e.Send(h.ctx, verify.SendRequest{To: ana})
			require.NoError(t, err)
		}
		h.clock.Add(time.Minute)
		for _, e := range []*verify.Engine{a, b} {
			_, err := e.Send(h.ctx, verify.SendRequest{To: ana})
			ve := requireCode(t, err, verify.ErrRateLimited)
			assert.Equal(t, 9*time.Minute, ve.RetryAfter, "the shared window ends 10 minutes after it began")
		}
		h.clock.Add(9 * time.Minute)
		_, err := b.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err, "a new window allows sends again")
	}
}

func TestResendCooldown(t *testing.T) {
	h := protected(t, only(func(p *verify.Protection) { p.ResendCooldown = 30 * time.Second }))
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	h.clock.Add(10 * time.Second)
	_, err := h.eng.Resend(h.ctx, v.ID)
	e := requireCode(t, err, verify.ErrRateLimited)
	assert.Equal(t, 20*time.Second, e.RetryAfter)
	h.clock.Add(20 * time.Second)
	_, err = h.eng.Resend(h.ctx, v.ID)
	require.NoError(t, err)
	m, _ := h.sms.Last()
	assert.Equal(t, code, m.Code)
	_, err = h.eng.Resend(h.ctx, v.ID)
	requireCode(t, err, verify.ErrRateLimited)
}

func TestCheckIPLimit(t *testing.T) {
	h := protected(t, only(func(p *verify.Protection) { p.IPChecks = verify.Rate{Limit: 3, Per: time.Minute} }))
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	for range 3 {
		_, err := h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: wrong(code), IPAddress: "198.51.100.7"})
		requireCode(t, err, verify.ErrInvalidOTP)
	}
	_, err := h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code, IPAddress: "198.51.100.7"})
	e := requireCode(t, err, verify.ErrRateLimited)
	assert.Equal(t, 20*time.Second, e.RetryAfter)
	got, _ := h.eng.Get(h.ctx, v.ID)
	assert.Equal(t, 3, got.Attempts, "a rate-limited check consumes no attempt")
	h.clock.Add(20 * time.Second)
	_, err = h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code, IPAddress: "198.51.100.7"})
	require.NoError(t, err)
}

// TestNISTFailureBudget walks the scenario of NIST SP 800-63B §5.2.2: wrong
// codes count per recipient across verifications; new codes, resends and
// fallbacks never reset the count; at the budget every verification of the
// recipient is locked.
func TestNISTFailureBudget(t *testing.T) {
	h := protected(t, only(func(p *verify.Protection) {
		p.FreeFailures, p.MaxFailures, p.LockFor = 100, 12, time.Hour
	}))
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	failures := 0
	fail := func(id, code string) {
		t.Helper()
		_, err := h.check(id, wrong(code))
		requireCode(t, err, verify.ErrInvalidOTP)
		failures++
	}

	v1, c1 := h.send()
	for range 4 {
		fail(v1.ID, c1)
	}
	_, err := h.eng.Resend(h.ctx, v1.ID)
	require.NoError(t, err)
	fail(v1.ID, c1) // 5: v1 uses its last attempt
	_, err = h.check(v1.ID, c1)
	requireCode(t, err, verify.ErrMaxAttempts)

	v2, c2 := h.send() // a new code does not reset the budget
	fail(v2.ID, c2)
	h.clock.Add(30 * time.Second)
	assert.Equal(t, 1, h.processDue(), "the fallback fires")
	for range 4 {
		fail(v2.ID, c2) // 10
	}
	v3, c3 := h.send()
	fail(v3.ID, c3)
	fail(v3.ID, c3) // 12 = MaxFailures
	require.Equal(t, 12, failures)

	_, err = h.check(v3.ID, c3)
	e := requireCode(t, err, verify.ErrLocked)
	assert.Equal(t, time.Hour, e.RetryAfter)
	got, _ := h.eng.Get(h.ctx, v3.ID)
	assert.Equal(t, 2, got.Attempts, "a locked check consumes no attempt")

	v4, c4 := h.send()
	_, err = h.check(v4.ID, c4)
	requireCode(t, err, verify.ErrLocked) // locked for every verification, right code too

	// Another recipient is not affected.
	h.sms.Reset()
	other, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4799999999", Email: "bo@example.com"}})
	require.NoError(t, err)
	m, _ := h.sms.Last()
	_, err = h.check(other.ID, m.Code)
	require.NoError(t, err)

	// The lock lifts after LockFor, or at once with Unlock.
	require.NoError(t, h.eng.Unlock(h.ctx, ana))
	_, err = h.check(v4.ID, c4)
	require.NoError(t, err, "Unlock lifts the lock")
	requireCode(t, h.eng.Unlock(h.ctx, verify.Recipient{}), verify.ErrInvalidRecipient)
}

func TestFailureDelaysGrow(t *testing.T) {
	h := protected(t, only(func(p *verify.Protection) {
		p.FreeFailures, p.FailureDelay, p.MaxFailureDelay, p.MaxFailures = 2, time.Second, 4*time.Second, 100
	}))
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "many", MaxAttempts: 20, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err)
	m, _ := h.sms.Last()
	for range 2 {
		_, err := h.check(v.ID, wrong(m.Code))
		requireCode(t, err, verify.ErrInvalidOTP)
	}
	for _, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		_, err := h.check(v.ID, wrong(m.Code))
		e := requireCode(t, err, verify.ErrRateLimited)
		assert.Equal(t, wait, e.RetryAfter)
		h.clock.Add(wait)
		_, err = h.check(v.ID, wrong(m.Code))
		requireCode(t, err, verify.ErrInvalidOTP)
	}
	h.clock.Add(4 * time.Second)
	_, err = h.check(v.ID, m.Code)
	require.NoError(t, err)
	v2, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err)
	_, err = h.check(v2.ID, "000000")
	requireCode(t, err, verify.ErrInvalidOTP) // the success reset the count: no delay
}

func TestIPAllowList(t *testing.T) {
	h := newHarness(t)
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "office", Duplicates: verify.DuplicateAllow,
		AllowedIPs: []string{"203.0.113.0/24", "2001:db8::/32", "198.51.100.7"}, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	for _, ip := range []string{"203.0.113.9", "2001:db8::1", "::ffff:203.0.113.200", "198.51.100.7"} {
		_, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana, IPAddress: ip})
		require.NoError(t, err, ip)
	}
	for _, ip := range []string{"203.0.114.1", "2001:db9::1", "198.51.100.8", "", "not an ip"} {
		_, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana, IPAddress: ip})
		e := requireCode(t, err, verify.ErrIPNotAllowed)
		assert.Equal(t, 403, e.HTTPStatus())
	}
	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana, IPAddress: "203.0.113.9"})
	require.NoError(t, err)
	m, _ := h.sms.Last()
	_, err = h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code, IPAddress: "192.0.2.1"})
	requireCode(t, err, verify.ErrIPNotAllowed)
	got, _ := h.eng.Get(h.ctx, v.ID)
	assert.Equal(t, 0, got.Attempts, "a refused IP consumes no attempt")
	_, err = h.eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code, IPAddress: "2001:db8:5::9"})
	require.NoError(t, err)

	_, err = h.eng.CreateFlow(h.ctx, verify.Flow{Name: "bad", AllowedIPs: []string{"300.1.2.3"}, Steps: []verify.Step{{Channel: "sms"}}})
	e := requireCode(t, err, verify.ErrInvalidFlow)
	assert.Equal(t, "allowed_ips[0]", e.Parameter)
}

func TestGeoPermissions(t *testing.T) {
	_, err := newHarness(t).eng.CreateFlow(context.Background(), verify.Flow{Name: "geo", AllowedCountries: []string{"NO"},
		Steps: []verify.Step{{Channel: "sms"}}})
	e := requireCode(t, err, verify.ErrInvalidFlow)
	assert.Contains(t, e.Message, "phone.Parser")

	h := newHarness(t, verify.WithPhoneParser(phone.Parser{}))
	nordic, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "nordic", AllowedCountries: []string{"no", "SE"},
		Duplicates: verify.DuplicateAllow, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	assert.Equal(t, []string{"NO", "SE"}, nordic.AllowedCountries)
	noUK, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "no-uk", DeniedCountries: []string{"GB"},
		DeniedNumberTypes: []verify.NumberType{verify.NumberPremiumRate, verify.NumberSharedCost},
		Duplicates:        verify.DuplicateAllow, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)

	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: nordic.ID, To: verify.Recipient{Phone: "+47 412 34 567"}})
	require.NoError(t, err)
	assert.Equal(t, "+4741234567", v.To.Phone, "the parser normalises to E.164")
	_, err = h.eng.Send(h.ctx, verify.SendRequest{FlowID: nordic.ID, To: verify.Recipient{Phone: "+447400123456"}})
	e = requireCode(t, err, verify.ErrGeoNotAllowed)
	assert.Equal(t, 403, e.HTTPStatus())

	_, err = h.eng.Send(h.ctx, verify.SendRequest{FlowID: noUK.ID, To: verify.Recipient{Phone: "+447400123456"}})
	requireCode(t, err, verify.ErrGeoNotAllowed)
	_, err = h.eng.Send(h.ctx, verify.SendRequest{FlowID: noUK.ID, To: verify.Recipient{Phone: "+4741234567"}})
	require.NoError(t, err)
	_, err = h.eng.Send(h.ctx, verify.SendRequest{FlowID: noUK.ID, To: verify.Recipient{Phone: "+33 8 92 12 34 56"}})
	e = requireCode(t, err, verify.ErrGeoNotAllowed)
	assert.Contains(t, e.Message, "premium_rate")
	_, err = h.eng.Send(h.ctx, verify.SendRequest{FlowID: noUK.ID, To: verify.Recipient{Phone: "+47 1234"}})
	requireCode(t, err, verify.ErrInvalidRecipient)
}

func TestEmailDomains(t *testing.T) {
	h := newHarness(t)
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "mail", Duplicates: verify.DuplicateAllow, Steps: []verify.Step{{Channel: "email"}}})
	require.NoError(t, err)
	for _, bad := range []string{"ana@localhost", "ana@127.0.0.1", "ana@[127.0.0.1]", "ana@ex_ample.com", "ana@-example.com",
		"ana@example.c0m", "ana@example..com", "ana@example.c"} {
		_, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: verify.Recipient{Email: bad}})
		requireCode(t, err, verify.ErrInvalidRecipient)
	}
	for _, good := range []string{"ana@example.com", "a.b+tag@sub.example.co.uk", "ana@xn--bcher-kva.example"} {
		_, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: verify.Recipient{Email: good}})
		require.NoError(t, err, good)
	}
}

// TestPumpingSimulation sends a burst of codes to one number range that no
// one ever verifies, as SMS-pumping fraud does: the range is blocked, while
// normal traffic to another country goes on. The monitor's counts are
// written with the verifications (memstore is a CountingStore), or apart
// from them when the counters are elsewhere.
func TestPumpingSimulation(t *testing.T) {
	t.Run("counted with the verifications", func(t *testing.T) { testPumping(t) })
	t.Run("counted apart", func(t *testing.T) { testPumping(t, verify.WithCounters(memstore.New())) })
	c := memstore.New()
	t.Run("counted with the limits", func(t *testing.T) {
		testPumping(t, verify.WithCounters(c), verify.WithLimiter(verify.NewStoreLimiter(c)))
	})
}

// takeCounter counts the calls to its Counters.
type takeCounter struct {
	verify.Counters
	takes, gets atomic.Int64
	keys        []string
}

func (c *takeCounter) Take(ctx context.Context, now time.Time, takes []verify.Take) (verify.Taken, error) {
	c.takes.Add(1)
	for _, t := range takes {
		c.keys = append(c.keys, t.Key)
	}
	return c.Counters.Take(ctx, now, takes)
}

func (c *takeCounter) GetCounter(ctx context.Context, key string, now time.Time) (verify.Counter, error) {
	c.gets.Add(1)
	return c.Counters.GetCounter(ctx, key, now)
}

// TestSendCountersInOneTake: with its counters apart from the Store (on
// Redis, say) and the rate limits in a StoreLimiter on the same counters,
// a Send's prefix block, conversion count and limits are one Take, and
// decide as they do apart: a block refuses before the limits count, a
// limit refuses without the send counted, and a Send that goes out counts
// them all.
func TestSendCountersInOneTake(t *testing.T) {
	p := verify.NoProtection()
	p.RecipientSends = verify.Rate{Limit: 1, Per: time.Hour}
	p.Conversion = verify.Conversion{Window: time.Hour, MinSends: 100, Threshold: 0.2, BlockFor: time.Hour}
	h := newHarness(t)
	c := &takeCounter{Counters: memstore.New()}
	eng := h.engine(verify.WithProtection(p), verify.WithCounters(c), verify.WithLimiter(verify.NewStoreLimiter(c)))
	h.flow(verify.Step{Channel: "sms"})
	ana := verify.Recipient{Phone: "+4791234567"}
	_, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, int64(1), c.takes.Load(), "one Take for the send's counters")
	assert.Zero(t, c.gets.Load())
	require.Len(t, c.keys, 3)
	assert.True(t, strings.HasPrefix(c.keys[0], "block:"), c.keys[0])
	assert.True(t, strings.HasPrefix(c.keys[1], "conv:sent:"), c.keys[1])
	assert.True(t, strings.HasPrefix(c.keys[2], "rate:"), c.keys[2])
	sentKey := c.keys[1]
	sent := func() int64 {
		got, err := c.Counters.GetCounter(h.ctx, sentKey, h.clock.Now())
		require.NoError(t, err)
		return got.Value
	}
	assert.Equal(t, int64(1), sent())

	_, err = eng.Send(h.ctx, verify.SendRequest{To: ana})
	requireCode(t, err, verify.ErrRateLimited)
	assert.Equal(t, int64(1), sent(), "a Send the limits refuse counts no send")

	// A blocked prefix refuses before any limit counts.
	_, err = c.Counters.Take(h.ctx, h.clock.Now(), []verify.Take{{Key: c.keys[0], Delta: 1, Max: verify.NoLimit, ExpiresAt: h.clock.Now().Add(time.Hour)}})
	require.NoError(t, err)
	bob := verify.Recipient{Phone: "+4791234568"}
	_, err = eng.Send(h.ctx, verify.SendRequest{To: bob})
	requireCode(t, err, verify.ErrBlocked)
	require.NoError(t, c.Counters.DeleteCounter(h.ctx, c.keys[0]))
	_, err = eng.Send(h.ctx, verify.SendRequest{To: bob})
	require.NoError(t, err, "the block refused without counting bob's limit")
	assert.Equal(t, int64(2), sent())
}

func testPumping(t *testing.T, opts ...verify.Option) {
	var mu sync.Mutex
	var events []verify.Event
	obs := verify.ObserverFunc(func(_ context.Context, ev verify.Event) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	})
	h := protected(t, only(func(p *verify.Protection) {
		p.Conversion = verify.Conversion{Window: time.Hour, MinSends: 20, Threshold: 0.2, BlockFor: time.Hour}
	}), append(opts, verify.WithObserver(obs))...)
	h.flow(verify.Step{Channel: "sms"})

	blocked := 0
	for i := range 40 {
		_, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: fmt.Sprintf("+2250700%04d", i)}})
		if err != nil {
			e := requireCode(t, err, verify.ErrBlocked)
			assert.Contains(t, e.Message, "+2250700")
			assert.Equal(t, time.Hour, e.RetryAfter, "the block's end is known: BlockFor after it was set")
			blocked++
		}
		// Legitimate users elsewhere verify their codes.
		v, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: fmt.Sprintf("+4741%06d", i)}})
		require.NoError(t, err, "traffic to other ranges continues")
		m, _ := h.sms.Last()
		_, err = h.check(v.ID, m.Code)
		require.NoError(t, err)
	}
	assert.Equal(t, 20, blocked, "after 20 unverified sends the range is blocked")
	mu.Lock()
	nBlocked := 0
	for _, ev := range events {
		if ev.Type == verify.EventBlocked {
			nBlocked++
			assert.Equal(t, "E922", ev.ErrorCode)
			assert.Contains(t, ev.Reason, "low conversion")
		}
	}
	mu.Unlock()
	assert.Equal(t, 20, nBlocked, "every blocked send is recorded as an event")
	assert.Contains(t, h.logs.String(), "send blocked")

	h.clock.Add(time.Hour)
	_, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+22507009999"}})
	require.NoError(t, err, "the block lifts after BlockFor")
}

// TestFailedSendsNotCounted: the conversion monitor counts codes that went
// out. A Send whose every step failed gives back the count its Store made
// with the verification, so a provider's outage does not look like a range
// that never verifies.
func TestFailedSendsNotCounted(t *testing.T) {
	for name, opts := range map[string][]verify.Option{"counted with the verifications": nil,
		"counted apart": {verify.WithCounters(memstore.New())}} {
		t.Run(name, func(t *testing.T) {
			h := protected(t, only(func(p *verify.Protection) {
				p.Conversion = verify.Conversion{Window: time.Hour, MinSends: 5, Threshold: 0.5, BlockFor: time.Hour}
			}), opts...)
			h.flow(verify.Step{Channel: "sms"})
			h.sms.FailNext(10, nil)
			for i := range 10 {
				_, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: fmt.Sprintf("+2250700%04d", i)}})
				require.Error(t, err, "the channel fails")
			}
			// Four sends that go out, verified: below MinSends if the
			// failed ones counted nothing.
			for i := range 4 {
				v, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: fmt.Sprintf("+2250700%04d", 100+i)}})
				require.NoError(t, err, "send %d: the failed sends were not counted", i)
				if i < 2 {
					m, _ := h.sms.Last()
					_, err = h.check(v.ID, m.Code)
					require.NoError(t, err)
				}
			}
			_, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+22507000200"}})
			require.NoError(t, err, "the fifth send that went out reaches MinSends with 2 of 5 verified, and is itself sent")
			_, err = h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+22507000201"}})
			requireCode(t, err, verify.ErrBlocked)
		})
	}
}

func TestSendHook(t *testing.T) {
	var seen verify.SendAttempt
	hook := func(_ context.Context, a verify.SendAttempt) error {
		seen = a
		if a.Country == "GB" {
			return errors.New("risk score 97")
		}
		return nil
	}
	h := newHarness(t, verify.WithSendHook(hook), verify.WithPhoneParser(phone.Parser{}))
	h.flow(verify.Step{Channel: "sms"})
	_, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+447400123456"}, IPAddress: "192.0.2.4", ForeignID: "u1"})
	e := requireCode(t, err, verify.ErrBlocked)
	assert.Contains(t, e.Message, "risk score 97")
	assert.Equal(t, verify.SendAttempt{To: verify.Recipient{Phone: "+447400123456"}, Country: "GB", Prefix: "+44740012",
		IPAddress: "192.0.2.4", ForeignID: "u1", FlowID: seen.FlowID}, seen)
	assert.Equal(t, 0, h.sms.Len())
	_, err = h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4741234567"}})
	require.NoError(t, err)
}

func TestIdempotentSend(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	req := verify.SendRequest{To: ana, IdempotencyKey: "order-9-login", ForeignID: "order-9"}
	v1, err := h.eng.Send(h.ctx, req)
	require.NoError(t, err)
	v2, err := h.eng.Send(h.ctx, req)
	require.NoError(t, err)
	assert.Equal(t, v1.ID, v2.ID, "a repeat returns the same verification")
	assert.Equal(t, 1, h.sms.Len(), "and sends nothing")

	other := req
	other.ForeignID = "order-10"
	_, err = h.eng.Send(h.ctx, other)
	e := requireCode(t, err, verify.ErrIdempotencyMismatch)
	assert.Equal(t, 409, e.HTTPStatus())

	// Concurrent duplicates: one winner.
	req.IdempotencyKey = "race"
	var wg sync.WaitGroup
	ids := make(chan string, 30)
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := h.eng.Send(h.ctx, req)
			assert.NoError(t, err)
			ids <- v.ID
		}()
	}
	wg.Wait()
	close(ids)
	distinct := map[string]bool{}
	for id := range ids {
		distinct[id] = true
	}
	assert.Len(t, distinct, 1, "every concurrent duplicate gets the one verification")
	assert.Equal(t, 2, h.sms.Len(), "the key race sent one message")
}

func TestDuplicatePolicies(t *testing.T) {
	h := newHarness(t)
	mk := func(p verify.DuplicatePolicy) verify.Flow {
		f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "policy " + string(p), Duplicates: p, Steps: []verify.Step{{Channel: "sms"}}})
		require.NoError(t, err)
		return f
	}
	reuse, replace, allow := mk(""), mk(verify.DuplicateReplace), mk(verify.DuplicateAllow)
	assert.Equal(t, verify.DuplicateReuse, reuse.Duplicates, "reuse is the default")

	a, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: reuse.ID, To: ana})
	require.NoError(t, err)
	first, _ := h.sms.Last()
	b, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: reuse.ID, To: ana})
	require.NoError(t, err)
	assert.Equal(t, a.ID, b.ID, "reuse returns the open verification")
	assert.Equal(t, 2, b.Sends)
	again, _ := h.sms.Last()
	assert.Equal(t, first.Code, again.Code, "and resends its code")

	c, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: replace.ID, To: ana})
	require.NoError(t, err)
	cm, _ := h.sms.Last()
	d, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: replace.ID, To: ana})
	require.NoError(t, err)
	assert.NotEqual(t, c.ID, d.ID)
	_, err = h.check(c.ID, cm.Code)
	requireCode(t, err, verify.ErrCanceled)

	e1, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: allow.ID, To: ana})
	require.NoError(t, err)
	e2, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: allow.ID, To: ana})
	require.NoError(t, err)
	assert.NotEqual(t, e1.ID, e2.ID)
	for _, id := range []string{e1.ID, e2.ID} {
		got, _ := h.eng.Get(h.ctx, id)
		assert.Equal(t, verify.StatusSent, got.Status)
	}

	_, err = h.eng.CreateFlow(h.ctx, verify.Flow{Name: "bad", Duplicates: "merge", Steps: []verify.Step{{Channel: "sms"}}})
	requireCode(t, err, verify.ErrInvalidFlow)
}

// TestConcurrentDuplicates: Sends to one recipient racing under reuse
// start one verification; under replace they leave one open.
func TestConcurrentDuplicates(t *testing.T) {
	for _, policy := range []verify.DuplicatePolicy{verify.DuplicateReuse, verify.DuplicateReplace} {
		t.Run(string(policy), func(t *testing.T) {
			h := newHarness(t)
			f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "p", Duplicates: policy, Steps: []verify.Step{{Channel: "sms"}}})
			require.NoError(t, err)
			var mu sync.Mutex
			ids := map[string]bool{}
			var wg sync.WaitGroup
			for range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
					if err != nil {
						// Reuse: at most MaxSends resends; replace: losing
						// the race too often.
						e, ok := verify.AsError(err)
						if assert.True(t, ok, "%v", err) {
							assert.Contains(t, []string{verify.ErrMaxSends.Code, verify.ErrRateLimited.Code}, e.Code)
						}
						return
					}
					mu.Lock()
					ids[v.ID] = true
					mu.Unlock()
				}()
			}
			wg.Wait()
			open := 0
			for id := range ids {
				v, err := h.eng.Get(h.ctx, id)
				require.NoError(t, err)
				if v.Status.Open() {
					open++
				}
			}
			assert.Equal(t, 1, open, "one verification is left open")
			if policy == verify.DuplicateReuse {
				assert.Len(t, ids, 1, "every Send answers with the one verification")
			}
		})
	}
}

// endingStore ends the first verification FindOpen returns right after
// returning it, as a Check on another instance might.
type endingStore struct {
	verify.Store
	ended bool
}

func (s *endingStore) FindOpen(ctx context.Context, flowID string, to verify.Recipient, now time.Time) ([]verify.VerificationRecord, error) {
	open, err := s.Store.FindOpen(ctx, flowID, to, now)
	if err == nil && len(open) > 0 && !s.ended {
		s.ended = true
		if _, _, err := s.Store.Finish(ctx, open[0].ID, verify.StatusVerified, start); err != nil {
			return nil, err
		}
	}
	return open, err
}

// TestReuseOfAVerificationThatEnds: when the open verification a Send
// would reuse ends meanwhile, the Send starts a new one.
func TestReuseOfAVerificationThatEnds(t *testing.T) {
	h := newHarness(t)
	eng, err := verify.New(&endingStore{Store: h.store}, verify.WithClock(h.clock), verify.WithChannels(h.sms),
		verify.WithSecret(secret), verify.WithProtection(verify.NoProtection()))
	require.NoError(t, err)
	f, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "reuse", Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	a, err := eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err)
	b, err := eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err, "not E910 for the verification that ended")
	assert.NotEqual(t, a.ID, b.ID)
	assert.Equal(t, verify.StatusSent, b.Status)
}

// TestReuseCountsSendLimitsOnce: a Send that resends an open verification
// counts once towards the recipient's send limit.
func TestReuseCountsSendLimitsOnce(t *testing.T) {
	p := only(func(p *verify.Protection) {
		p.RecipientSends = verify.Rate{Limit: 2, Per: time.Hour}
		p.ResendCooldown = -1
	})
	h := protected(t, p)
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "reuse", Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	a, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err)
	b, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err, "the second send is within the limit of 2")
	assert.Equal(t, a.ID, b.ID)
	assert.Equal(t, 2, b.Sends)
	_, err = h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	requireCode(t, err, verify.ErrRateLimited)
}

func TestDefaultProtectionIsOn(t *testing.T) {
	p := verify.DefaultProtection()
	assert.Equal(t, verify.Rate{Limit: 5, Per: 10 * time.Minute}, p.RecipientSends)
	assert.Equal(t, 30*time.Second, p.ResendCooldown)
	assert.Equal(t, 100, p.MaxFailures)
	for _, bad := range []verify.Protection{
		{MaxFailures: 101},
		{RecipientSends: verify.Rate{Limit: 5}},
		{Conversion: verify.Conversion{Threshold: 2}},
		{LockFor: -time.Second},
	} {
		_, err := verify.New(newHarness(t).store, verify.WithProtection(bad))
		assert.Error(t, err)
	}
}

func TestLocalLimiterEvictsIdleKeys(t *testing.T) {
	l := verify.NewLocalLimiter()
	r := verify.Rate{Limit: 1, Per: time.Minute}
	now := start
	for i := range 5000 {
		a, err := l.Allow(context.Background(), now, []verify.Limit{{Key: fmt.Sprint("k", i), Rate: r}})
		require.NoError(t, err)
		require.True(t, a.OK)
	}
	assert.Greater(t, l.Len(), 4000)
	now = now.Add(time.Minute)
	for i := range 1024 {
		_, err := l.Allow(context.Background(), now, []verify.Limit{{Key: fmt.Sprint("new", i), Rate: r}})
		require.NoError(t, err)
	}
	assert.Less(t, l.Len(), 1100, "buckets idle for their whole period are evicted")
}

// TestFailuresCountAcrossEngines: wrong codes entered through one instance
// count towards the lockout seen by another.
func TestFailuresCountAcrossEngines(t *testing.T) {
	p := only(func(p *verify.Protection) { p.FreeFailures, p.MaxFailures, p.LockFor = 100, 6, time.Hour })
	h := protected(t, p)
	b := h.engine(verify.WithProtection(p))
	h.flow(verify.Step{Channel: "sms"})
	for i := range 6 {
		v, code := h.send()
		e := []*verify.Engine{h.eng, b}[i%2]
		_, err := e.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: wrong(code)})
		requireCode(t, err, verify.ErrInvalidOTP)
	}
	v, code := h.send()
	for _, e := range []*verify.Engine{h.eng, b} {
		_, err := e.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
		requireCode(t, err, verify.ErrLocked)
	}
}

// plainStore is memstore as a Store and nothing more: neither a
// CountingStore nor a GuardedStore, its Counters the engine's.
type plainStore struct{ verify.Store }

// committedThenFailed is memstore whose CreateVerificationCounting stores
// the verification and its counts, then answers an error, as a connection
// lost during the commit does.
type committedThenFailed struct {
	*memstore.Store
	fail atomic.Bool
}

func (s *committedThenFailed) CreateVerificationCounting(ctx context.Context, v verify.VerificationRecord, steps []verify.PendingStep, g verify.Guard, counts []verify.Count) ([]verify.Counter, error) {
	c, err := s.Store.CreateVerificationCounting(ctx, v, steps, g, counts)
	if err == nil && s.fail.Load() {
		return nil, errors.New("connection lost during the commit")
	}
	return c, err
}

// TestConversionCountedOnce: a verification is counted once for the
// conversion monitor as sent and once as verified, whichever of the
// Store's abilities count them: with a Store that has neither ability,
// the verification is counted with the Check's Take of the failures, and
// given back by a right code the Store did not verify; after a Send whose
// stored verification was answered with an error, a retry with its
// IdempotencyKey sends it without counting it again.
func TestConversionCountedOnce(t *testing.T) {
	p := verify.NoProtection()
	p.Conversion = verify.Conversion{Window: time.Hour, MinSends: 100, Threshold: 0.2, BlockFor: time.Hour}
	t.Run("neither counting nor guarded", func(t *testing.T) {
		h := newHarness(t)
		eng, err := verify.New(plainStore{h.store}, verify.WithClock(h.clock), verify.WithChannels(h.sms),
			verify.WithSecret(secret), verify.WithLogger(newTextLogger(h.logs)), verify.WithProtection(p))
		require.NoError(t, err)
		_, err = eng.CreateFlow(h.ctx, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{{Channel: "sms"}}})
		require.NoError(t, err)
		v, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err)
		m, _ := h.sms.Last()
		_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
		require.NoError(t, err)
		assert.Equal(t, int64(1), counterSum(t, h.store, "conv:sent:", h.clock.Now()))
		assert.Equal(t, int64(1), counterSum(t, h.store, "conv:ok:", h.clock.Now()), "the verification is counted")
		_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
		requireCode(t, err, verify.ErrAlreadyVerified)
		assert.Equal(t, int64(1), counterSum(t, h.store, "conv:ok:", h.clock.Now()), "and only once")
	})
	t.Run("idempotent retry", func(t *testing.T) {
		h := newHarness(t)
		st := &committedThenFailed{Store: h.store}
		eng, err := verify.New(st, verify.WithClock(h.clock), verify.WithChannels(h.sms),
			verify.WithSecret(secret), verify.WithLogger(newTextLogger(h.logs)), verify.WithProtection(p))
		require.NoError(t, err)
		_, err = eng.CreateFlow(h.ctx, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{{Channel: "sms"}}})
		require.NoError(t, err)
		req := verify.SendRequest{To: ana, IdempotencyKey: "login-1"}
		st.fail.Store(true)
		_, err = eng.Send(h.ctx, req)
		require.Error(t, err, "the store answered an error")
		st.fail.Store(false)
		v, err := eng.Send(h.ctx, req)
		require.NoError(t, err, "the retry finds the stored verification and sends it")
		assert.Equal(t, 1, h.sms.Len())
		assert.NotEmpty(t, v.ID)
		assert.Equal(t, int64(1), counterSum(t, h.store, "conv:sent:", h.clock.Now()), "counted once, when it was stored")
	})
}

// takingStore is memstore counting its Take calls.
type takingStore struct {
	*memstore.Store
	takes atomic.Int64
}

func (s *takingStore) Take(ctx context.Context, now time.Time, takes []verify.Take) (verify.Taken, error) {
	s.takes.Add(1)
	return s.Store.Take(ctx, now, takes)
}

// TestSendLimitsInTheStoresWrite: with the counters in a CountingStore and
// the rate limits in a StoreLimiter on them (instances sharing one
// database), a Send's limits are decided and counted by the write that
// stores its verification, with its prefix block and conversion count: no
// Take of their own. A Send over a limit stores and counts nothing and
// answers E918 with the time to the window's end; a blocked prefix
// answers E922 even over a limit; a Send that reuses an open verification
// counts its limits apart, and is refused by them.
func TestSendLimitsInTheStoresWrite(t *testing.T) {
	p := verify.NoProtection()
	p.RecipientSends = verify.Rate{Limit: 2, Per: time.Hour}
	p.Conversion = verify.Conversion{Window: time.Hour, MinSends: 100, Threshold: 0.2, BlockFor: time.Hour}
	h := newHarness(t)
	st := &takingStore{Store: memstore.New()}
	eng := h.engineOn(st, verify.WithProtection(p), verify.WithLimiter(verify.NewStoreLimiter(st)))
	flow, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "allow", Steps: []verify.Step{{Channel: "sms"}}, Default: true, Duplicates: verify.DuplicateAllow})
	require.NoError(t, err)
	ana := verify.Recipient{Phone: "+4791234567"}
	sent := func() int64 {
		cs, err := st.ListCounters(h.ctx, "conv:sent:", h.clock.Now(), "", 10)
		require.NoError(t, err)
		var n int64
		for _, c := range cs {
			n += c.Value
		}
		return n
	}
	stored := func() int {
		page, err := eng.List(h.ctx, verify.Query{})
		require.NoError(t, err)
		return len(page.Verifications)
	}
	for range 2 {
		_, err := eng.Send(h.ctx, verify.SendRequest{FlowID: flow.ID, To: ana})
		require.NoError(t, err)
	}
	assert.Zero(t, st.takes.Load(), "the limits were counted by the writes that stored the verifications")
	h.clock.Add(time.Minute)
	_, err = eng.Send(h.ctx, verify.SendRequest{FlowID: flow.ID, To: ana})
	e := requireCode(t, err, verify.ErrRateLimited)
	windowEnd := start.Truncate(time.Hour).Add(time.Hour)
	assert.Equal(t, windowEnd.Sub(h.clock.Now()), e.RetryAfter, "until the limit's window ends")
	assert.Equal(t, 2, stored(), "a refused Send stores nothing")
	assert.Equal(t, int64(2), sent(), "and counts no send")
	assert.Zero(t, st.takes.Load(), "nor gives anything back")

	// A blocked prefix is E922, over a limit or not.
	_, err = st.Take(h.ctx, h.clock.Now(), []verify.Take{{Key: "block:prefix:+479123", Delta: 1, Max: verify.NoLimit, ExpiresAt: h.clock.Now().Add(time.Hour)}})
	require.NoError(t, err)
	_, err = eng.Send(h.ctx, verify.SendRequest{FlowID: flow.ID, To: ana})
	requireCode(t, err, verify.ErrBlocked)
	_, err = eng.Send(h.ctx, verify.SendRequest{FlowID: flow.ID, To: verify.Recipient{Phone: "+4791234000"}})
	requireCode(t, err, verify.ErrBlocked)

	// Under reuse, a Send that resends the open verification counts its
	// limits with the Limiter.
	reuse, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "reuse", Steps: []verify.Step{{Channel: "sms"}}, Duplicates: verify.DuplicateReuse})
	require.NoError(t, err)
	bob := verify.Recipient{Phone: "+4792234567"}
	first, err := eng.Send(h.ctx, verify.SendRequest{FlowID: reuse.ID, To: bob})
	require.NoError(t, err)
	takes := st.takes.Load()
	again, err := eng.Send(h.ctx, verify.SendRequest{FlowID: reuse.ID, To: bob})
	require.NoError(t, err)
	assert.Equal(t, first.ID, again.ID, "reused")
	assert.Equal(t, takes+1, st.takes.Load(), "the resend's limits are one Take")
	_, err = eng.Send(h.ctx, verify.SendRequest{FlowID: reuse.ID, To: bob})
	requireCode(t, err, verify.ErrRateLimited)
	got, err := eng.Get(h.ctx, first.ID)
	require.NoError(t, err)
	assert.Len(t, got.Deliveries, 2, "the refused Send resent nothing")
}

// duplicateHooks is memstore that runs onFinish (once) before a Finish,
// as a Send that lands while another replaces the open verification, and
// ends a verification (once, when armed) before CountSend counts its
// resend, as a Check that verifies it meanwhile.
type duplicateHooks struct {
	*memstore.Store
	onFinish    func()
	endOnResend bool
}

func (s *duplicateHooks) Finish(ctx context.Context, id string, status verify.Status, now time.Time) (verify.VerificationRecord, bool, error) {
	if h := s.onFinish; h != nil {
		s.onFinish = nil
		h()
	}
	return s.Store.Finish(ctx, id, status, now)
}

func (s *duplicateHooks) CountSend(ctx context.Context, id string, max int, cooldown time.Duration, now time.Time) (verify.VerificationRecord, bool, error) {
	if s.endOnResend {
		s.endOnResend = false
		_, _, _ = s.Store.Finish(ctx, id, verify.StatusVerified, now)
	}
	return s.Store.CountSend(ctx, id, max, cooldown, now)
}

// TestSharedLimitsBeforeDuplicates: with the limits left to the Store's
// write (a StoreLimiter on a CountingStore), a Send that finds an open
// verification of its recipient counts its limits before it replaces or
// reuses it, once. A Send that lands while another replaces the open
// verification, and finds the limit spent, is refused, and the replacing
// Send goes through; a reused verification that ends before its resend
// leaves the Send to store a new one, counted once.
func TestSharedLimitsBeforeDuplicates(t *testing.T) {
	p := verify.NoProtection()
	p.IPSends = verify.Rate{Limit: 2, Per: time.Hour}
	h := newHarness(t)
	st := &duplicateHooks{Store: memstore.New()}
	eng := h.engineOn(st, verify.WithProtection(p), verify.WithLimiter(verify.NewStoreLimiter(st)))
	replace, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "replace", Steps: []verify.Step{{Channel: "sms"}}, Duplicates: verify.DuplicateReplace})
	require.NoError(t, err)
	bob := verify.Recipient{Phone: "+4792234567"}
	first, err := eng.Send(h.ctx, verify.SendRequest{FlowID: replace.ID, To: bob, IPAddress: "203.0.113.1"})
	require.NoError(t, err)
	var carolErr error
	st.onFinish = func() {
		_, carolErr = eng.Send(h.ctx, verify.SendRequest{FlowID: replace.ID, To: verify.Recipient{Phone: "+4793334567"}, IPAddress: "203.0.113.1"})
	}
	second, err := eng.Send(h.ctx, verify.SendRequest{FlowID: replace.ID, To: bob, IPAddress: "203.0.113.1"})
	require.NoError(t, err, "bob's Send counted its limit before it canceled anything")
	requireCode(t, carolErr, verify.ErrRateLimited)
	got, err := eng.Get(h.ctx, first.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusCanceled, got.Status, "replaced")
	assert.NotEqual(t, first.ID, second.ID)

	sum := func(prefix string) int64 {
		cs, err := st.ListCounters(h.ctx, prefix, h.clock.Now(), "", 10)
		require.NoError(t, err)
		var n int64
		for _, c := range cs {
			n += c.Value
		}
		return n
	}
	reuse, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "reuse", Steps: []verify.Step{{Channel: "sms"}}, Duplicates: verify.DuplicateReuse})
	require.NoError(t, err)
	ana := verify.Recipient{Phone: "+4791234567"}
	before := sum("rate:")
	_, err = eng.Send(h.ctx, verify.SendRequest{FlowID: reuse.ID, To: ana, IPAddress: "203.0.113.2"})
	require.NoError(t, err)
	st.endOnResend = true
	v, err := eng.Send(h.ctx, verify.SendRequest{FlowID: reuse.ID, To: ana, IPAddress: "203.0.113.2"})
	require.NoError(t, err, "the reused verification ended before its resend: a new one")
	assert.True(t, v.Status.Open())
	assert.Equal(t, before+2, sum("rate:"), "two Sends, each counted once")
}
