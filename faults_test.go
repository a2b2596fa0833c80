package verify_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// faultHarness is a harness whose engine runs on a faultyStore.
func faultHarness(t *testing.T, opts ...verify.Option) (*harness, *faultyStore, *verify.Engine) {
	t.Helper()
	h := newHarness(t)
	fs := newFaultyStore(h.store)
	return h, fs, h.engineOn(fs, opts...)
}

// TestStoreFailuresAreTyped: whatever a Store fails with, every engine
// call answers a *verify.Error: E926 (503, with RetryAfter) for a failure a
// retry can fix, E925 (500) for one it cannot, and the store's error stays
// reachable with errors.Is and errors.As.
func TestStoreFailuresAreTyped(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		code  *verify.Error
		retry time.Duration
	}{
		{"bad connection", driver.ErrBadConn, verify.ErrUnavailable, verify.DefaultRetryAfter},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), verify.ErrUnavailable, verify.DefaultRetryAfter},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, verify.ErrUnavailable, verify.DefaultRetryAfter},
		{"server shutting down", &sqlStateError{"57P01", "terminating connection due to administrator command"}, verify.ErrUnavailable, verify.DefaultRetryAfter},
		{"server starting up", &sqlStateError{"57P03", "the database system is starting up"}, verify.ErrUnavailable, verify.DefaultRetryAfter},
		{"read-only during a failover", &sqlStateError{"25006", "cannot execute INSERT in a read-only transaction"}, verify.ErrUnavailable, verify.DefaultRetryAfter},
		{"disk full", &sqlStateError{"53100", "could not extend file: No space left on device"}, verify.ErrUnavailable, verify.DefaultRetryAfter},
		{"the store's own timeout", fmt.Errorf("query: %w", context.DeadlineExceeded), verify.ErrUnavailable, verify.DefaultRetryAfter},
		{"marked transient by a custom store", verify.Transient(errors.New("throttled"), 3*time.Second), verify.ErrUnavailable, 3 * time.Second},
		{"permission denied", &sqlStateError{"42501", "permission denied for table deliveries"}, verify.ErrInternal, 0},
		{"missing table", &sqlStateError{"42P01", `relation "verifications" does not exist`}, verify.ErrInternal, 0},
		{"a bug", errors.New("sqlstore: scan: unexpected column"), verify.ErrInternal, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, fs, eng := faultHarness(t)
			f, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "f", Default: true, Steps: []verify.Step{{Channel: "sms"}}})
			require.NoError(t, err)
			v, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
			require.NoError(t, err)
			fs.fail("*", fault{err: c.err})
			calls := map[string]func() error{
				"Send": func() error {
					_, err := eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: verify.Recipient{Phone: "+4712345679"}})
					return err
				},
				"Check": func() error {
					_, err := eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: "000000"})
					return err
				},
				"Get":    func() error { _, err := eng.Get(h.ctx, v.ID); return err },
				"Cancel": func() error { _, err := eng.Cancel(h.ctx, v.ID); return err },
				"Resend": func() error { _, err := eng.Resend(h.ctx, v.ID); return err },
				"ProcessDue": func() error {
					_, err := eng.ProcessDue(h.ctx)
					return err
				},
				"CreateFlow": func() error {
					_, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "g", Steps: []verify.Step{{Channel: "sms"}}})
					return err
				},
				"ReportDelivery": func() error {
					return eng.ReportDelivery(h.ctx, v.ID+"-0", verify.DeliveryDelivered, "")
				},
				"Purge": func() error { _, err := eng.Purge(h.ctx); return err },
			}
			for name, call := range calls {
				err := call()
				require.Error(t, err, "%s while the store fails", name)
				var ve *verify.Error
				require.True(t, errors.As(err, &ve), "%s: want a *verify.Error, got %T %v", name, err, err)
				assert.Equal(t, c.code.Code, ve.Code, "%s: %v", name, err)
				assert.ErrorIs(t, err, c.code, name)
				assert.ErrorIs(t, err, c.err, "%s: the store's error stays reachable", name)
				assert.Equal(t, c.retry, ve.RetryAfter, "%s: RetryAfter", name)
				want := http.StatusInternalServerError
				if c.code == verify.ErrUnavailable {
					want = http.StatusServiceUnavailable
				}
				assert.Equal(t, want, ve.HTTPStatus(), name)
				assert.Equal(t, c.code == verify.ErrUnavailable, verify.IsTransient(err), "%s: IsTransient", name)
			}
			var pe *sqlStateError
			if errors.As(c.err, &pe) {
				err := calls["Check"]()
				require.True(t, errors.As(err, &pe), "errors.As reaches the driver's error")
			}
		})
	}
}

// TestCallerContextErrorsStayContextErrors: when the caller's own context
// is cancelled or past its deadline, the engine returns that context's
// error (with the store's error still reachable), not E926 or E925: the
// caller gave up, the store did not fail.
func TestCallerContextErrorsStayContextErrors(t *testing.T) {
	h, fs, eng := faultHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	v, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)

	cancelled, cancel := context.WithCancel(h.ctx)
	cancel()
	expired, cancel2 := context.WithDeadline(h.ctx, time.Now().Add(-time.Second))
	defer cancel2()

	for _, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"deadline", expired, context.DeadlineExceeded},
	} {
		// The store answers with the context's error, as drivers do...
		_, err := eng.Check(c.ctx, verify.CheckRequest{VerifyID: v.ID, Code: "000000"})
		require.ErrorIs(t, err, c.want, c.name)
		_, coded := verify.AsError(err)
		assert.False(t, coded, "%s: not a *verify.Error: %v", c.name, err)

		// ... or with a driver error of its own, which stays reachable.
		lost := fmt.Errorf("conn closed: %w", io.ErrUnexpectedEOF)
		fs.fail("*", fault{err: lost})
		_, err = eng.Send(c.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345679"}})
		require.ErrorIs(t, err, c.want, c.name)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, c.name)
		_, coded = verify.AsError(err)
		assert.False(t, coded, "%s: not a *verify.Error: %v", c.name, err)
		fs.heal()
	}
}

// TestSendErrorAfterStoringIsSafeToRetry: a Send whose store failed after
// storing the verification (a connection lost during the commit) answers
// E926, sends nothing itself, and a retry with the same IdempotencyKey
// returns that verification with its code delivered once.
func TestSendErrorAfterStoringIsSafeToRetry(t *testing.T) {
	req := verify.SendRequest{To: ana, IdempotencyKey: "login-42"}

	t.Run("the retry delivers", func(t *testing.T) {
		h, fs, eng := faultHarness(t)
		h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: time.Minute})
		fs.fail("CreateVerification", fault{err: driver.ErrBadConn, after: true, times: 1})
		_, err := eng.Send(h.ctx, req)
		require.ErrorIs(t, err, verify.ErrUnavailable)
		stored, ferr := h.store.FindByIdempotencyKey(h.ctx, req.IdempotencyKey)
		require.NoError(t, ferr, "the verification was stored")
		assert.Empty(t, h.sms.Messages(), "the failed Send sent nothing")

		v, err := eng.Send(h.ctx, req)
		require.NoError(t, err)
		assert.Equal(t, stored.ID, v.ID, "the retry answers with the stored verification")
		assert.Equal(t, verify.StatusSent, v.Status)
		require.Len(t, h.sms.Messages(), 1, "the retry delivered the first step")

		again, err := eng.Send(h.ctx, req)
		require.NoError(t, err)
		assert.Equal(t, v.ID, again.ID)
		h.clock.Add(30 * time.Second)
		assert.Zero(t, h.processDue(), "nothing is left to send before the fallback is due")
		assert.Len(t, h.sms.Messages(), 1, "one code, however many retries")
		code := h.sms.Messages()[0].Code
		_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
		require.NoError(t, err)
	})

	t.Run("the store stays down until the claim runs out", func(t *testing.T) {
		h, fs, eng := faultHarness(t)
		h.flow(verify.Step{Channel: "sms"})
		fs.fail("CreateVerification", fault{err: driver.ErrBadConn, after: true, times: 1})
		fs.fail("ReleaseStep", fault{err: driver.ErrBadConn, times: 1}) // the release fails too
		_, err := eng.Send(h.ctx, req)
		require.ErrorIs(t, err, verify.ErrUnavailable)

		v, err := eng.Send(h.ctx, req)
		require.NoError(t, err)
		assert.Equal(t, verify.StatusPending, v.Status, "the failed Send's claim still holds")
		assert.Empty(t, h.sms.Messages(), "so the retry sends nothing yet")

		h.clock.Add(2*time.Minute + time.Second) // the default lease
		assert.Equal(t, 1, h.processDue(), "Run delivers the step once the claim runs out")
		v, err = eng.Send(h.ctx, req)
		require.NoError(t, err)
		assert.Equal(t, verify.StatusSent, v.Status)
		assert.Len(t, h.sms.Messages(), 1, "one code in all")
	})
}

// TestRedeliveryIsBounded: when the store refuses to record a delivery the
// provider accepted, the step is sent again with a growing wait, at most
// WithDeliveryTries times in all with the same Message.ID, and then never
// again; giving up is logged and emitted, and the flow moves on where the
// store accepts the failed delivery.
func TestRedeliveryIsBounded(t *testing.T) {
	const tries = 3
	lease := 2 * time.Minute
	refused := &sqlStateError{"42501", "permission denied for table deliveries"}

	t.Run("the store refuses every delivery", func(t *testing.T) {
		events := &eventLog{}
		h, fs, eng := faultHarness(t, verify.WithDeliveryTries(tries), verify.WithObserver(events))
		_, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "f", Default: true, TTL: 24 * time.Hour,
			Steps: []verify.Step{{Channel: "sms"}}})
		require.NoError(t, err)
		fs.fail("RecordDelivery", fault{err: refused})
		v, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err, "the provider has the code: Send succeeds")
		require.Len(t, h.sms.Messages(), 1)

		// The waits double: one lease, then two.
		sentAt := []time.Time{h.clock.Now()}
		for _, wait := range []time.Duration{lease, 2 * lease} {
			h.clock.Add(wait - time.Second)
			n, _ := eng.ProcessDue(h.ctx)
			assert.Zero(t, n, "nothing before the backoff has passed")
			h.clock.Add(time.Second)
			_, err := eng.ProcessDue(h.ctx)
			require.ErrorIs(t, err, verify.ErrInternal, "the refused record is reported")
			sentAt = append(sentAt, h.clock.Now())
		}
		msgs := h.sms.Messages()
		require.Len(t, msgs, tries, "sent %d times in all", tries)
		for _, m := range msgs {
			assert.Equal(t, v.ID+"-0", m.ID, "a re-delivery keeps the Message.ID")
		}

		// The next claim gives up: never sent again.
		for range 5 {
			h.clock.Add(4 * lease)
			_, _ = eng.ProcessDue(h.ctx)
		}
		assert.Len(t, h.sms.Messages(), tries, "never sent again after the cap")
		assert.Contains(t, h.logs.String(), "giving up on a step")
		assert.Contains(t, events.types(v.ID), verify.EventDeliveryFailed)
		_, ok, err := h.store.NextDue(h.ctx)
		require.NoError(t, err)
		assert.False(t, ok, "no step is left pending")
	})

	t.Run("the store accepts the failed delivery", func(t *testing.T) {
		events := &eventLog{}
		h, fs, eng := faultHarness(t, verify.WithDeliveryTries(tries), verify.WithObserver(events))
		_, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "f", Default: true, TTL: time.Hour,
			Steps: []verify.Step{{Channel: "sms"}, {Channel: "email", After: 50 * time.Minute}}})
		require.NoError(t, err)
		// Only the SMS provider's acceptance cannot be recorded.
		fs.fail("RecordDelivery", fault{err: refused, when: func(arg any) bool {
			d := arg.(verify.DeliveryRecord)
			return d.Channel == "sms" && d.Status != verify.DeliveryFailed
		}})
		v, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err)
		h.clock.Add(lease)
		_, _ = eng.ProcessDue(h.ctx)
		h.clock.Add(2 * lease)
		_, _ = eng.ProcessDue(h.ctx)
		require.Len(t, h.sms.Messages(), tries)
		assert.Empty(t, h.email.Messages(), "the fallback is not due yet")

		h.clock.Add(4 * lease) // the cap: the step fails, and the flow moves on at once
		n, err := eng.ProcessDue(h.ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, n, "the next step is sent")
		assert.Len(t, h.sms.Messages(), tries, "the capped step is not sent again")
		require.Len(t, h.email.Messages(), 1, "the flow moved on as for a failed step")
		got, err := eng.Get(h.ctx, v.ID)
		require.NoError(t, err)
		require.Len(t, got.Deliveries, 2)
		assert.Equal(t, verify.DeliveryFailed, got.Deliveries[0].Status)
		assert.Contains(t, got.Deliveries[0].Error, "could not be recorded in 3 tries")
		var reasons []string
		for _, ev := range events.events {
			if ev.Type == verify.EventDeliveryFailed {
				reasons = append(reasons, ev.Reason)
			}
		}
		assert.Len(t, reasons, 1)
	})
}

// TestTemplateReadFailureIsNotADeliveryFailure: when the store fails while
// the engine renders a step's template, no channel is called, nothing is
// recorded as a failed delivery and the flow does not move on to its
// fallback; Send answers E926, and a retry with the same IdempotencyKey
// delivers the step once the store is back.
func TestTemplateReadFailureIsNotADeliveryFailure(t *testing.T) {
	h, fs, eng := faultHarness(t)
	tpl, err := eng.CreateTemplate(h.ctx, verify.Template{Name: "login", Channel: "sms", Body: "Your code is {code}"})
	require.NoError(t, err)
	require.NoError(t, eng.ApproveTemplate(h.ctx, tpl.ID))
	_, err = eng.CreateFlow(h.ctx, verify.Flow{Name: "f", Default: true,
		Steps: []verify.Step{{Channel: "sms", Template: tpl.ID}, {Channel: "email", After: time.Minute}}})
	require.NoError(t, err)

	fs.fail("GetTemplate", fault{err: driver.ErrBadConn, times: 1})
	req := verify.SendRequest{To: ana, IdempotencyKey: "k1"}
	_, err = eng.Send(h.ctx, req)
	require.ErrorIs(t, err, verify.ErrUnavailable)
	assert.Empty(t, h.sms.Messages())
	assert.Empty(t, h.email.Messages(), "the fallback is not brought forward")
	stored, err := h.store.FindByIdempotencyKey(h.ctx, req.IdempotencyKey)
	require.NoError(t, err)
	assert.Empty(t, stored.Deliveries, "no failed delivery is recorded")
	assert.Equal(t, verify.StatusPending, stored.Status)

	v, err := eng.Send(h.ctx, req)
	require.NoError(t, err)
	assert.Equal(t, stored.ID, v.ID)
	assert.Equal(t, verify.StatusSent, v.Status)
	require.Len(t, h.sms.Messages(), 1)
	assert.Contains(t, h.sms.Messages()[0].Body, "Your code is")
}

// TestCompanionLeftForTheNextClaimWhenTheLeaseRunsShort: a group's
// companion steps are delivered one after another on one claim; one whose
// lease no longer covers a send is released for the next claim rather
// than sent, so a second live engine never sends it a second time.
func TestCompanionLeftForTheNextClaimWhenTheLeaseRunsShort(t *testing.T) {
	h := newHarness(t)
	slow := &hookChannel{name: "slow"}
	opts := []verify.Option{verify.WithLease(10 * time.Second), verify.WithSendTimeout(8 * time.Second), verify.WithChannels(slow)}
	a2, b2 := h.engine(opts...), h.engine(opts...)
	_, err := a2.CreateFlow(h.ctx, verify.Flow{Name: "companions", Default: true,
		Steps: []verify.Step{{Channel: "slow"}, {Channel: "slow"}, {Channel: "slow"}}})
	require.NoError(t, err)
	// Only the first engine's Send has a slow provider; the second
	// engine's sends, during it and after, are instant (a mock clock
	// shared by concurrent sends would make each look slower than it is).
	var slowSend atomic.Bool
	slow.before = func(verify.Message) {
		if !slowSend.Load() {
			return
		}
		h.clock.Add(7 * time.Second) // within the send timeout
		// The other engine polls while each message is on its way.
		slowSend.Store(false)
		if _, err := b2.ProcessDue(h.ctx); err != nil {
			t.Errorf("second engine: %v", err)
		}
		slowSend.Store(true)
	}
	slowSend.Store(true)
	v, err := a2.Send(h.ctx, verify.SendRequest{To: ana})
	slowSend.Store(false)
	require.NoError(t, err)
	for range 5 {
		h.clock.Add(10 * time.Second)
		_, err := b2.ProcessDue(h.ctx)
		require.NoError(t, err)
	}
	sent := countBy(slow.ids())
	require.Len(t, sent, 3, "every companion is sent")
	for id, n := range sent {
		assert.Equal(t, 1, n, "%s sent %d times", id, n)
	}
	got, err := a2.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Len(t, got.Deliveries, 3)
}

// TestReleasedClaimsGiveTheirTryBack: a claim that never reached a channel
// (a Send whose commit was reported lost) gives its try back, so even with
// a single try allowed the step is delivered.
func TestReleasedClaimsGiveTheirTryBack(t *testing.T) {
	h, fs, eng := faultHarness(t, verify.WithDeliveryTries(1))
	h.flow(verify.Step{Channel: "sms"})
	fs.fail("CreateVerification", fault{err: driver.ErrBadConn, after: true, times: 1})
	_, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.ErrorIs(t, err, verify.ErrUnavailable)
	assert.Equal(t, 1, h.processDue(), "Run sends the released step")
	assert.Len(t, h.sms.Messages(), 1)
}

// TestGiveUpLeavesTheVerificationOpen: a step given up after tries whose
// sends the channel accepted but the store could not record may have
// reached the recipient: the verification stays open and its code
// verifies.
func TestGiveUpLeavesTheVerificationOpen(t *testing.T) {
	h, fs, eng := faultHarness(t, verify.WithDeliveryTries(2))
	_, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "f", Default: true, TTL: time.Hour, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	fs.fail("RecordDelivery", fault{err: &sqlStateError{"42501", "permission denied"}, when: func(arg any) bool {
		return arg.(verify.DeliveryRecord).Status != verify.DeliveryFailed
	}})
	v, err := eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	for range 4 {
		h.clock.Add(10 * time.Minute)
		_, _ = eng.ProcessDue(h.ctx)
	}
	require.Len(t, h.sms.Messages(), 2, "two tries, then never again")
	got, err := eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.True(t, got.Status.Open(), "not failed: a try may have reached the recipient (%s)", got.Status)
	_, err = eng.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: h.sms.Messages()[0].Code})
	require.NoError(t, err)
}

// TestRetriesWaitOutTheBackoff: repeated Sends with one IdempotencyKey while
// the store cannot record deliveries send one code, not one per retry.
func TestRetriesWaitOutTheBackoff(t *testing.T) {
	h, fs, eng := faultHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	fs.fail("RecordDelivery", fault{err: &sqlStateError{"42501", "permission denied"}})
	req := verify.SendRequest{To: ana, IdempotencyKey: "k"}
	for range 5 {
		_, err := eng.Send(h.ctx, req)
		require.NoError(t, err)
	}
	assert.Len(t, h.sms.Messages(), 1, "the retries wait for the step's backoff")
}

// TestCancelledSendReleasesItsClaim: when the caller's context is
// cancelled after the store committed, the claim on the first step is
// released all the same, and a retry with the same IdempotencyKey delivers
// the code at once.
func TestCancelledSendReleasesItsClaim(t *testing.T) {
	h, fs, eng := faultHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	ctx, cancel := context.WithCancel(h.ctx)
	fs.fail("CreateVerification", fault{err: context.Canceled, after: true, times: 1, when: func(any) bool {
		cancel() // the client gives up while the commit is on its way
		return true
	}})
	req := verify.SendRequest{To: ana, IdempotencyKey: "k"}
	_, err := eng.Send(ctx, req)
	require.ErrorIs(t, err, context.Canceled)
	assert.False(t, verify.IsTransient(err), "the caller gave up; the store did not fail")
	assert.Equal(t, 1, fs.count("ReleaseStep"), "the claim is released despite the cancelled context")

	v, err := eng.Send(h.ctx, req)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusSent, v.Status)
	assert.Len(t, h.sms.Messages(), 1)
}

// hookChannel records the IDs of the messages it is handed, after running
// before (to let time pass, or to call another engine mid-send).
type hookChannel struct {
	name   string
	before func(m verify.Message)

	mu  sync.Mutex
	got []string
}

func (c *hookChannel) Name() string { return c.name }

func (c *hookChannel) Send(_ context.Context, m verify.Message) (verify.Receipt, error) {
	if c.before != nil {
		c.before(m)
	}
	c.mu.Lock()
	c.got = append(c.got, m.ID)
	c.mu.Unlock()
	return verify.Receipt{}, nil
}

func (c *hookChannel) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}
