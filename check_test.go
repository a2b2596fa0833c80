package verify_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func requireCode(t *testing.T, err error, sentinel *verify.Error) *verify.Error {
	t.Helper()
	require.Error(t, err)
	require.True(t, errors.Is(err, sentinel), "want %s, got %v", sentinel.Code, err)
	var ve *verify.Error
	require.True(t, errors.As(err, &ve))
	return ve
}

func TestSendAndCheck(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms", From: "ACME"})
	v, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana, ForeignID: "order-7", IPAddress: "192.0.2.1"})
	require.NoError(t, err)
	assert.Equal(t, verify.StatusSent, v.Status)
	assert.Equal(t, "order-7", v.ForeignID)
	assert.Equal(t, ana, v.To)
	assert.Equal(t, 5, v.AttemptsRemaining)
	assert.Equal(t, start.Add(5*time.Minute), v.ExpiresAt)
	require.Len(t, v.Deliveries, 1)
	assert.Equal(t, verify.DeliverySent, v.Deliveries[0].Status)
	assert.Equal(t, "sms", v.Deliveries[0].Channel)
	assert.Equal(t, "ACME", v.Deliveries[0].From)

	m, ok := h.sms.Last()
	require.True(t, ok)
	assert.Len(t, m.Code, 6)
	assert.Equal(t, v.ID+"-0", m.ID, "message IDs are stable per (verification, step)")
	assert.Equal(t, "Your verification code is "+m.Code+". It expires in 5 minutes.", m.Body)
	assert.Equal(t, "+4712345678", m.To.Phone)
	assert.Equal(t, "ACME", m.From)
	assert.Equal(t, v.ExpiresAt, m.ExpiresAt)

	h.clock.Add(10 * time.Second)
	got, err := h.check(v.ID, m.Code)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusVerified, got.Status)
	assert.Equal(t, start.Add(10*time.Second), got.VerifiedAt)
	assert.Equal(t, 1, got.Attempts)

	_, err = h.check(v.ID, m.Code)
	requireCode(t, err, verify.ErrAlreadyVerified)
	_, err = h.check(v.ID, wrong(m.Code))
	requireCode(t, err, verify.ErrAlreadyVerified)
	g, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusVerified, g.Status, "records are kept after they end")
}

func TestCheckValidation(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()

	_, err := h.check("", code)
	e := requireCode(t, err, verify.ErrMissingVerifyID)
	assert.Equal(t, "verify_id", e.Parameter)
	_, err = h.check(v.ID, "")
	requireCode(t, err, verify.ErrMissingOTP)
	for _, bad := range []string{"12 34", "12-34", "１２３４", "12345'", "abc\x00"} {
		_, err = h.check(v.ID, bad)
		requireCode(t, err, verify.ErrOTPNotAlphanumeric)
	}
	_, err = h.check("4d3d0959-805e-43fa-bece-5815ce0795a2", code)
	e = requireCode(t, err, verify.ErrNotFound)
	assert.Equal(t, "verify_id", e.Parameter)

	got, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, 0, got.Attempts, "malformed input consumes no attempt")
	_, err = h.check(v.ID, code)
	require.NoError(t, err)
}

func TestWrongCodesUseUpAttempts(t *testing.T) {
	h := newHarness(t)
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "three", MaxAttempts: 3, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err)
	m, _ := h.sms.Last()

	for remaining := 2; remaining >= 0; remaining-- {
		got, err := h.check(v.ID, wrong(m.Code))
		e := requireCode(t, err, verify.ErrInvalidOTP)
		assert.Equal(t, remaining, e.AttemptsRemaining)
		assert.Equal(t, remaining, got.AttemptsRemaining)
		assert.Equal(t, "OTP", e.Parameter)
	}
	got, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusMaxAttempts, got.Status, "the attempt that uses the last try ends the verification")

	_, err = h.check(v.ID, m.Code)
	requireCode(t, err, verify.ErrMaxAttempts)
	_, err = h.eng.Resend(h.ctx, v.ID)
	requireCode(t, err, verify.ErrMaxAttempts)
}

func TestLastAttemptWithRightCodeVerifies(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	for range 4 {
		_, err := h.check(v.ID, wrong(code))
		requireCode(t, err, verify.ErrInvalidOTP)
	}
	got, err := h.check(v.ID, code)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusVerified, got.Status)
	assert.Equal(t, 0, got.AttemptsRemaining)
}

func TestExpiry(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	h.clock.Add(5*time.Minute - time.Millisecond)
	_, err := h.check(v.ID, wrong(code))
	requireCode(t, err, verify.ErrInvalidOTP)

	h.clock.Add(time.Millisecond)
	_, err = h.check(v.ID, code)
	e := requireCode(t, err, verify.ErrExpired)
	assert.Equal(t, http.StatusGone, e.HTTPStatus())
	got, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusExpired, got.Status)
	assert.Equal(t, 1, got.Attempts, "a check after expiry consumes no attempt")

	// ProcessDue marks verifications expired without a Check.
	v2, _ := h.send()
	h.clock.Add(5 * time.Minute)
	h.processDue()
	stored, err := h.store.GetVerification(h.ctx, v2.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusExpired, stored.Status)
	assert.Empty(t, stored.SealedCode, "the sealed code is erased when the verification ends")
	_, err = h.eng.Resend(h.ctx, v2.ID)
	requireCode(t, err, verify.ErrExpired)
}

func TestCancel(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	v, code := h.send()
	got, err := h.eng.Cancel(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusCanceled, got.Status)
	again, err := h.eng.Cancel(h.ctx, v.ID)
	require.NoError(t, err, "cancelling twice is harmless")
	assert.Equal(t, verify.StatusCanceled, again.Status)

	_, err = h.check(v.ID, code)
	e := requireCode(t, err, verify.ErrCanceled)
	assert.Equal(t, "E914", e.Code)
	h.clock.Add(time.Minute)
	assert.Equal(t, 0, h.processDue(), "a canceled verification's fallback is dropped")
	assert.Equal(t, 0, h.email.Len())

	_, err = h.eng.Cancel(h.ctx, "")
	requireCode(t, err, verify.ErrMissingVerifyID)
	_, err = h.eng.Cancel(h.ctx, "nope")
	requireCode(t, err, verify.ErrNotFound)

	v2, code2 := h.send()
	_, err = h.check(v2.ID, code2)
	require.NoError(t, err)
	_, err = h.eng.Cancel(h.ctx, v2.ID)
	requireCode(t, err, verify.ErrAlreadyVerified)
}

func TestAlphanumericCaseInsensitive(t *testing.T) {
	h := newHarness(t)
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "alnum", CodeLength: 10, Charset: verify.Alphanumeric,
		Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err)
	m, _ := h.sms.Last()
	assert.Len(t, m.Code, 10)
	assert.Regexp(t, `^[A-HJ-NP-Z2-9]{10}$`, m.Code)
	_, err = h.check(v.ID, strings.ToLower(m.Code))
	require.NoError(t, err)
}

func TestCustomCode(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	v, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana, Code: "424242"})
	require.NoError(t, err)
	m, _ := h.sms.Last()
	assert.Equal(t, "424242", m.Code)
	_, err = h.check(v.ID, "424242")
	require.NoError(t, err)

	for _, bad := range []string{"42424", "4242424", "42424A", "42 424"} {
		_, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana, Code: bad})
		e := requireCode(t, err, verify.ErrInvalidCode)
		assert.Equal(t, "otp", e.Parameter)
	}
}

func TestConcurrentWrongGuesses(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	const n = 400
	codes := raceChecks(h, n, v.ID, wrong(code))
	got := countBy(codes)
	assert.Equal(t, 5, got["E912"], "exactly MaxAttempts wrong guesses are answered E912: %v", got)
	// Each check holds one of the recipient's failure slots until its code
	// is compared; while MaxFailures (100) of them are in flight, the rest
	// are refused as locked out. Every other guess is answered E911.
	assert.Equal(t, n-5, got["E911"]+got["E919"], "%v", got)
	_, err := h.check(v.ID, code)
	requireCode(t, err, verify.ErrMaxAttempts)
}

func TestConcurrentRightCodes(t *testing.T) {
	h := newHarness(t)
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "many", MaxAttempts: 100, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err)
	m, _ := h.sms.Last()
	const n = 100
	codes := raceChecks(h, n, v.ID, m.Code)
	assert.Equal(t, map[string]int{"ok": 1, "E910": n - 1}, countBy(codes), "exactly one right answer verifies")
}

func TestErrorJSONAndStatus(t *testing.T) {
	b, err := json.Marshal(verify.ErrInvalidOTP)
	require.NoError(t, err)
	assert.Equal(t, `{"code":"E912","type":"validation_error","parameter":"OTP","message":"Invalid Request/OTP","reference":""}`, string(b))
	b, err = json.Marshal(verify.ErrMissingVerifyID)
	require.NoError(t, err)
	assert.Equal(t, `{"code":"E800","type":"VALIDATION_ERROR","parameter":"verify_id","message":"verify_id field is mandatory","reference":""}`, string(b))
	b, err = json.Marshal(verify.ErrExpired)
	require.NoError(t, err)
	assert.Equal(t, `{"code":"E913","type":"validation_error","parameter":"","message":"The OTP has already expired","reference":""}`, string(b))

	for _, c := range []struct {
		err    *verify.Error
		status int
	}{
		{verify.ErrMissingVerifyID, 400}, {verify.ErrMissingOTP, 400}, {verify.ErrOTPNotAlphanumeric, 400},
		{verify.ErrNotFound, 404}, {verify.ErrAlreadyVerified, 409}, {verify.ErrMaxAttempts, 429},
		{verify.ErrInvalidOTP, 400}, {verify.ErrExpired, 410}, {verify.ErrCanceled, 410},
		{verify.ErrDeliveryFailed, 502}, {verify.ErrMaxSends, 429}, {verify.ErrInvalidFlow, 400},
	} {
		assert.Equal(t, c.status, c.err.HTTPStatus(), c.err.Code)
	}
	assert.Equal(t, "verify: E912 Invalid Request/OTP (OTP)", verify.ErrInvalidOTP.Error())
	assert.False(t, errors.Is(verify.ErrInvalidOTP, verify.ErrExpired))
	wrapped := errors.Join(errors.New("ctx"), &verify.Error{Code: "E912", AttemptsRemaining: 2})
	assert.True(t, errors.Is(wrapped, verify.ErrInvalidOTP))
}

// TestConcurrentRightCodesBeyondMaxAttempts races more right codes than the
// verification has attempts: the callers left without an attempt must not
// end it before a counted right code verifies it.
func TestConcurrentRightCodesBeyondMaxAttempts(t *testing.T) {
	for range 20 {
		h := newHarness(t)
		h.flow(verify.Step{Channel: "sms"}) // MaxAttempts 5
		v, code := h.send()
		got := countBy(raceChecks(h, 100, v.ID, code))
		require.Equal(t, 1, got["ok"], "exactly one success: %v", got)
		require.Equal(t, 99, got["E910"]+got["E911"], "the others see it verified or out of attempts: %v", got)
		final, err := h.eng.Get(h.ctx, v.ID)
		require.NoError(t, err)
		require.Equal(t, verify.StatusVerified, final.Status)
	}
}

// raceChecks runs n concurrent Checks of code and returns each answer's
// E-code ("ok" for success).
func raceChecks(h *harness, n int, id, code string) []string {
	var wg sync.WaitGroup
	var mu sync.Mutex
	out := make([]string, 0, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.check(id, code)
			r := "ok"
			if e, ok := verify.AsError(err); ok {
				r = e.Code
			} else if err != nil {
				r = err.Error()
			}
			mu.Lock()
			out = append(out, r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}
