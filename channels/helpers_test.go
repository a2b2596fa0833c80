package channels_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
)

const (
	testCode = "483920"
	testBody = "Your verification code is 483920. It expires in 5 minutes."
)

// testMessage is a message as the engine hands it to a channel.
func testMessage() verify.Message {
	return verify.Message{
		ID:             "7f1c2b9e-1d2a-4c57-9a51-3f0f7d6c2e11-0",
		VerificationID: "7f1c2b9e-1d2a-4c57-9a51-3f0f7d6c2e11",
		Channel:        "sms",
		Step:           0,
		To:             verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"},
		Code:           testCode,
		Body:           testBody,
		Language:       "en",
		ExpiresAt:      time.Now().Add(5 * time.Minute),
	}
}

// sleepRecorder replaces the retry wait: it records each requested wait
// and returns at once, so retry tests neither sleep nor depend on timing.
type sleepRecorder struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleepRecorder) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleepRecorder) Waits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

// fastRetry is a retry policy with millisecond backoff whose waits are
// recorded instead of slept.
func fastRetry(attempts int) (channels.RetryPolicy, *sleepRecorder) {
	rec := &sleepRecorder{}
	p := channels.WithSleep(channels.RetryPolicy{
		MaxAttempts: attempts,
		BaseDelay:   time.Millisecond,
		MaxDelay:    5 * time.Second,
	}, rec.sleep)
	return p, rec
}

// peer is a local HTTP server standing in for a provider. It answers each
// request with the next scripted response (the last one repeats) and
// counts requests.
type peer struct {
	*httptest.Server
	t        *testing.T
	requests atomic.Int32
	mu       sync.Mutex
	check    func(t *testing.T, r *http.Request, body []byte)
	replies  []reply
	bodies   [][]byte
}

type reply struct {
	status int
	header map[string]string
	body   string
}

func newPeer(t *testing.T, check func(t *testing.T, r *http.Request, body []byte), replies ...reply) *peer {
	t.Helper()
	p := &peer{t: t, check: check, replies: replies}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(p.requests.Add(1))
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("reading request body: %v", err)
		}
		p.mu.Lock()
		p.bodies = append(p.bodies, body)
		p.mu.Unlock()
		if p.check != nil {
			p.check(t, r, body)
		}
		rep := p.replies[min(n, len(p.replies))-1]
		for k, v := range rep.header {
			w.Header().Set(k, v)
		}
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(rep.status)
		_, _ = io.WriteString(w, rep.body)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *peer) count() int { return int(p.requests.Load()) }

// body returns the i-th request's body.
func (p *peer) body(i int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bodies[i]
}

// parseForm decodes a form body, failing the test if it is malformed.
func parseForm(t *testing.T, body []byte) url.Values {
	t.Helper()
	form, err := url.ParseQuery(string(body))
	require.NoError(t, err)
	return form
}

// assertFormKeys checks that form has exactly the given keys.
func assertFormKeys(t *testing.T, form url.Values, keys ...string) {
	t.Helper()
	got := make([]string, 0, len(form))
	for k := range form {
		got = append(got, k)
	}
	assert.ElementsMatch(t, keys, got, "form fields")
}

// assertNoSecrets checks that an error carries neither the code nor the
// body.
func assertNoSecrets(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	assert.NotContains(t, err.Error(), testCode, "error text must not contain the code")
	assert.NotContains(t, err.Error(), testBody, "error text must not contain the body")
}

// providerError extracts the *channels.ProviderError from err.
func providerError(t *testing.T, err error) *channels.ProviderError {
	t.Helper()
	var pe *channels.ProviderError
	require.True(t, errors.As(err, &pe), "error %v is not a *channels.ProviderError", err)
	return pe
}

func TestRetryBackoffIsBoundedJitter(t *testing.T) {
	p := channels.RetryPolicy{BaseDelay: 100 * time.Millisecond, MaxDelay: 400 * time.Millisecond}
	for retry, ceiling := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 10: 400 * time.Millisecond} {
		for range 50 {
			d := channels.Backoff(p, retry)
			assert.GreaterOrEqual(t, d, time.Duration(0))
			assert.Less(t, d, ceiling, "retry %d", retry)
		}
	}
}

func TestContextCancelStopsRetries(t *testing.T) {
	p := newPeer(t, nil, reply{status: 503, body: `{"code":20500,"message":"Service unavailable","status":503}`})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The wait cancels the context, as the engine's deadline would.
	retry := channels.WithSleep(channels.RetryPolicy{MaxAttempts: 10}, func(ctx context.Context, d time.Duration) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	})
	ch, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: "AC1", AuthToken: "tok", From: "+15005550006", BaseURL: p.URL, Retry: retry})
	require.NoError(t, err)
	_, err = ch.Send(ctx, testMessage())
	require.Error(t, err)
	assert.Equal(t, 1, p.count(), "no request after the context ended")
	assert.False(t, verify.IsPermanent(err))
}

func TestDeadlineTooCloseForRetry(t *testing.T) {
	p := newPeer(t, nil, reply{status: 429, header: map[string]string{"Retry-After": "2"}, body: `{"code":20429,"message":"Too Many Requests","status":429}`})
	rec := &sleepRecorder{}
	retry := channels.WithSleep(channels.RetryPolicy{MaxAttempts: 5}, rec.sleep)
	ch, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: "AC1", AuthToken: "tok", From: "+15005550006", BaseURL: p.URL, Retry: retry})
	require.NoError(t, err)
	// The provider asks for 2s but only about a second is left: give up
	// now so that the engine can move on, rather than wait for nothing.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = ch.Send(ctx, testMessage())
	require.Error(t, err)
	assert.Equal(t, 1, p.count())
	assert.Empty(t, rec.Waits())
	pe := providerError(t, err)
	assert.Equal(t, 2*time.Second, pe.RetryAfter)
	assert.Equal(t, 429, pe.StatusCode)
}

func TestRetryAfterBeyondMaxDelayIsNotRetried(t *testing.T) {
	p := newPeer(t, nil, reply{status: 429, header: map[string]string{"Retry-After": "120"}, body: `{"code":20429,"message":"Too Many Requests","status":429}`})
	retry, rec := fastRetry(3)
	ch, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: "AC1", AuthToken: "tok", From: "+15005550006", BaseURL: p.URL, Retry: retry})
	require.NoError(t, err)
	_, err = ch.Send(context.Background(), testMessage())
	require.Error(t, err)
	assert.Equal(t, 1, p.count())
	assert.Empty(t, rec.Waits())
	assert.False(t, verify.IsPermanent(err))
}

func TestProviderErrorText(t *testing.T) {
	err := &channels.ProviderError{Provider: "twilio", StatusCode: 400, Code: "21211", Message: "Invalid 'To' Phone Number", Attempts: 1}
	assert.Equal(t, "channels: twilio: status 400: code 21211: Invalid 'To' Phone Number", err.Error())
	assert.True(t, strings.HasPrefix((&channels.ProviderError{Provider: "smtp", Err: io.EOF, Attempts: 3}).Error(), "channels: smtp: EOF"))
}
