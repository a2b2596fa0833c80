package channels_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
)

var webhookSecret = []byte("whsec-0123456789abcdef0123456789")

// gateway checks a webhook request the way a receiver should.
func gateway(t *testing.T, r *http.Request, body []byte) {
	t.Helper()
	assert.Equal(t, http.MethodPost, r.Method)
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	assert.Equal(t, testMessage().ID, r.Header.Get("Idempotency-Key"))
	assert.Equal(t, "Bearer gw-token", r.Header.Get("Authorization"))
	err := channels.VerifyWebhookSignature(webhookSecret, r.Header.Get(channels.WebhookSignatureHeader), body, time.Now(), 5*time.Minute)
	assert.NoError(t, err, "signature")
}

func TestWebhookSendsSignedPayload(t *testing.T) {
	m := testMessage()
	m.Channel = "viber"
	m.From = "Acme"
	payloads := make(chan channels.WebhookPayload, 1)
	p := newPeer(t, func(t *testing.T, r *http.Request, body []byte) {
		gateway(t, r, body)
		var raw map[string]any
		require.NoError(t, json.Unmarshal(body, &raw))
		for _, k := range []string{"id", "verification_id", "channel", "step", "to", "from", "code", "body", "language", "expires_at"} {
			assert.Contains(t, raw, k)
		}
		var got channels.WebhookPayload
		assert.NoError(t, json.Unmarshal(body, &got))
		payloads <- got
	}, reply{status: http.StatusAccepted, body: `{"id":"gw-42","status":"delivered"}`})

	ch, err := channels.NewWebhook(channels.WebhookConfig{
		Name:   "viber",
		URL:    p.URL + "/send",
		Secret: webhookSecret,
		Header: http.Header{"Authorization": {"Bearer gw-token"}},
	})
	require.NoError(t, err)
	assert.Equal(t, "viber", ch.Name())
	assert.Equal(t, verify.ByPhone, ch.Addressing())
	receipt, err := ch.Send(context.Background(), m)
	require.NoError(t, err)
	assert.Equal(t, verify.Receipt{ProviderID: "gw-42", Status: verify.DeliveryDelivered}, receipt)

	got := <-payloads
	assert.Equal(t, m.ID, got.ID)
	assert.Equal(t, m.VerificationID, got.VerificationID)
	assert.Equal(t, "viber", got.Channel)
	assert.Equal(t, "+4712345678", got.To)
	assert.Equal(t, "Acme", got.From)
	assert.Equal(t, testCode, got.Code)
	assert.Equal(t, testBody, got.Body)
	assert.Equal(t, "en", got.Language)
	assert.True(t, m.ExpiresAt.Equal(got.ExpiresAt))
	assert.NotContains(t, got.String(), testCode)
	assert.NotContains(t, fmt.Sprintf("%v %+v %#v", got, got, got), testCode)
}

func TestWebhookByEmail(t *testing.T) {
	p := newPeer(t, func(t *testing.T, r *http.Request, body []byte) {
		var got channels.WebhookPayload
		require.NoError(t, json.Unmarshal(body, &got))
		assert.Equal(t, "ana@example.com", got.To)
	}, reply{status: http.StatusOK, body: ``})
	ch, err := channels.NewWebhook(channels.WebhookConfig{Name: "email", URL: p.URL, Secret: webhookSecret, Addressing: verify.ByEmail})
	require.NoError(t, err)
	assert.Equal(t, verify.ByEmail, ch.Addressing())
	receipt, err := ch.Send(context.Background(), testMessage())
	require.NoError(t, err)
	assert.Equal(t, verify.Receipt{Status: verify.DeliverySent}, receipt)
}

func TestWebhookRejectionIsPermanent(t *testing.T) {
	p := newPeer(t, nil, reply{status: http.StatusUnprocessableEntity, body: `{"code":"invalid_number","message":"number is not on Viber"}`})
	retry, rec := fastRetry(3)
	ch, err := channels.NewWebhook(channels.WebhookConfig{URL: p.URL, Secret: webhookSecret, Retry: retry})
	require.NoError(t, err)
	_, err = ch.Send(context.Background(), testMessage())
	assertNoSecrets(t, err)
	assert.True(t, verify.IsPermanent(err))
	assert.Equal(t, 1, p.count())
	assert.Empty(t, rec.Waits())
	pe := providerError(t, err)
	assert.Equal(t, "invalid_number", pe.Code)
	assert.Equal(t, "number is not on Viber", pe.Message)
}

func TestWebhookErrorEchoingTheCodeIsRedacted(t *testing.T) {
	// A careless gateway echoes the payload in its error; the error the
	// channel returns must still not carry the code or the body.
	p := newPeer(t, nil, reply{status: http.StatusBadRequest, body: `{"error":"cannot send '` + testBody + `' (code ` + testCode + `)"}`})
	ch, err := channels.NewWebhook(channels.WebhookConfig{URL: p.URL, Secret: webhookSecret})
	require.NoError(t, err)
	_, err = ch.Send(context.Background(), testMessage())
	assertNoSecrets(t, err)
}

func TestWebhookRetries(t *testing.T) {
	p := newPeer(t, gateway,
		reply{status: http.StatusServiceUnavailable},
		reply{status: http.StatusServiceUnavailable},
		reply{status: http.StatusOK, body: `{"id":"gw-7"}`},
	)
	retry, rec := fastRetry(3)
	ch, err := channels.NewWebhook(channels.WebhookConfig{URL: p.URL, Secret: webhookSecret, Retry: retry,
		Header: http.Header{"Authorization": {"Bearer gw-token"}}})
	require.NoError(t, err)
	receipt, err := ch.Send(context.Background(), testMessage())
	require.NoError(t, err)
	assert.Equal(t, "gw-7", receipt.ProviderID)
	assert.Equal(t, verify.DeliverySent, receipt.Status)
	assert.Equal(t, 3, p.count())
	assert.Len(t, rec.Waits(), 2)
}

func TestVerifyWebhookSignature(t *testing.T) {
	body := []byte(`{"id":"v-1","code":"483920"}`)
	now := time.Unix(1_700_000_000, 0)
	header := channels.SignWebhook(webhookSecret, body, now)
	assert.Regexp(t, `^t=1700000000,v1=[0-9a-f]{64}$`, header)

	assert.NoError(t, channels.VerifyWebhookSignature(webhookSecret, header, body, now.Add(time.Minute), 5*time.Minute))

	for name, err := range map[string]error{
		"tampered body": channels.VerifyWebhookSignature(webhookSecret, header, []byte(`{"id":"v-1","code":"000000"}`), now, 5*time.Minute),
		"wrong secret":  channels.VerifyWebhookSignature([]byte("another-secret-0123456789"), header, body, now, 5*time.Minute),
		"stale":         channels.VerifyWebhookSignature(webhookSecret, header, body, now.Add(6*time.Minute), 5*time.Minute),
		"future":        channels.VerifyWebhookSignature(webhookSecret, header, body, now.Add(-6*time.Minute), 5*time.Minute),
		"no header":     channels.VerifyWebhookSignature(webhookSecret, "", body, now, 5*time.Minute),
		"no v1":         channels.VerifyWebhookSignature(webhookSecret, "t=1700000000", body, now, 5*time.Minute),
		"bad timestamp": channels.VerifyWebhookSignature(webhookSecret, "t=soon,v1=00", body, now, 5*time.Minute),
		"no secret":     channels.VerifyWebhookSignature(nil, header, body, now, 5*time.Minute),
	} {
		assert.True(t, errors.Is(err, channels.ErrInvalidSignature), "%s: %v", name, err)
	}

	// During a secret rotation the header may carry several signatures.
	old := []byte("old-secret-0123456789abcdef")
	rotated := channels.SignWebhook(old, body, now) + "," + header[len("t=1700000000,"):]
	assert.NoError(t, channels.VerifyWebhookSignature(webhookSecret, rotated, body, now, 5*time.Minute))
	assert.NoError(t, channels.VerifyWebhookSignature(old, rotated, body, now, 5*time.Minute))
}

func TestWebhookConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg  channels.WebhookConfig
		want string
	}{
		{channels.WebhookConfig{}, "URL"},
		{channels.WebhookConfig{URL: "gateway.local/send"}, "URL"},
		{channels.WebhookConfig{URL: "https://gw.example/send"}, "Secret"},
		{channels.WebhookConfig{URL: "https://gw.example/send", Secret: []byte("short")}, "Secret"},
		{channels.WebhookConfig{URL: "https://gw.example/send", Secret: webhookSecret, Addressing: 9}, "Addressing"},
	} {
		_, err := channels.NewWebhook(tc.cfg)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
		assert.Contains(t, err.Error(), "channels: webhook: ")
	}
}
