package verify_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/testutil"
	"github.com/openverify/verify/memstore"
)

// countingCounters counts the calls an engine makes to the Counters it
// wraps (calls), and of those on the failure counters ("fail:" keys) the
// reads, the slots taken (takes with a positive Delta) and the deletes.
type countingCounters struct {
	verify.Counters
	calls, reads, slots, deletes atomic.Int64
}

func (c *countingCounters) GetCounter(ctx context.Context, key string, now time.Time) (verify.Counter, error) {
	c.calls.Add(1)
	if strings.HasPrefix(key, "fail:") {
		c.reads.Add(1)
	}
	return c.Counters.GetCounter(ctx, key, now)
}

func (c *countingCounters) Take(ctx context.Context, now time.Time, takes []verify.Take) (verify.Taken, error) {
	c.calls.Add(1)
	for _, t := range takes {
		if strings.HasPrefix(t.Key, "fail:") && t.Delta > 0 {
			c.slots.Add(1)
		}
	}
	return c.Counters.Take(ctx, now, takes)
}

func (c *countingCounters) DeleteCounter(ctx context.Context, key string) error {
	c.calls.Add(1)
	if strings.HasPrefix(key, "fail:") {
		c.deletes.Add(1)
	}
	return c.Counters.DeleteCounter(ctx, key)
}

// TestRightCodeTakesNoSlot: a right code writes no failure counter when
// the recipient has no failures; a wrong code takes a slot; the next right
// code resets what the wrong ones counted.
func TestRightCodeTakesNoSlot(t *testing.T) {
	h := newHarness(t)
	counters := &countingCounters{Counters: h.store}
	eng := h.engine(verify.WithCounters(counters))
	h.flow(verify.Step{Channel: "sms"})
	send := func() (string, string) {
		v, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err)
		m, ok := h.lastMessage(v.ID)
		require.True(t, ok)
		return v.ID, m.Code
	}

	id, code := send()
	_, err := eng.Check(h.ctx, verify.CheckRequest{VerifyID: id, Code: code})
	require.NoError(t, err)
	assert.Zero(t, counters.slots.Load(), "a right code takes no failure slot")
	assert.Zero(t, counters.deletes.Load(), "and has no failures to reset")

	id, code = send()
	_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: id, Code: wrong(code)})
	requireCode(t, err, verify.ErrInvalidOTP)
	assert.Equal(t, int64(1), counters.slots.Load(), "a wrong code takes a slot")
	_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: id, Code: code})
	require.NoError(t, err)
	assert.Equal(t, int64(1), counters.deletes.Load(), "a right code resets the failures counted")
	c, err := h.store.GetCounter(h.ctx, "fail:"+ana.Phone, h.clock.Now())
	require.NoError(t, err)
	assert.Zero(t, c.Value)
}

// TestRefusalsLookAlike: while the recipient is locked out or must wait,
// a right code and a wrong one are refused after the same Counters calls
// (one Take), so that how long a refusal takes does not tell an attacker
// which code was right.
func TestRefusalsLookAlike(t *testing.T) {
	h := protected(t, only(func(p *verify.Protection) {
		p.FreeFailures, p.FailureDelay, p.MaxFailureDelay, p.MaxFailures = 1, time.Minute, time.Hour, 3
	}))
	counters := &countingCounters{Counters: h.store}
	eng := h.engine(verify.WithProtection(only(func(p *verify.Protection) {
		p.FreeFailures, p.FailureDelay, p.MaxFailureDelay, p.MaxFailures = 1, time.Minute, time.Hour, 3
	})), verify.WithCounters(counters))
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	calls := func(c string) [3]int64 {
		t.Helper()
		before := [3]int64{counters.calls.Load(), counters.reads.Load(), counters.deletes.Load()}
		_, err := eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: c})
		e, ok := verify.AsError(err)
		require.True(t, ok, "a refusal: %v", err)
		require.Contains(t, []string{verify.ErrRateLimited.Code, verify.ErrLocked.Code}, e.Code)
		return [3]int64{counters.calls.Load() - before[0], counters.reads.Load() - before[1], counters.deletes.Load() - before[2]}
	}
	_, err := h.check(v.ID, wrong(code)) // one failure: a minute's wait
	requireCode(t, err, verify.ErrInvalidOTP)
	assert.Equal(t, calls(wrong(code)), calls(code), "waiting: the same Store calls for a wrong code and the right one")
	for range 2 {
		h.clock.Add(time.Hour)
		other, otherCode := h.send()
		_, err := h.check(other.ID, wrong(otherCode))
		requireCode(t, err, verify.ErrInvalidOTP)
	}
	v, code = h.send()
	assert.Equal(t, calls(wrong(code)), calls(code), "locked out: the same Store calls for a wrong code and the right one")
	assert.Equal(t, [3]int64{1, 0, 0}, calls(code), "a refusal is one call")
}

// TestRightCodeWaitsOutTheDelay: a right code is refused, consuming no
// attempt, while the recipient must wait after many wrong codes, with the
// wait a wrong code gets, and verifies once it has passed.
func TestRightCodeWaitsOutTheDelay(t *testing.T) {
	h := protected(t, only(func(p *verify.Protection) {
		p.FreeFailures, p.FailureDelay, p.MaxFailureDelay = 1, 2*time.Second, time.Minute
	}))
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	_, err := h.check(v.ID, wrong(code))
	requireCode(t, err, verify.ErrInvalidOTP)
	_, err = h.check(v.ID, code)
	e := requireCode(t, err, verify.ErrRateLimited)
	assert.Equal(t, 2*time.Second, e.RetryAfter)
	got, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, 1, got.Attempts, "a refused right code consumes no attempt")
	h.clock.Add(2 * time.Second)
	_, err = h.check(v.ID, code)
	require.NoError(t, err)
}

// TestRightAndWrongCodesRace releases right and wrong codes for one
// recipient at once, on three engines, across many verifications: first
// with the lockout near, where every answer is a verification, a judged
// wrong code or the lockout, and the failures never pass MaxFailures; then
// with the recipient locked out, where none verifies, none is judged and
// no attempt is consumed.
func TestRightAndWrongCodesRace(t *testing.T) {
	const max, n = 5, 64
	p := only(func(p *verify.Protection) { p.FreeFailures, p.MaxFailures, p.LockFor = 100, max, time.Hour })
	h := protected(t, p)
	h.flow(verify.Step{Channel: "sms"})
	engines := []*verify.Engine{h.eng, h.engine(verify.WithProtection(p)), h.engine(verify.WithProtection(p))}
	race := func() map[string]int {
		ids, codes := make([]string, n), make([]string, n)
		for i := range n {
			v, code := h.send()
			ids[i], codes[i] = v.ID, code
		}
		var mu sync.Mutex
		answers := map[string]int{}
		testutil.AtOnce(n, func(i int) {
			code, kind := codes[i], "right"
			if i%2 == 1 {
				code, kind = wrong(code), "wrong"
			}
			_, err := engines[i%3].Check(h.ctx, verify.CheckRequest{VerifyID: ids[i], Code: code})
			answer := "ok"
			if e, ok := verify.AsError(err); ok {
				answer = e.Code
			} else if err != nil {
				answer = err.Error()
			}
			mu.Lock()
			answers[kind+" "+answer]++
			mu.Unlock()
		})
		t.Logf("answers: %v", answers)
		for _, id := range ids {
			v, err := h.eng.Get(h.ctx, id)
			require.NoError(t, err)
			if v.Status != verify.StatusVerified {
				answers["attempts"] += v.Attempts
			}
		}
		return answers
	}
	failures := func() int64 {
		c, err := h.store.GetCounter(h.ctx, "fail:"+ana.Phone, h.clock.Now())
		require.NoError(t, err)
		return c.Value
	}

	// Two wrong codes counted: three more lock the recipient out.
	v, code := h.send()
	for range 2 {
		_, err := h.check(v.ID, wrong(code))
		requireCode(t, err, verify.ErrInvalidOTP)
	}
	a := race()
	assert.Equal(t, n/2, a["right ok"]+a["right "+verify.ErrLocked.Code], "every right code verifies or is locked out")
	assert.Equal(t, n/2, a["wrong "+verify.ErrInvalidOTP.Code]+a["wrong "+verify.ErrLocked.Code], "every wrong code is judged or locked out")
	assert.Equal(t, a["wrong "+verify.ErrInvalidOTP.Code], a["attempts"], "only judged wrong codes consume attempts")
	assert.LessOrEqual(t, failures(), int64(max))

	// Locked out.
	for failures() < max {
		v, code := h.send()
		_, err := h.check(v.ID, wrong(code))
		requireCode(t, err, verify.ErrInvalidOTP)
	}
	a = race()
	assert.Equal(t, map[string]int{"right " + verify.ErrLocked.Code: n / 2, "wrong " + verify.ErrLocked.Code: n / 2, "attempts": 0}, a,
		"a locked-out recipient's codes, right or wrong, are all refused, and consume no attempt")
	assert.Equal(t, int64(max), failures())
}

// storeCalls records the Store calls an engine makes on memstore, which
// keeps the counters too (a GuardedStore and a CountingStore).
type storeCalls struct {
	*memstore.Store
	mu    sync.Mutex
	calls []string
	// takes holds the keys each Take named, in order.
	takes [][]string
	// failTakes, when set, is what every Take returns.
	failTakes error
}

func (s *storeCalls) record(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, name)
}

// since returns the calls recorded after the first n.
func (s *storeCalls) since(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls[n:])
}

func (s *storeCalls) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *storeCalls) GetCounter(ctx context.Context, key string, now time.Time) (verify.Counter, error) {
	s.record("GetCounter")
	return s.Store.GetCounter(ctx, key, now)
}

func (s *storeCalls) Take(ctx context.Context, now time.Time, takes []verify.Take) (verify.Taken, error) {
	s.record("Take")
	keys := make([]string, len(takes))
	for i, t := range takes {
		keys[i] = t.Key
	}
	s.mu.Lock()
	s.takes = append(s.takes, keys)
	fail := s.failTakes
	s.mu.Unlock()
	if fail != nil {
		return verify.Taken{}, fail
	}
	return s.Store.Take(ctx, now, takes)
}

// lastTake returns the keys the last Take named.
func (s *storeCalls) lastTake() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takes[len(s.takes)-1]
}

func (s *storeCalls) DeleteCounter(ctx context.Context, key string) error {
	s.record("DeleteCounter")
	return s.Store.DeleteCounter(ctx, key)
}

func (s *storeCalls) Attempt(ctx context.Context, id string, hashes [][]byte, now time.Time) (verify.VerificationRecord, bool, error) {
	s.record("Attempt")
	return s.Store.Attempt(ctx, id, hashes, now)
}

func (s *storeCalls) AttemptCounting(ctx context.Context, id string, hashes [][]byte, now time.Time, onVerified []verify.Count) (verify.VerificationRecord, bool, error) {
	s.record("AttemptCounting")
	return s.Store.AttemptCounting(ctx, id, hashes, now, onVerified)
}

func (s *storeCalls) AttemptRight(ctx context.Context, id string, hashes [][]byte, now time.Time, g verify.Guard, onVerified []verify.Count) (verify.VerificationRecord, bool, verify.Counter, error) {
	s.record("AttemptRight")
	return s.Store.AttemptRight(ctx, id, hashes, now, g, onVerified)
}

// TestGuardedChecks: on a Store that keeps its own counters and judges a
// right code with the read of the failures (a GuardedStore), a right code
// is one Store call, counting the conversion monitor's verification with
// it; a wrong one reads, reserves a slot and is judged; and while the
// recipient waits or is locked out, either is refused after that same one
// call, which consumes nothing.
func TestGuardedChecks(t *testing.T) {
	p := verify.DefaultProtection()
	p.FreeFailures, p.FailureDelay, p.MaxFailureDelay, p.MaxFailures, p.LockFor = 1, time.Minute, time.Hour, 3, time.Hour
	h := newHarness(t)
	st := &storeCalls{Store: h.store}
	eng, err := verify.New(st, verify.WithClock(h.clock), verify.WithChannels(h.sms), verify.WithSecret(secret),
		verify.WithLogger(newTextLogger(h.logs)), verify.WithProtection(p))
	require.NoError(t, err)
	_, err = eng.CreateFlow(h.ctx, verify.Flow{Name: "login", Default: true, Duplicates: verify.DuplicateAllow, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	n := 0
	send := func(to string) (verify.Verification, string) { return h.sendOn(eng, to) }
	check := func(id, code string) ([]string, error) {
		t.Helper()
		n = st.count()
		_, err := eng.Check(h.ctx, verify.CheckRequest{VerifyID: id, Code: code})
		return st.since(n), err
	}
	ana := "+4791234567"
	v, code := send(ana)
	calls, err := check(v.ID, code)
	require.NoError(t, err)
	assert.Equal(t, []string{"AttemptRight"}, calls, "a right code is one call")
	got, err := eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusVerified, got.Status)
	ok, err := h.store.ListCounters(h.ctx, "conv:ok:", h.clock.Now(), "", 10)
	require.NoError(t, err)
	require.Len(t, ok, 1, "the verification is counted with the attempt")
	assert.Equal(t, int64(1), ok[0].Value)

	v, code = send(ana)
	calls, err = check(v.ID, wrong(code))
	requireCode(t, err, verify.ErrInvalidOTP)
	assert.Equal(t, []string{"AttemptRight", "Take", "AttemptCounting"}, calls, "a wrong code: the read, its slot, the attempt")

	// Waiting after the free failure: both refused by the one call.
	wrongCalls, err := check(v.ID, wrong(code))
	requireCode(t, err, verify.ErrRateLimited)
	rightCalls, err := check(v.ID, code)
	e := requireCode(t, err, verify.ErrRateLimited)
	assert.Equal(t, time.Minute, e.RetryAfter)
	assert.Equal(t, []string{"AttemptRight"}, rightCalls)
	assert.Equal(t, wrongCalls, rightCalls, "waiting: the same Store calls for a wrong code and the right one")

	// Locked out after three failures.
	for range 2 {
		h.clock.Add(10 * time.Minute) // past each delay, within LockFor
		other, otherCode := send(ana)
		_, err := check(other.ID, wrong(otherCode))
		requireCode(t, err, verify.ErrInvalidOTP)
	}
	v2, code2 := send(ana)
	wrongCalls, err = check(v2.ID, wrong(code2))
	requireCode(t, err, verify.ErrLocked)
	rightCalls, err = check(v2.ID, code2)
	requireCode(t, err, verify.ErrLocked)
	assert.Equal(t, []string{"AttemptRight"}, rightCalls)
	assert.Equal(t, wrongCalls, rightCalls, "locked out: the same Store calls for a wrong code and the right one")
	got, err = eng.Get(h.ctx, v2.ID)
	require.NoError(t, err)
	assert.Zero(t, got.Attempts, "refused checks consume no attempt")

	// Once the lockout is over, a right code verifies, in one call: the
	// lockout expired with its counter, so there is nothing to clear.
	h.clock.Add(2 * time.Hour)
	v3, code3 := send(ana)
	calls, err = check(v3.ID, code3)
	require.NoError(t, err)
	assert.Equal(t, []string{"AttemptRight"}, calls)

	// A right code after a wrong one (failures counted, not locked)
	// verifies and clears them.
	v4, code4 := send(ana)
	_, err = check(v4.ID, wrong(code4))
	requireCode(t, err, verify.ErrInvalidOTP)
	h.clock.Add(time.Minute)
	calls, err = check(v4.ID, code4)
	require.NoError(t, err)
	assert.Equal(t, []string{"AttemptRight", "DeleteCounter"}, calls)
}

// TestCountersChecks: with the counters apart from the Store (as on
// Redis) and the rate limits on them too, every Check makes one Counters
// call before the Store judges it: a right code's check of the failures
// with the conversion monitor's count of its verification, or a wrong
// code's failure slot, each with the per-IP limit. While the recipient
// waits or is locked out, either code is refused by that one call, which
// counts nothing, not even the per-IP check; a right code the Store does
// not verify gives its count back; and the per-IP limit refuses before
// the lockout, as it does on its own.
func TestCountersChecks(t *testing.T) {
	p := verify.DefaultProtection()
	p.FreeFailures, p.FailureDelay, p.MaxFailureDelay, p.MaxFailures, p.LockFor = 1, time.Minute, time.Hour, 3, time.Hour
	p.IPChecks = verify.Rate{Limit: 50, Per: 24 * time.Hour}
	p.RecipientSends, p.PrefixSends = verify.Rate{Limit: -1}, verify.Rate{Limit: -1}
	h := newHarness(t)
	cs := &storeCalls{Store: memstore.New()}
	eng := h.engine(verify.WithProtection(p), verify.WithCounters(cs), verify.WithLimiter(verify.NewStoreLimiter(cs)))
	h.flow(verify.Step{Channel: "sms"}) // codes valid for 5 minutes
	const ip = "198.51.100.7"
	send := func(to string) (verify.Verification, string) { return h.sendOn(eng, to) }
	check := func(id, code string) ([]string, error) {
		t.Helper()
		n := cs.count()
		_, err := eng.Check(h.ctx, verify.CheckRequest{VerifyID: id, Code: code, IPAddress: ip})
		return cs.since(n), err
	}
	counted := func(prefix string) int64 {
		t.Helper()
		return counterSum(t, cs, prefix, h.clock.Now())
	}
	ana := "+4791234567"

	v, code := send(ana)
	calls, err := check(v.ID, code)
	require.NoError(t, err)
	assert.Equal(t, []string{"Take"}, calls, "a right code is one call")
	assert.Equal(t, int64(1), counted("conv:ok:"), "the verification is counted with the check of the failures")
	assert.Equal(t, int64(1), counted("rate:check:ip:"), "and the per-IP check")

	// A right code the Store does not verify (the verification expired)
	// gives its count back.
	v, code = send(ana)
	h.clock.Add(6 * time.Minute)
	calls, err = check(v.ID, code)
	requireCode(t, err, verify.ErrExpired)
	assert.Equal(t, []string{"Take", "Take"}, calls, "the check with the count, then the count given back")
	assert.Equal(t, int64(1), counted("conv:ok:"), "an expired code is not counted as verified")

	v, code = send(ana)
	calls, err = check(v.ID, wrong(code))
	requireCode(t, err, verify.ErrInvalidOTP)
	assert.Equal(t, []string{"Take"}, calls, "a wrong code: its slot, then the attempt")
	ipChecks := counted("rate:check:ip:")
	assert.Equal(t, int64(3), ipChecks)

	// Waiting after the free failure: both refused by the one call, which
	// counts nothing.
	wrongCalls, err := check(v.ID, wrong(code))
	requireCode(t, err, verify.ErrRateLimited)
	wrongKeys := cs.lastTake()
	rightCalls, err := check(v.ID, code)
	e := requireCode(t, err, verify.ErrRateLimited)
	assert.Equal(t, time.Minute, e.RetryAfter)
	assert.Equal(t, []string{"Take"}, rightCalls)
	assert.Equal(t, wrongCalls, rightCalls, "waiting: the same calls for a wrong code and the right one")
	assert.Equal(t, wrongKeys, cs.lastTake(), "and the same counters in them")
	assert.Len(t, wrongKeys, 3, "the per-IP limit, the failures, the verification count")
	assert.Equal(t, ipChecks, counted("rate:check:ip:"), "a refused check spends no per-IP check")
	assert.Equal(t, int64(1), counted("conv:ok:"), "nor a verification count")

	// Locked out after three failures.
	for range 2 {
		h.clock.Add(10 * time.Minute) // past each delay, within LockFor
		other, otherCode := send(ana)
		_, err := check(other.ID, wrong(otherCode))
		requireCode(t, err, verify.ErrInvalidOTP)
	}
	v2, code2 := send(ana)
	wrongCalls, err = check(v2.ID, wrong(code2))
	requireCode(t, err, verify.ErrLocked)
	wrongKeys = cs.lastTake()
	rightCalls, err = check(v2.ID, code2)
	requireCode(t, err, verify.ErrLocked)
	assert.Equal(t, []string{"Take"}, rightCalls)
	assert.Equal(t, wrongCalls, rightCalls, "locked out: the same calls for a wrong code and the right one")
	assert.Equal(t, wrongKeys, cs.lastTake(), "and the same counters in them")
	got, err := eng.Get(h.ctx, v2.ID)
	require.NoError(t, err)
	assert.Zero(t, got.Attempts, "refused checks consume no attempt")

	// The per-IP limit, once reached, refuses before the lockout.
	ipChecks = counted("rate:check:ip:")
	for range p.IPChecks.Limit - int(ipChecks) {
		w, wcode := send("+4798765432")
		_, err := check(w.ID, wcode)
		require.NoError(t, err)
	}
	_, err = check(v2.ID, code2)
	e = requireCode(t, err, verify.ErrRateLimited)
	assert.Contains(t, e.Message, "IP address")

	// Once the lockout is over, a right code after a wrong one verifies
	// and clears the failures.
	h.clock.Add(24 * time.Hour)
	v3, code3 := send(ana)
	_, err = check(v3.ID, wrong(code3))
	requireCode(t, err, verify.ErrInvalidOTP)
	h.clock.Add(time.Minute)
	calls, err = check(v3.ID, code3)
	require.NoError(t, err)
	assert.Equal(t, []string{"Take", "DeleteCounter"}, calls)
}

// cancelingStore cancels the caller's context in Attempt, as a client
// that hangs up while the attempt is out does, and fails it; with answer
// set it answers what the Store answers instead.
type cancelingStore struct {
	verify.Store
	cancel context.CancelFunc
	answer bool
}

func (s cancelingStore) Attempt(ctx context.Context, id string, hashes [][]byte, now time.Time) (verify.VerificationRecord, bool, error) {
	s.cancel()
	if s.answer {
		return s.Store.Attempt(context.WithoutCancel(ctx), id, hashes, now)
	}
	return verify.VerificationRecord{}, false, ctx.Err()
}

// TestCountersCheckEdges: with the counters apart from the Store, a
// failing Counters is a typed error for a Check that names an IP; a right
// code that another check verified first, replayed to an engine that
// still remembers the verification, counts no verification; the count is
// given back even when the caller has hung up; and a wait ends no later
// than the failures are forgotten.
func TestCountersCheckEdges(t *testing.T) {
	p := verify.DefaultProtection()
	p.RecipientSends, p.PrefixSends = verify.Rate{Limit: -1}, verify.Rate{Limit: -1}
	setup := func(t *testing.T, p verify.Protection) (*harness, *storeCalls, func(opts ...verify.Option) *verify.Engine) {
		h := newHarness(t)
		cs := &storeCalls{Store: memstore.New()}
		h.flow(verify.Step{Channel: "sms"})
		return h, cs, func(opts ...verify.Option) *verify.Engine {
			return h.engine(append([]verify.Option{verify.WithProtection(p), verify.WithCounters(cs),
				verify.WithLimiter(verify.NewStoreLimiter(cs))}, opts...)...)
		}
	}
	verified := func(t *testing.T, h *harness, cs *storeCalls) int64 {
		t.Helper()
		return counterSum(t, cs, "conv:ok:", h.clock.Now())
	}

	t.Run("failing counters", func(t *testing.T) {
		h, cs, engine := setup(t, p)
		eng := engine()
		v, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err)
		m, _ := h.lastMessage(v.ID)
		cs.failTakes = errors.New("counters down")
		for _, code := range []string{m.Code, wrong(m.Code)} {
			_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code, IPAddress: "198.51.100.7"})
			e, ok := verify.AsError(err)
			require.True(t, ok, "a typed error: %v", err)
			assert.Equal(t, verify.ErrInternal.Code, e.Code)
		}
		cs.failTakes = nil
		_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code, IPAddress: "198.51.100.7"})
		require.NoError(t, err, "nothing was consumed")
	})

	t.Run("replayed right code", func(t *testing.T) {
		h, cs, engine := setup(t, p)
		a, b := engine(), engine()
		v, err := a.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err)
		m, _ := h.lastMessage(v.ID)
		_, err = b.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
		require.NoError(t, err)
		for range 3 {
			_, err = a.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
			requireCode(t, err, verify.ErrAlreadyVerified)
		}
		assert.Equal(t, int64(1), verified(t, h, cs), "one verification, counted once")
	})

	t.Run("caller gone", func(t *testing.T) {
		h, cs, _ := setup(t, p)
		ctx, cancel := context.WithCancel(h.ctx)
		defer cancel()
		eng := h.engineOn(cancelingStore{Store: h.store, cancel: cancel}, verify.WithProtection(p),
			verify.WithCounters(cs), verify.WithLimiter(verify.NewStoreLimiter(cs)))
		v, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err)
		m, _ := h.lastMessage(v.ID)
		_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
		require.ErrorIs(t, err, context.Canceled)
		assert.Zero(t, verified(t, h, cs), "the count taken before the attempt is given back")

		// A wrong code whose attempt was not counted (the code expired)
		// gives its failure slot back, though the caller has gone.
		ctx, cancel = context.WithCancel(h.ctx)
		defer cancel()
		eng = h.engineOn(cancelingStore{Store: h.store, cancel: cancel, answer: true}, verify.WithProtection(p),
			verify.WithCounters(cs), verify.WithLimiter(verify.NewStoreLimiter(cs)))
		v, err = eng.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err)
		m, _ = h.lastMessage(v.ID)
		h.clock.Add(6 * time.Minute)
		_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: wrong(m.Code)})
		require.Error(t, err)
		assert.Zero(t, counterSum(t, cs, "fail:", h.clock.Now()), "the failure slot is given back")
	})

	t.Run("wait past the lockout", func(t *testing.T) {
		q := p
		q.FreeFailures, q.FailureDelay, q.MaxFailureDelay, q.LockFor = 1, 2*time.Hour, 2*time.Hour, time.Hour
		h, _, engine := setup(t, q)
		eng := engine()
		v, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err)
		m, _ := h.lastMessage(v.ID)
		_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: wrong(m.Code)})
		requireCode(t, err, verify.ErrInvalidOTP)
		for _, code := range []string{m.Code, wrong(m.Code)} {
			_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
			e := requireCode(t, err, verify.ErrRateLimited)
			assert.Equal(t, time.Hour, e.RetryAfter, "until the failures expire, not the 2h delay")
		}
		h.clock.Add(time.Hour)
		v, err = eng.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err)
		m, _ = h.lastMessage(v.ID)
		_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
		require.NoError(t, err, "the failures are forgotten at RetryAfter")
	})
}
