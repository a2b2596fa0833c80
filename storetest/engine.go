package storetest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/testutil"
)

// The engine part runs the engine's promises on the store under test the
// way they fail in production: several engines on one store, requests
// released at once from many goroutines, and a store wrapper that answers
// reads slowly, as a remote database does, so that a decision read in one
// call and written in another would show.
var engineTests = []struct {
	name string
	fn   func(t *testing.T, s verify.Store)
}{
	{"LockoutUnderParallelWrongCodes", testLockoutUnderParallelWrongCodes},
	{"LockoutUnderParallelRightAndWrongCodes", testLockoutUnderParallelRightAndWrongCodes},
	// The same, without the store's optional abilities (CountingStore,
	// GuardedStore): the engine's path for counters kept elsewhere.
	{"LockoutUnderParallelWrongCodes/Plain", func(t *testing.T, s verify.Store) { testLockoutUnderParallelWrongCodes(t, plain{s}) }},
	{"LockoutUnderParallelRightAndWrongCodes/Plain", func(t *testing.T, s verify.Store) { testLockoutUnderParallelRightAndWrongCodes(t, plain{s}) }},
	{"FailureDelayUnderParallelWrongCodes", testFailureDelayUnderParallelWrongCodes},
	{"ParallelResends", testParallelResends},
	{"RefusedSendSpendsNothing", testRefusedSendSpendsNothing},
	{"SendLimitsUnderParallelSends", testSendLimitsUnderParallelSends},
	{"BacklogSentOnce", testBacklogSentOnce},
	{"SlowProviderSentOnce", testSlowProviderSentOnce},
	{"VerifiedDespiteBookkeeping", testVerifiedDespiteBookkeeping},
	{"ReuseWithAnotherRequest", testReuseWithAnotherRequest},
}

// readLatency is what slowReads adds to every read.
const readLatency = 2 * time.Millisecond

// slowReads is a Store whose reads take readLatency longer.
type slowReads struct{ verify.Store }

func pause() { time.Sleep(readLatency) }

// plain is a Store without its optional abilities.
type plain struct{ verify.Store }

// slowGuarded is slowReads for a Store that is also a CountingStore and a
// GuardedStore, keeping both, slow where they read.
type slowGuarded struct {
	slowReads
	c verify.CountingStore
	g verify.GuardedStore
}

// slow returns s reading slowly, with its CountingStore and GuardedStore if
// it has both.
func slow(s verify.Store) verify.Store {
	c, counting := s.(verify.CountingStore)
	g, guarded := s.(verify.GuardedStore)
	if counting && guarded {
		return slowGuarded{slowReads{s}, c, g}
	}
	return slowReads{s}
}

func (s slowGuarded) CreateVerificationCounting(ctx context.Context, v verify.VerificationRecord, steps []verify.PendingStep, guard verify.Guard, counts []verify.Count) ([]verify.Counter, error) {
	pause() // it reads the guard's counter
	return s.c.CreateVerificationCounting(ctx, v, steps, guard, counts)
}

func (s slowGuarded) AttemptCounting(ctx context.Context, id string, hashes [][]byte, now time.Time, onVerified []verify.Count) (verify.VerificationRecord, bool, error) {
	return s.c.AttemptCounting(ctx, id, hashes, now, onVerified)
}

func (s slowGuarded) AttemptRight(ctx context.Context, id string, hashes [][]byte, now time.Time, guard verify.Guard, onVerified []verify.Count) (verify.VerificationRecord, bool, verify.Counter, error) {
	pause() // it reads the failures
	return s.g.AttemptRight(ctx, id, hashes, now, guard, onVerified)
}

func (s slowReads) GetVerification(ctx context.Context, id string) (verify.VerificationRecord, error) {
	pause()
	return s.Store.GetVerification(ctx, id)
}

func (s slowReads) GetCounter(ctx context.Context, key string, now time.Time) (verify.Counter, error) {
	pause()
	return s.Store.GetCounter(ctx, key, now)
}

func (s slowReads) FindOpen(ctx context.Context, flowID string, to verify.Recipient, now time.Time) ([]verify.VerificationRecord, error) {
	pause()
	return s.Store.FindOpen(ctx, flowID, to, now)
}

func (s slowReads) FindByIdempotencyKey(ctx context.Context, key string) (verify.VerificationRecord, error) {
	pause()
	return s.Store.FindByIdempotencyKey(ctx, key)
}

func (s slowReads) GetFlow(ctx context.Context, id string) (verify.Flow, error) {
	pause()
	return s.Store.GetFlow(ctx, id)
}

func (s slowReads) DefaultFlow(ctx context.Context) (verify.Flow, error) {
	pause()
	return s.Store.DefaultFlow(ctx)
}

// recChannel records the messages it is handed; before, if set, runs
// first (to let time pass, or to call another engine mid-send).
type recChannel struct {
	name   string
	before func(m verify.Message)

	mu   sync.Mutex
	msgs []verify.Message
}

func (c *recChannel) Name() string { return c.name }

func (c *recChannel) Send(_ context.Context, m verify.Message) (verify.Receipt, error) {
	if c.before != nil {
		c.before(m)
	}
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	return verify.Receipt{}, nil
}

// byID counts the messages per message ID.
func (c *recChannel) byID() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.msgs))
	for _, m := range c.msgs {
		out[m.ID]++
	}
	return out
}

// codeFor returns the code of the latest message for a verification.
func (c *recChannel) codeFor(t *testing.T, id string) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.msgs) - 1; i >= 0; i-- {
		if c.msgs[i].VerificationID == id {
			return c.msgs[i].Code
		}
	}
	t.Fatalf("no message for verification %s", id)
	return ""
}

// count is how many messages it was handed.
func (c *recChannel) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func (c *recChannel) countFor(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.msgs {
		if m.VerificationID == id {
			n++
		}
	}
	return n
}

var engineSecret = []byte("storetest-engine-secret-0123456789")

// rig is three engines on one (slow-reading) store, sharing a secret, a
// mock clock and the channels sms and voice.
type rig struct {
	t       *testing.T
	ctx     context.Context
	store   verify.Store
	clk     *clock.Mock
	sms     *recChannel
	voice   *recChannel
	engines []*verify.Engine
}

func newRig(t *testing.T, s verify.Store, p verify.Protection, opts ...verify.Option) *rig {
	t.Helper()
	r := &rig{t: t, ctx: context.Background(), store: slow(s), clk: clock.NewMock(),
		sms: &recChannel{name: "sms"}, voice: &recChannel{name: "voice"}}
	r.clk.Set(base)
	for range 3 {
		r.engines = append(r.engines, r.engine(p, opts...))
	}
	return r
}

// engine returns one more engine like the rig's.
func (r *rig) engine(p verify.Protection, opts ...verify.Option) *verify.Engine {
	r.t.Helper()
	all := append([]verify.Option{verify.WithClock(r.clk), verify.WithSecret(engineSecret),
		verify.WithChannels(r.sms, r.voice), verify.WithProtection(p), verify.WithLogger(quietLog())}, opts...)
	e, err := verify.New(r.store, all...)
	require.NoError(r.t, err)
	return e
}

func (r *rig) flow(f verify.Flow) verify.Flow {
	r.t.Helper()
	f.Default = true
	if f.Name == "" {
		f.Name = "login"
	}
	if f.Steps == nil {
		f.Steps = []verify.Step{{Channel: "sms"}}
	}
	f, err := r.engines[0].CreateFlow(r.ctx, f)
	require.NoError(r.t, err)
	return f
}

// at returns the engine for request i, round robin.
func (r *rig) at(i int) *verify.Engine { return r.engines[i%len(r.engines)] }

// answers counts errors by E-code ("ok" for nil); other errors fail t.
type answers struct {
	mu    sync.Mutex
	codes map[string]int
	waits []time.Duration
	other []error
}

func (a *answers) add(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.codes == nil {
		a.codes = make(map[string]int)
	}
	if err == nil {
		a.codes["ok"]++
		return
	}
	e, ok := verify.AsError(err)
	if !ok {
		a.other = append(a.other, err)
		return
	}
	a.codes[e.Code]++
	if e.RetryAfter != 0 {
		a.waits = append(a.waits, e.RetryAfter)
	}
}

func (a *answers) noOther(t *testing.T) {
	t.Helper()
	require.Empty(t, a.other, "every answer must be a typed *verify.Error")
}

func failureProtection(maxFailures, free int, delay time.Duration) verify.Protection {
	p := verify.NoProtection()
	p.MaxFailures, p.FreeFailures = maxFailures, free
	if delay > 0 {
		p.FailureDelay, p.MaxFailureDelay = delay, delay
	}
	return p
}

// wrongCodesAtOnce sends a code to phone on a flow with 100 attempts and
// checks 64 wrong codes at once, round robin on the rig's engines. It
// returns the verification, its code and the answers.
func (r *rig) wrongCodesAtOnce(phone string, ttl time.Duration) (verify.Verification, string, *answers) {
	r.t.Helper()
	r.flow(verify.Flow{MaxAttempts: 100, TTL: ttl})
	v, err := r.engines[0].Send(r.ctx, verify.SendRequest{To: verify.Recipient{Phone: phone}})
	require.NoError(r.t, err)
	code := r.sms.codeFor(r.t, v.ID)
	a := &answers{}
	released(64, func(i int) {
		_, err := r.at(i).Check(r.ctx, verify.CheckRequest{VerifyID: v.ID, Code: testutil.OtherCode(code)})
		a.add(err)
	})
	a.noOther(r.t)
	return v, code, a
}

// testLockoutUnderParallelWrongCodes: 64 wrong codes at once on three
// engines judge at most MaxFailures; the rest are refused as locked.
func testLockoutUnderParallelWrongCodes(t *testing.T, s verify.Store) {
	r := newRig(t, s, failureProtection(3, 100, 0))
	v, code, a := r.wrongCodesAtOnce("+4791000001", 0)
	assert.Equal(t, 3, a.codes[verify.ErrInvalidOTP.Code], "wrong codes judged (E912): %v", a.codes)
	assert.Equal(t, 61, a.codes[verify.ErrLocked.Code], "refused as locked (E919): %v", a.codes)
	require.Len(t, a.waits, 61, "every refusal carries RetryAfter")
	for _, w := range a.waits {
		assert.InDelta(t, float64(24*time.Hour), float64(w), float64(time.Second), "locked for LockFor")
	}
	got, err := s.GetVerification(r.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, 3, got.Attempts, "attempts counted")
	_, err = r.engines[1].Check(r.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
	assert.ErrorIs(t, err, verify.ErrLocked, "a locked recipient cannot verify even with the right code")
}

// testLockoutUnderParallelRightAndWrongCodes: right codes (each on a
// verification of its own) and wrong ones race on three engines for one
// recipient two wrong codes short of the lockout: every answer is a
// verification, a judged wrong code or the lockout, and wrong codes
// consume the only attempts. Then, with the recipient locked out, 64 more
// at once are all refused, right or wrong, and consume no attempt.
func testLockoutUnderParallelRightAndWrongCodes(t *testing.T, s verify.Store) {
	r := newRig(t, s, failureProtection(4, 100, 0))
	r.flow(verify.Flow{MaxAttempts: 100, Duplicates: verify.DuplicateAllow})
	to := verify.Recipient{Phone: "+4791000009"}
	// race checks 64 codes at once, a right one on even i, a wrong one on
	// odd, each on a verification of its own, and returns the answers to
	// each kind and the attempts left on the verifications not verified.
	race := func() (right, wrong *answers, attempts int) {
		ids, codes := make([]string, 64), make([]string, 64)
		for i := range ids {
			v, err := r.engines[0].Send(r.ctx, verify.SendRequest{To: to})
			require.NoError(t, err)
			ids[i], codes[i] = v.ID, r.sms.codeFor(t, v.ID)
		}
		right, wrong = &answers{}, &answers{}
		released(64, func(i int) {
			code, a := codes[i], right
			if i%2 == 1 {
				code, a = testutil.OtherCode(code), wrong
			}
			_, err := r.at(i).Check(r.ctx, verify.CheckRequest{VerifyID: ids[i], Code: code})
			a.add(err)
		})
		right.noOther(t)
		wrong.noOther(t)
		for _, id := range ids {
			v, err := s.GetVerification(r.ctx, id)
			require.NoError(t, err)
			if v.Status != verify.StatusVerified {
				attempts += v.Attempts
			}
		}
		return right, wrong, attempts
	}
	wrongs := func(n int) {
		for range n {
			v, err := r.engines[0].Send(r.ctx, verify.SendRequest{To: to})
			require.NoError(t, err)
			_, err = r.engines[1].Check(r.ctx, verify.CheckRequest{VerifyID: v.ID, Code: testutil.OtherCode(r.sms.codeFor(t, v.ID))})
			require.ErrorIs(t, err, verify.ErrInvalidOTP)
		}
	}
	wrongs(2)
	right, wrong, attempts := race()
	assert.Equal(t, 32, right.codes["ok"]+right.codes[verify.ErrLocked.Code], "a right code verifies or is locked out: %v", right.codes)
	assert.Equal(t, 32, wrong.codes[verify.ErrInvalidOTP.Code]+wrong.codes[verify.ErrLocked.Code], "a wrong code is judged or locked out: %v", wrong.codes)
	assert.Equal(t, wrong.codes[verify.ErrInvalidOTP.Code], attempts, "only the wrong codes judged consume attempts")

	// Lock the recipient out, whatever the race left.
	for locked := false; !locked; {
		v, err := r.engines[0].Send(r.ctx, verify.SendRequest{To: to})
		require.NoError(t, err)
		_, err = r.engines[1].Check(r.ctx, verify.CheckRequest{VerifyID: v.ID, Code: testutil.OtherCode(r.sms.codeFor(t, v.ID))})
		if locked = errors.Is(err, verify.ErrLocked); !locked {
			require.ErrorIs(t, err, verify.ErrInvalidOTP)
		}
	}
	right, wrong, attempts = race()
	assert.Equal(t, map[string]int{verify.ErrLocked.Code: 32}, right.codes, "a locked-out recipient's right codes are refused")
	assert.Equal(t, map[string]int{verify.ErrLocked.Code: 32}, wrong.codes, "and so are the wrong ones")
	assert.Zero(t, attempts, "and consume no attempt")
}

// testFailureDelayUnderParallelWrongCodes: past FreeFailures, no wrong
// code is judged before its delay, however many arrive at once.
func testFailureDelayUnderParallelWrongCodes(t *testing.T, s verify.Store) {
	r := newRig(t, s, failureProtection(100, 1, time.Hour))
	v, code, a := r.wrongCodesAtOnce("+4791000002", 2*time.Hour)
	assert.Equal(t, 1, a.codes[verify.ErrInvalidOTP.Code], "wrong codes judged (E912): %v", a.codes)
	assert.Equal(t, 63, a.codes[verify.ErrRateLimited.Code], "refused to wait (E918): %v", a.codes)
	require.Len(t, a.waits, 63, "every refusal carries RetryAfter")
	for _, w := range a.waits {
		assert.InDelta(t, float64(time.Hour), float64(w), float64(time.Second))
	}
	r.clk.Add(time.Hour)
	_, err := r.engines[2].Check(r.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
	assert.NoError(t, err, "once the delay has passed the right code verifies")
}

// testParallelResends: after the cooldown, of 8 Resends at once on three
// engines one is sent.
func testParallelResends(t *testing.T, s verify.Store) {
	p := verify.NoProtection()
	p.ResendCooldown = 30 * time.Second
	r := newRig(t, s, p, verify.WithMaxSends(10))
	r.flow(verify.Flow{})
	v, err := r.engines[0].Send(r.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4791000003"}})
	require.NoError(t, err)
	r.clk.Add(31 * time.Second)
	var a answers
	released(8, func(i int) {
		_, err := r.at(i).Resend(r.ctx, v.ID)
		a.add(err)
	})
	a.noOther(t)
	assert.Equal(t, 1, a.codes["ok"], "resends sent: %v", a.codes)
	assert.Equal(t, 7, a.codes[verify.ErrRateLimited.Code], "resends refused by the cooldown: %v", a.codes)
	for _, w := range a.waits {
		assert.Greater(t, w, time.Duration(0))
		assert.LessOrEqual(t, w, 30*time.Second)
	}
	assert.Equal(t, 2, r.sms.countFor(v.ID), "messages: the Send and one Resend")
	got, err := s.GetVerification(r.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, 2, got.Sends)
}

// testRefusedSendSpendsNothing: with the default protections and limits
// shared in the store, Sends refused by the reused verification's resend
// cooldown do not count towards the recipient's send limit.
func testRefusedSendSpendsNothing(t *testing.T, s verify.Store) {
	r := newRig(t, s, verify.DefaultProtection(), verify.WithLimiter(verify.NewStoreLimiter(slowReads{s})))
	r.flow(verify.Flow{}) // Duplicates: reuse
	to := verify.Recipient{Phone: "+4791000004"}
	v, err := r.engines[0].Send(r.ctx, verify.SendRequest{To: to})
	require.NoError(t, err)
	for i := range 4 {
		r.clk.Add(time.Second)
		_, err := r.at(i).Send(r.ctx, verify.SendRequest{To: to})
		require.ErrorIs(t, err, verify.ErrRateLimited, "send %d, in the resend cooldown", i+2)
		e, _ := verify.AsError(err)
		assert.Greater(t, e.RetryAfter, time.Duration(0))
		assert.LessOrEqual(t, e.RetryAfter, 30*time.Second)
	}
	r.clk.Add(27 * time.Second) // 31 s after the first Send
	again, err := r.engines[1].Send(r.ctx, verify.SendRequest{To: to})
	require.NoError(t, err, "the refused Sends spent nothing, so this one is within 5 per 10 minutes")
	assert.Equal(t, v.ID, again.ID, "the open verification is reused")
	assert.Equal(t, 2, r.sms.countFor(v.ID))
}

// testSendLimitsUnderParallelSends: three engines share the rate limits
// in the store (a StoreLimiter on the Store they use, as a fleet is
// configured), with the default protections. 32 Sends to one recipient
// released at once are allowed 5 times (5 per 10 minutes), and 32 Sends
// from one IP address to 32 recipients 20 times (20 per 10 minutes): on a
// CountingStore the limits are decided by the writes that store the
// verifications. Every refusal is E918 with the time to the window's end,
// and a refused Send stores and sends nothing.
func testSendLimitsUnderParallelSends(t *testing.T, s verify.Store) {
	p := verify.DefaultProtection()
	r := newRig(t, s, p)
	for i := range r.engines {
		r.engines[i] = r.engine(p, verify.WithLimiter(verify.NewStoreLimiter(r.store)))
	}
	r.flow(verify.Flow{Duplicates: verify.DuplicateAllow})
	check := func(a *answers, allowed int, what string) {
		t.Helper()
		a.noOther(t)
		assert.Equal(t, allowed, a.codes["ok"], "%s: Sends allowed: %v", what, a.codes)
		assert.Equal(t, 32-allowed, a.codes[verify.ErrRateLimited.Code], "%s: Sends refused: %v", what, a.codes)
		require.Len(t, a.waits, 32-allowed, "%s: every refusal carries RetryAfter", what)
		for _, w := range a.waits {
			assert.Greater(t, w, time.Duration(0), what)
			assert.LessOrEqual(t, w, 10*time.Minute, what)
		}
	}
	var one answers
	released(32, func(i int) {
		_, err := r.at(i).Send(r.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4791000005"}})
		one.add(err)
	})
	check(&one, 5, "one recipient")
	var ip answers
	sent := r.sms.count()
	released(32, func(i int) {
		// 32 recipients in as many number prefixes, from one address.
		to := verify.Recipient{Phone: fmt.Sprintf("+47%02d1000006", 10+i)}
		_, err := r.at(i).Send(r.ctx, verify.SendRequest{To: to, IPAddress: "203.0.113.9"})
		ip.add(err)
	})
	check(&ip, 20, "one IP address")
	assert.Equal(t, 20, r.sms.count()-sent, "a refused Send sends nothing")
}

// testBacklogSentOnce: two live engines work off a backlog of 600 due
// steps through a channel that takes up to 50 ms a message, on the wall
// clock, with leases short enough that a batch claimed with a stale lease,
// or sent past its lease, would be claimed again by the other engine.
func testBacklogSentOnce(t *testing.T, s verify.Store) {
	const n = 600
	st := slow(s)
	sms := &recChannel{name: "sms"}
	var slow atomic.Int64
	voice := &recChannel{name: "voice", before: func(m verify.Message) {
		// 0-49 ms, spread by message.
		time.Sleep(time.Duration(slow.Add(7)%50) * time.Millisecond)
	}}
	mk := func() *verify.Engine {
		e, err := verify.New(st, verify.WithSecret(engineSecret), verify.WithChannels(sms, voice),
			verify.WithProtection(verify.NoProtection()), verify.WithLogger(quietLog()),
			verify.WithLease(400*time.Millisecond), verify.WithSendTimeout(200*time.Millisecond),
			verify.WithConcurrency(8))
		require.NoError(t, err)
		return e
	}
	a, b := mk(), mk()
	ctx := context.Background()
	_, err := a.CreateFlow(ctx, verify.Flow{Name: "backlog", Default: true, TTL: time.Hour, Duplicates: verify.DuplicateAllow,
		Steps: []verify.Step{{Channel: "sms"}, {Channel: "voice", After: time.Millisecond}}})
	require.NoError(t, err)
	for i := range n {
		_, err := a.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: fmt.Sprintf("+479%07d", i)}})
		require.NoError(t, err)
	}
	time.Sleep(2 * time.Millisecond) // every voice step is due
	deadline := time.Now().Add(60 * time.Second)
	var wg sync.WaitGroup
	for _, e := range []*verify.Engine{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for len(voice.byID()) < n && time.Now().Before(deadline) {
				if _, err := e.ProcessDue(ctx); err != nil {
					t.Errorf("ProcessDue: %v", err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	sent := voice.byID()
	require.Len(t, sent, n, "every step is sent")
	twice := 0
	for _, c := range sent {
		if c > 1 {
			twice++
		}
	}
	assert.Zero(t, twice, "steps sent more than once by two live engines")
}

// testSlowProviderSentOnce: a provider that takes 40 s a message, one
// message at a time, and a second engine polling in the middle of the
// batch: no step is sent by both.
func testSlowProviderSentOnce(t *testing.T, s verify.Store) {
	r := newRig(t, s, verify.NoProtection())
	r.flow(verify.Flow{TTL: time.Hour, Duplicates: verify.DuplicateAllow,
		Steps: []verify.Step{{Channel: "sms"}, {Channel: "voice", After: time.Minute}}})
	var ids []string
	for i := range 6 {
		v, err := r.engines[0].Send(r.ctx, verify.SendRequest{To: verify.Recipient{Phone: fmt.Sprintf("+4792%06d", i)}})
		require.NoError(t, err)
		ids = append(ids, v.ID)
	}
	r.clk.Add(time.Minute) // six voice steps due
	opts := []verify.Option{verify.WithConcurrency(1), verify.WithSendTimeout(45 * time.Second)}
	a := r.engine(verify.NoProtection(), opts...)
	b := r.engine(verify.NoProtection(), opts...)
	var sends atomic.Int64
	var polling atomic.Bool
	r.voice.before = func(verify.Message) {
		if polling.Load() {
			return // the second engine's provider answers at once
		}
		r.clk.Add(40 * time.Second)
		if sends.Add(1) == 4 { // the other engine polls during the fourth
			polling.Store(true)
			if _, err := b.ProcessDue(r.ctx); err != nil {
				t.Errorf("second engine: %v", err)
			}
			polling.Store(false)
		}
	}
	_, err := a.ProcessDue(r.ctx)
	require.NoError(t, err)
	for range 10 { // whatever is left, after its lease
		if len(r.voice.byID()) == len(ids) {
			break
		}
		r.clk.Add(2 * time.Minute)
		_, err := a.ProcessDue(r.ctx)
		require.NoError(t, err)
	}
	sent := r.voice.byID()
	assert.Len(t, sent, len(ids), "every step is sent")
	for id, c := range sent {
		assert.Equal(t, 1, c, "message %s sent %d times", id, c)
	}
}

// failing is a Store whose writes after the fact fail: resetting a
// recipient's failures, and (with recordDelivery) a delivery's record.
type failing struct {
	verify.Store
	recordDelivery bool
}

var errInjected = errors.New("storetest: injected failure")

func (f failing) DeleteCounter(context.Context, string) error { return errInjected }

func (f failing) RecordDelivery(ctx context.Context, d verify.DeliveryRecord) (bool, error) {
	if f.recordDelivery {
		return false, errInjected
	}
	return f.Store.RecordDelivery(ctx, d)
}

// testVerifiedDespiteBookkeeping: once the store has verified, Check
// answers success even if resetting the failure count fails; once the
// channel has the code, Send answers with the verification even if the
// delivery record fails. The failures are emitted. (The conversion
// monitor's count of a verification is no bookkeeping after the fact: it
// is counted with the attempt, or with the check of the failures before
// it, and given back if the code is not verified.)
func testVerifiedDespiteBookkeeping(t *testing.T, s verify.Store) {
	ctx := context.Background()
	clk := clock.NewMock()
	clk.Set(base)
	sms := &recChannel{name: "sms"}
	var mu sync.Mutex
	var failed []string
	obs := verify.ObserverFunc(func(_ context.Context, ev verify.Event) {
		if ev.Type == verify.EventBookkeepingFailed {
			mu.Lock()
			failed = append(failed, ev.Reason)
			mu.Unlock()
		}
	})
	mk := func(st verify.Store) *verify.Engine {
		e, err := verify.New(st, verify.WithClock(clk), verify.WithSecret(engineSecret), verify.WithChannels(sms),
			verify.WithLogger(quietLog()), verify.WithObserver(obs))
		require.NoError(t, err)
		return e
	}
	eng := mk(failing{Store: s})
	_, err := eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)

	v, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4791000005"}})
	require.NoError(t, err)
	code := sms.codeFor(t, v.ID)
	_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: testutil.OtherCode(code)})
	require.ErrorIs(t, err, verify.ErrInvalidOTP)
	got, err := eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
	require.NoError(t, err, "the store verified the code; the conversion count failing afterwards is not the caller's failure")
	assert.Equal(t, verify.StatusVerified, got.Status)
	_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
	assert.ErrorIs(t, err, verify.ErrAlreadyVerified)

	noRecord := mk(failing{Store: s, recordDelivery: true})
	v2, err := noRecord.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4791000006"}})
	require.NoError(t, err, "the channel accepted the code")
	assert.NotEmpty(t, v2.ID)
	assert.Equal(t, 1, sms.countFor(v2.ID))

	mu.Lock()
	defer mu.Unlock()
	assert.Contains(t, failed, "reset failures")
	assert.Contains(t, failed, "record delivery")
}

// testReuseWithAnotherRequest: under DuplicateReuse a Send whose custom
// code or ForeignID differs from the open verification's replaces it
// rather than answering with the old one.
func testReuseWithAnotherRequest(t *testing.T, s verify.Store) {
	r := newRig(t, s, verify.NoProtection())
	r.flow(verify.Flow{}) // reuse, 6 digits
	to := verify.Recipient{Phone: "+4791000007"}
	first, err := r.engines[0].Send(r.ctx, verify.SendRequest{To: to, Code: "123456"})
	require.NoError(t, err)
	second, err := r.engines[1].Send(r.ctx, verify.SendRequest{To: to, Code: "654321"})
	require.NoError(t, err)
	require.NotEqual(t, first.ID, second.ID, "a new custom code starts a new verification")
	_, err = r.engines[2].Check(r.ctx, verify.CheckRequest{VerifyID: second.ID, Code: "654321"})
	assert.NoError(t, err, "the new code verifies")
	_, err = r.engines[0].Check(r.ctx, verify.CheckRequest{VerifyID: first.ID, Code: "123456"})
	assert.ErrorIs(t, err, verify.ErrCanceled, "the replaced verification is canceled")

	same, err := r.engines[0].Send(r.ctx, verify.SendRequest{To: to, ForeignID: "order-1"})
	require.NoError(t, err)
	again, err := r.engines[1].Send(r.ctx, verify.SendRequest{To: to, ForeignID: "order-1"})
	require.NoError(t, err)
	assert.Equal(t, same.ID, again.ID, "the same request reuses the open verification")
	other, err := r.engines[2].Send(r.ctx, verify.SendRequest{To: to, ForeignID: "order-2"})
	require.NoError(t, err)
	assert.NotEqual(t, same.ID, other.ID, "another ForeignID starts a new verification")
	assert.Equal(t, "order-2", other.ForeignID)
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// runEngine runs the engine part, each test on a new store.
func runEngine(t *testing.T, newStore func(t *testing.T) verify.Store) {
	t.Helper()
	for _, tc := range engineTests {
		t.Run("Engine/"+tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}
