package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
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

// cluster is several engines, each with its own Store (connection pool) on
// one database, sharing a secret, a mock clock and the channels: a
// deployment of several instances behind a load balancer.
type cluster struct {
	dsn   string
	clk   *clock.Mock
	sms   *recorder
	email *recorder
	inst  []instance
}

var ana = verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"}

var recipients atomic.Int64

// someone returns a recipient no other call has returned, since a flow
// reuses a recipient's open verification (verify.DuplicateReuse), with a
// number prefix of its own, since the engine limits sends per prefix.
func someone() verify.Recipient {
	n := recipients.Add(1)
	return verify.Recipient{Phone: fmt.Sprintf("+4%07d1234", n%10_000_000), Email: fmt.Sprintf("user%d@example.com", n)}
}

// fallbackFlow sends an SMS, then an email 30 seconds later.
var fallbackFlow = verify.Flow{Name: "login", Default: true, Steps: []verify.Step{
	{Channel: "sms"},
	{Channel: "email", After: 30 * time.Second},
}}

func newCluster(t *testing.T, dsn string, n int, flow verify.Flow) *cluster {
	t.Helper()
	c := &cluster{dsn: dsn, clk: newClock(), sms: newRecorder("sms", false), email: newRecorder("email", true)}
	for range n {
		c.inst = append(c.inst, newInstance(t, dsn, c.clk, c.sms, c.email))
	}
	_, err := c.inst[0].eng.CreateFlow(context.Background(), flow)
	require.NoError(t, err)
	return c
}

// engine returns the engine that serves request i, round robin.
func (c *cluster) engine(i int) *verify.Engine { return c.inst[i%len(c.inst)].eng }

func TestMultiInstance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Run("ConcurrentWrongGuesses", func(t *testing.T) { testConcurrentWrongGuesses(t, b.newDSN(t)) })
			t.Run("ConcurrentRightCodes", func(t *testing.T) { testConcurrentRightCodes(t, b.newDSN(t)) })
			t.Run("FallbackSentOnce", func(t *testing.T) { testFallbackSentOnce(t, b.newDSN(t)) })
			t.Run("Restart", func(t *testing.T) { testRestart(t, b.newDSN(t)) })
			t.Run("CrashedClaim", func(t *testing.T) { testCrashedClaim(t, b.newDSN(t)) })
			t.Run("ConcurrentDefaultFlows", func(t *testing.T) { testConcurrentDefaultFlows(t, b.newDSN(t)) })
			t.Run("ConcurrentDuplicates", func(t *testing.T) { testConcurrentDuplicates(t, b.newDSN(t)) })
		})
	}
}

// runConcurrently calls fn(i) for i in [0, n) from n goroutines released
// at once.
func runConcurrently(n int, fn func(i int)) { testutil.AtOnce(n, fn) }

func testConcurrentWrongGuesses(t *testing.T, dsn string) {
	ctx := context.Background()
	c := newCluster(t, dsn, 3, verify.Flow{Name: "login", Default: true, MaxAttempts: 5,
		Steps: []verify.Step{{Channel: "sms"}}})
	v, err := c.engine(0).Send(ctx, verify.SendRequest{To: ana, Code: "123456"})
	require.NoError(t, err)

	const guesses = 400
	var invalid, maxed, waited atomic.Int32
	var mu sync.Mutex
	var others []error
	runConcurrently(guesses, func(i int) {
		_, err := c.engine(i).Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: "000000"})
		switch {
		case errors.Is(err, verify.ErrInvalidOTP):
			invalid.Add(1)
		case errors.Is(err, verify.ErrMaxAttempts):
			maxed.Add(1)
		case errors.Is(err, verify.ErrRateLimited), errors.Is(err, verify.ErrLocked):
			// The recipient's failure slots are all held by checks in
			// flight, or the growing delay has begun (FreeFailures).
			waited.Add(1)
		default:
			mu.Lock()
			others = append(others, err)
			mu.Unlock()
		}
	})
	assert.Empty(t, others, "every guess is answered E912, E911, or refused by the recipient's failure protection")
	assert.Equal(t, int32(5), invalid.Load(), "exactly MaxAttempts guesses are answered E912")
	assert.Equal(t, int32(guesses-5), maxed.Load()+waited.Load(), "the rest are refused")

	got, err := c.engine(1).Get(ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, 5, got.Attempts)
	assert.Equal(t, verify.StatusMaxAttempts, got.Status)
	// Even the right code is refused now.
	_, err = c.engine(2).Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: "123456"})
	assert.ErrorIs(t, err, verify.ErrMaxAttempts)
}

func testConcurrentRightCodes(t *testing.T, dsn string) {
	ctx := context.Background()
	// Far fewer attempts than callers: the attempt that verifies is counted
	// and compared in one step, so the callers after it find the
	// verification verified, not out of attempts.
	c := newCluster(t, dsn, 3, verify.Flow{Name: "login", Default: true, MaxAttempts: 5,
		Steps: []verify.Step{{Channel: "sms"}}})
	v, err := c.engine(0).Send(ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	msgs := c.sms.sent(v.ID)
	require.Len(t, msgs, 1)
	code := msgs[0].Code

	const callers = 100
	var ok, already, waited atomic.Int32
	var mu sync.Mutex
	var others []error
	runConcurrently(callers, func(i int) {
		_, err := c.engine(i).Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
		switch {
		case err == nil:
			ok.Add(1)
		case errors.Is(err, verify.ErrAlreadyVerified):
			already.Add(1)
		case errors.Is(err, verify.ErrRateLimited):
			// Each check holds one of the recipient's failure slots until
			// its code is compared: past FreeFailures in flight at once,
			// the others are asked to wait.
			waited.Add(1)
		default:
			mu.Lock()
			others = append(others, err)
			mu.Unlock()
		}
	})
	assert.Empty(t, others, "every other caller is answered E910, or asked to wait")
	assert.Equal(t, int32(1), ok.Load(), "exactly one of %d right answers verifies", callers)
	assert.Equal(t, int32(callers-1), already.Load()+waited.Load())
	// Once the right code is in, the recipient's slots are reset: a late
	// caller is answered E910, not asked to wait.
	_, err = c.engine(2).Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
	assert.ErrorIs(t, err, verify.ErrAlreadyVerified)

	got, err := c.engine(1).Get(ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusVerified, got.Status)
	assert.Equal(t, start, got.VerifiedAt)
}

// testConcurrentDuplicates: Sends to one recipient racing on three
// engines start one verification under DuplicateReuse (the others resend
// it, or are told to wait for its cooldown or that it was sent MaxSends
// times), and leave one open under DuplicateReplace.
func testConcurrentDuplicates(t *testing.T, dsn string) {
	ctx := context.Background()
	c := newCluster(t, dsn, 3, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{{Channel: "sms"}}})
	replace, err := c.engine(0).CreateFlow(ctx, verify.Flow{Name: "replace", Duplicates: verify.DuplicateReplace,
		Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)

	const senders = 30
	for _, flow := range []string{"", replace.ID} {
		to := someone()
		var mu sync.Mutex
		ids := map[string]bool{}
		var others []error
		runConcurrently(senders, func(i int) {
			v, err := c.engine(i).Send(ctx, verify.SendRequest{FlowID: flow, To: to})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ids[v.ID] = true
			case errors.Is(err, verify.ErrRateLimited), errors.Is(err, verify.ErrMaxSends):
			default:
				others = append(others, err)
			}
		})
		assert.Empty(t, others, "flow %q: every Send succeeds or is refused E918 or E916", flow)
		open := 0
		for id := range ids {
			v, err := c.engine(0).Get(ctx, id)
			require.NoError(t, err)
			if v.Status.Open() {
				open++
			}
		}
		assert.Equal(t, 1, open, "flow %q: one verification is left open", flow)
		if flow == "" {
			assert.Len(t, ids, 1, "under reuse every Send answers with the one verification")
		}
	}
}

func testFallbackSentOnce(t *testing.T, dsn string) {
	ctx := context.Background()
	c := newCluster(t, dsn, 3, fallbackFlow)
	const verifications = 20
	var ids []string
	for i := range verifications {
		v, err := c.engine(i).Send(ctx, verify.SendRequest{To: someone()})
		require.NoError(t, err)
		require.Equal(t, verify.StatusSent, v.Status)
		ids = append(ids, v.ID)
	}
	// Not due yet: nobody sends anything.
	c.clk.Add(29 * time.Second)
	for i := range c.inst {
		n, err := c.engine(i).ProcessDue(ctx)
		require.NoError(t, err)
		require.Zero(t, n)
	}

	c.clk.Add(2 * time.Second)
	var total atomic.Int32
	var mu sync.Mutex
	var errs []error
	runConcurrently(3*len(c.inst), func(i int) {
		n, err := c.engine(i).ProcessDue(ctx)
		total.Add(int32(n))
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	})
	assert.Empty(t, errs)
	assert.Equal(t, int32(verifications), total.Load(), "ProcessDue calls together sent each fallback once")
	for _, id := range ids {
		emails := c.email.sent(id)
		require.Len(t, emails, 1, "the fallback step of %s is sent exactly once", id)
		sms := c.sms.sent(id)
		require.Len(t, sms, 1)
		assert.Equal(t, sms[0].Code, emails[0].Code, "the fallback sends the same code")
		got, err := c.engine(0).Get(ctx, id)
		require.NoError(t, err)
		require.Len(t, got.Deliveries, 2)
	}
	// Later passes find nothing left.
	c.clk.Add(time.Hour)
	for i := range c.inst {
		n, err := c.engine(i).ProcessDue(ctx)
		require.NoError(t, err)
		assert.Zero(t, n)
	}
}

func testRestart(t *testing.T, dsn string) {
	ctx := context.Background()
	clk := newClock()
	sms, email := newRecorder("sms", false), newRecorder("email", true)

	// Instance A sends the first step, then goes away.
	a := newInstance(t, dsn, clk, sms, email)
	_, err := a.eng.CreateFlow(ctx, fallbackFlow)
	require.NoError(t, err)
	v, err := a.eng.Send(ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	require.NoError(t, a.store.Close())

	// Instance B: a new engine and a new connection pool, same database and
	// secret.
	clk.Add(30 * time.Second)
	b := newInstance(t, dsn, clk, sms, email)
	n, err := b.eng.ProcessDue(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "B delivers the fallback A scheduled")
	first, fallback := sms.sent(v.ID), email.sent(v.ID)
	require.Len(t, first, 1)
	require.Len(t, fallback, 1)
	assert.Equal(t, first[0].Code, fallback[0].Code, "with the same code")

	got, err := b.eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: fallback[0].Code})
	require.NoError(t, err, "B verifies the code A generated")
	assert.Equal(t, verify.StatusVerified, got.Status)
	assert.Equal(t, 1, got.Attempts)
}

// testCrashedClaim: instance A claims the due fallback step and dies before
// sending it. Until A's lease runs out nobody sends it; then instance B
// claims it again and sends it, once.
func testCrashedClaim(t *testing.T, dsn string) {
	ctx := context.Background()
	c := newCluster(t, dsn, 2, fallbackFlow)
	v, err := c.engine(0).Send(ctx, verify.SendRequest{To: someone()})
	require.NoError(t, err)

	c.clk.Add(30 * time.Second)
	now := c.clk.Now()
	lease := 2 * time.Minute // the engine's default lease
	claimed, err := c.inst[0].store.ClaimDue(ctx, now, now.Add(lease), 10)
	require.NoError(t, err)
	require.Len(t, claimed, 1, "A claims the email step")
	require.NoError(t, c.inst[0].store.Close()) // and crashes

	n, err := c.engine(1).ProcessDue(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "B leaves a step under A's lease alone")
	c.clk.Add(lease - time.Second)
	n, err = c.engine(1).ProcessDue(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)

	c.clk.Add(time.Second)
	n, err = c.engine(1).ProcessDue(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "once the lease runs out, B claims and sends the step")
	emails := c.email.sent(v.ID)
	require.Len(t, emails, 1)
	assert.Equal(t, c.sms.sent(v.ID)[0].Code, emails[0].Code)
	n, err = c.engine(1).ProcessDue(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "and only once")
}

// testConcurrentDefaultFlows makes flows default from several instances at
// once: every call succeeds and exactly one flow ends up the default.
func testConcurrentDefaultFlows(t *testing.T, dsn string) {
	ctx := context.Background()
	c := newCluster(t, dsn, 3, fallbackFlow)
	var mu sync.Mutex
	var errs []error
	runConcurrently(12, func(i int) {
		f := fallbackFlow
		f.Name = fmt.Sprintf("flow %d", i)
		if _, err := c.engine(i).CreateFlow(ctx, f); err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	})
	require.Empty(t, errs)
	flows, err := c.engine(0).Flows(ctx)
	require.NoError(t, err)
	require.Len(t, flows, 13)
	defaults := 0
	for _, f := range flows {
		if f.Default {
			defaults++
		}
	}
	assert.Equal(t, 1, defaults, "exactly one default flow")
}
