package verify_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func TestFallbackTiming(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", From: "otp@acme.test", After: 30 * time.Second})
	v, code := h.send()
	assert.Equal(t, 1, h.sms.Len())

	h.clock.Add(29 * time.Second)
	assert.Equal(t, 0, h.processDue(), "at 29s the fallback is not due")
	assert.Equal(t, 0, h.email.Len())

	h.clock.Add(time.Second)
	assert.Equal(t, 1, h.processDue(), "at 30s the fallback is sent")
	require.Equal(t, 1, h.email.Len())
	m, _ := h.email.Last()
	assert.Equal(t, code, m.Code, "fallback sends the same code")
	assert.Equal(t, "ana@example.com", m.To.Email)
	assert.Equal(t, "otp@acme.test", m.From)
	assert.Equal(t, v.ID+"-1", m.ID)
	assert.Equal(t, 1, m.Step)
	assert.Contains(t, m.Body, "expires in 5 minutes", "4.5 minutes left, rounded up")

	h.clock.Add(time.Minute)
	assert.Equal(t, 0, h.processDue(), "a step is sent once")
	got, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	require.Len(t, got.Deliveries, 2)
	_, err = h.check(v.ID, code)
	require.NoError(t, err)
}

func TestFallbackSkippedOnceVerified(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	v, code := h.send()
	h.clock.Add(10 * time.Second)
	_, err := h.check(v.ID, code)
	require.NoError(t, err)
	h.clock.Add(time.Minute)
	assert.Equal(t, 0, h.processDue())
	assert.Equal(t, 0, h.email.Len(), "no fallback after verification")
}

func TestSendAnyway(t *testing.T) {
	h := newHarness(t)
	h.flow(
		verify.Step{Channel: "sms"},
		verify.Step{Channel: "email"}, // After 0: together with sms
		verify.Step{Channel: "voice", After: 20 * time.Second},
		verify.Step{Channel: "email", After: 0}, // together with voice
	)
	v, code := h.send()
	assert.Equal(t, 1, h.sms.Len())
	assert.Equal(t, 1, h.email.Len(), "the send-anyway step goes with the first")
	assert.Len(t, v.Deliveries, 2)

	h.clock.Add(20 * time.Second)
	assert.Equal(t, 2, h.processDue())
	assert.Equal(t, 1, h.voice.Len())
	assert.Equal(t, 2, h.email.Len())
	for _, m := range append(h.voice.Messages(), h.email.Messages()...) {
		assert.Equal(t, code, m.Code)
	}
}

func TestFailoverInSend(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second},
		verify.Step{Channel: "voice", After: 60 * time.Second})
	h.sms.FailNext(1, errors.New("gateway down, code 123"))
	v, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, verify.StatusSent, v.Status)
	assert.Equal(t, 1, h.email.Len(), "a failed step moves on to the next at once")
	require.Len(t, v.Deliveries, 2)
	assert.Equal(t, verify.DeliveryFailed, v.Deliveries[0].Status)
	assert.Equal(t, "gateway down, code 123", v.Deliveries[0].Error)
	assert.Equal(t, verify.DeliverySent, v.Deliveries[1].Status)

	// The later step keeps its interval, counted from the step brought forward.
	h.clock.Add(59 * time.Second)
	assert.Equal(t, 0, h.processDue())
	h.clock.Add(time.Second)
	assert.Equal(t, 1, h.processDue())
	assert.Equal(t, 1, h.voice.Len())
}

func TestFailoverInProcessDue(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "voice", After: 30 * time.Second},
		verify.Step{Channel: "email", After: 2 * time.Minute})
	v, code := h.send()
	h.voice.FailNext(1, nil)
	h.clock.Add(30 * time.Second)
	assert.Equal(t, 2, h.processDue(), "the failed voice step brings the email step forward")
	m, ok := h.email.Last()
	require.True(t, ok)
	assert.Equal(t, code, m.Code)
	got, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusSent, got.Status)
	require.Len(t, got.Deliveries, 3)
}

func TestEveryStepFails(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "voice"}, verify.Step{Channel: "email", After: time.Minute})
	h.sms.FailNext(1, nil)
	h.voice.FailNext(1, nil)
	h.email.FailNext(1, nil)
	v, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	e := requireCode(t, err, verify.ErrDeliveryFailed)
	assert.Equal(t, v.ID, e.Reference)
	assert.Equal(t, 502, e.HTTPStatus())
	assert.Equal(t, verify.StatusFailed, v.Status)
	assert.Len(t, v.Deliveries, 3)
	assert.Equal(t, 3, h.sms.Calls()+h.voice.Calls()+h.email.Calls())

	_, err = h.check(v.ID, "123456")
	requireCode(t, err, verify.ErrDeliveryFailed)
	stored, err := h.store.GetVerification(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Empty(t, stored.SealedCode)
}

func TestLaterStepFailingKeepsVerificationOpen(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	v, code := h.send()
	h.email.FailNext(1, nil)
	h.clock.Add(30 * time.Second)
	assert.Equal(t, 1, h.processDue())
	got, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusSent, got.Status, "the code was delivered by sms; the verification stays open")
	_, err = h.check(v.ID, code)
	require.NoError(t, err)
}

func TestResend(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	v, code := h.send()
	_, err := h.check(v.ID, wrong(code))
	requireCode(t, err, verify.ErrInvalidOTP)

	for i := 2; i <= 5; i++ {
		got, err := h.eng.Resend(h.ctx, v.ID)
		require.NoError(t, err)
		assert.Equal(t, i, got.Sends)
		assert.Equal(t, 1, got.Attempts, "resend never resets attempts")
		m, _ := h.sms.Last()
		assert.Equal(t, code, m.Code, "resend sends the same code")
		assert.Equal(t, -1, m.Step)
	}
	assert.Equal(t, 5, h.sms.Len())
	ids := map[string]bool{}
	for _, m := range h.sms.Messages() {
		ids[m.ID] = true
	}
	assert.Len(t, ids, 5, "each resend has its own message ID")

	_, err = h.eng.Resend(h.ctx, v.ID)
	e := requireCode(t, err, verify.ErrMaxSends)
	assert.Equal(t, 429, e.HTTPStatus())

	h.clock.Add(30 * time.Second)
	assert.Equal(t, 1, h.processDue(), "resend leaves the fallback schedule alone")
	_, err = h.check(v.ID, code)
	require.NoError(t, err)
	_, err = h.eng.Resend(h.ctx, v.ID)
	requireCode(t, err, verify.ErrAlreadyVerified)
	_, err = h.eng.Resend(h.ctx, "")
	requireCode(t, err, verify.ErrMissingVerifyID)
	_, err = h.eng.Resend(h.ctx, "unknown")
	requireCode(t, err, verify.ErrNotFound)
}

func TestResendFailure(t *testing.T) {
	h := newHarness(t, verify.WithMaxSends(2))
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	h.sms.FailNext(1, nil)
	got, err := h.eng.Resend(h.ctx, v.ID)
	requireCode(t, err, verify.ErrDeliveryFailed)
	assert.Equal(t, verify.StatusSent, got.Status, "a failed resend leaves the verification open")
	_, err = h.eng.Resend(h.ctx, v.ID)
	requireCode(t, err, verify.ErrMaxSends)
	_, err = h.check(v.ID, code)
	require.NoError(t, err)
}

func TestRestartDeliversFallback(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	v, code := h.send()

	// A new engine (a restarted process) on the same store and secret.
	b := h.engine()
	h.clock.Add(30 * time.Second)
	n, err := b.ProcessDue(h.ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	m, _ := h.email.Last()
	assert.Equal(t, code, m.Code)
	_, err = b.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
	require.NoError(t, err)
}

// crashingChannel accepts a message and then blocks, like a process that
// dies mid-send.
func TestLeaseExpiryRetriesCrashedSend(t *testing.T) {
	h := newHarness(t, verify.WithLease(time.Minute), verify.WithSendTimeout(10*time.Second))
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	v, code := h.send()
	h.clock.Add(30 * time.Second)
	// Another instance claimed the step and died before sending it.
	claimed, err := h.store.ClaimDue(h.ctx, h.clock.Now(), h.clock.Now().Add(time.Minute), 10)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	assert.Equal(t, 0, h.processDue(), "the step is leased")
	h.clock.Add(time.Minute)
	assert.Equal(t, 1, h.processDue(), "after the lease, another engine sends it")
	m, _ := h.email.Last()
	assert.Equal(t, v.ID+"-1", m.ID)
	assert.Equal(t, code, m.Code)
}

func TestProcessDueAcrossEnginesSendsOnce(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	const verifications = 50
	for range verifications {
		h.send()
	}
	engines := []*verify.Engine{h.eng, h.engine(), h.engine()}
	h.clock.Add(30 * time.Second)
	var wg sync.WaitGroup
	for _, e := range engines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.ProcessDue(context.Background())
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	assert.Equal(t, verifications, h.email.Len(), "each fallback step sent exactly once in total")
	ids := map[string]bool{}
	for _, m := range h.email.Messages() {
		ids[m.ID] = true
	}
	assert.Len(t, ids, verifications)
}

func TestRunDrivenByMockClock(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	_, code := h.send()
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error)
	go func() { done <- h.eng.Run(ctx) }()

	require.Eventually(t, func() bool {
		if h.email.Len() > 0 {
			return true
		}
		h.clock.Add(time.Second)
		return false
	}, 10*time.Second, time.Millisecond)
	m, _ := h.email.Last()
	assert.Equal(t, code, m.Code)
	assert.False(t, h.clock.Now().Before(start.Add(30*time.Second)), "not sent before it was due")
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

func TestPurgeAfterRetention(t *testing.T) {
	h := newHarness(t, verify.WithRetention(24*time.Hour))
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	open, _ := h.send()
	_, err := h.check(v.ID, code)
	require.NoError(t, err)
	h.clock.Add(23 * time.Hour)
	n, err := h.eng.Purge(h.ctx)
	require.NoError(t, err)
	assert.Equal(t, 0, n)
	_, err = h.check(v.ID, code)
	requireCode(t, err, verify.ErrAlreadyVerified)

	h.clock.Add(2 * time.Hour)
	h.processDue() // expires the other one, which is then kept for its own retention
	n, err = h.eng.Purge(h.ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	_, err = h.check(v.ID, code)
	requireCode(t, err, verify.ErrNotFound)
	_, err = h.eng.Get(h.ctx, open.ID)
	require.NoError(t, err)
}

func TestSecretRotation(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	v, code := h.send()
	newKey := []byte("fedcba9876543210fedcba9876543210")

	onlyNew := h.engine(verify.WithSecret(newKey))
	_, err := onlyNew.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
	requireCode(t, err, verify.ErrInvalidOTP)

	rotated := h.engine(verify.WithSecret(newKey, secret))
	h.clock.Add(30 * time.Second)
	n, err := rotated.ProcessDue(h.ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "the old key still unseals the code for fallback")
	m, _ := h.email.Last()
	assert.Equal(t, code, m.Code)
	_, err = rotated.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
	require.NoError(t, err, "the old key still checks")
}

// waitingChannel never answers of itself: it waits until its context is
// done, on Done or, when poll is set, by polling Err without ever calling
// Done, and reports the context's error and deadline.
type waitingChannel struct {
	poll bool
	got  chan waited
}

type waited struct {
	err      error
	deadline time.Time
}

func (*waitingChannel) Name() string { return "waiting" }
func (c *waitingChannel) Send(ctx context.Context, _ verify.Message) (verify.Receipt, error) {
	if c.poll {
		for ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
	} else {
		<-ctx.Done()
	}
	d, _ := ctx.Deadline()
	c.got <- waited{ctx.Err(), d}
	return verify.Receipt{}, ctx.Err()
}

// TestSendTimeoutEndsAWaitingChannel: the send timeout ends a channel's
// Send that waits on its context, whether it waits on Done or polls Err
// (the timeout's timer is made only for the first).
func TestSendTimeoutEndsAWaitingChannel(t *testing.T) {
	const timeout = 50 * time.Millisecond
	for _, poll := range []bool{false, true} {
		t.Run(fmt.Sprintf("poll=%v", poll), func(t *testing.T) {
			ch := &waitingChannel{poll: poll, got: make(chan waited, 1)}
			h := newHarness(t, verify.WithSendTimeout(timeout), verify.WithChannels(ch))
			h.flow(verify.Step{Channel: "waiting"})
			began := time.Now()
			_, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
			require.Error(t, err, "the only step's channel timed out")
			w := <-ch.got
			assert.Equal(t, context.DeadlineExceeded, w.err)
			assert.False(t, w.deadline.Before(began.Add(timeout)), "deadline %v, at least the timeout after %v", w.deadline, began)
			assert.True(t, w.deadline.Before(time.Now()), "the deadline has passed when the channel returns")
		})
	}
}
