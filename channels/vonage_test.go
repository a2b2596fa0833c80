package channels_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
)

const (
	// vonageOK is the shape of the SMS API's documented success answer.
	vonageOK = `{"message-count":"1","messages":[{"to":"4712345678","message-id":"0A0000000123ABCD1",` +
		`"status":"0","remaining-balance":"3.14159265","message-price":"0.03330000","network":"12345",` +
		`"client-ref":"7f1c2b9e-1d2a-4c57-9a51-3f0f7d6c2e11-0"}]}`
	vonageThrottled  = `{"message-count":"1","messages":[{"status":"1","error-text":"Throttled"}]}`
	vonageInvalidMsg = `{"message-count":"1","messages":[{"status":"6","error-text":"Invalid Message"}]}`
	vonageBadCreds   = `{"message-count":"1","messages":[{"status":"4","error-text":"Bad Credentials"}]}`
)

func newVonage(t *testing.T, url string, retry channels.RetryPolicy) *channels.Vonage {
	t.Helper()
	ch, err := channels.NewVonage(channels.VonageConfig{
		APIKey: "abcd1234", APISecret: "s3cr3tpass", From: "AcmeInc", BaseURL: url, Retry: retry,
	})
	require.NoError(t, err)
	return ch
}

func TestVonageSMS(t *testing.T) {
	m := testMessage()
	p := newPeer(t, func(t *testing.T, r *http.Request, body []byte) {
		assert.Equal(t, http.MethodPost, r.Method)
		assert.Equal(t, "/sms/json", r.URL.Path)
		assert.Equal(t, "application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
		form := parseForm(t, body)
		assertFormKeys(t, form, "api_key", "api_secret", "from", "to", "text", "client-ref")
		assert.Equal(t, "abcd1234", form.Get("api_key"))
		assert.Equal(t, "s3cr3tpass", form.Get("api_secret"))
		assert.Equal(t, "AcmeInc", form.Get("from"))
		assert.Equal(t, "4712345678", form.Get("to"), "E.164 without the plus")
		assert.Equal(t, testBody, form.Get("text"))
		assert.Equal(t, m.ID, form.Get("client-ref"))
	}, reply{status: http.StatusOK, body: vonageOK})

	ch := newVonage(t, p.URL, channels.RetryPolicy{})
	assert.Equal(t, "sms", ch.Name())
	receipt, err := ch.Send(context.Background(), m)
	require.NoError(t, err)
	assert.Equal(t, verify.Receipt{ProviderID: "0A0000000123ABCD1", Status: verify.DeliverySent}, receipt)
}

func TestVonageUnicodeAndCallback(t *testing.T) {
	m := testMessage()
	m.Body = "رمز التحقق الخاص بك هو 483920"
	m.From = "+15557122661"
	p := newPeer(t, func(t *testing.T, r *http.Request, body []byte) {
		form := parseForm(t, body)
		assertFormKeys(t, form, "api_key", "api_secret", "from", "to", "text", "client-ref", "type", "callback")
		assert.Equal(t, "unicode", form.Get("type"))
		assert.Equal(t, "15557122661", form.Get("from"), "the step's sender wins")
		assert.Equal(t, "https://hooks.example.com/vonage/dlr", form.Get("callback"))
	}, reply{status: http.StatusOK, body: vonageOK})
	ch, err := channels.NewVonage(channels.VonageConfig{
		APIKey: "abcd1234", APISecret: "s3cr3tpass", From: "AcmeInc",
		CallbackURL: "https://hooks.example.com/vonage/dlr", BaseURL: p.URL,
	})
	require.NoError(t, err)
	_, err = ch.Send(context.Background(), m)
	require.NoError(t, err)
}

func TestVonageGSM7(t *testing.T) {
	assert.True(t, channels.IsGSM7("Votre code: 123456. Ça expire à 10h"))
	assert.True(t, channels.IsGSM7("Code: 1234 {€} [ok] ~ ^"))
	assert.False(t, channels.IsGSM7("Código: 1234"), "ó is not in the GSM alphabet")
	assert.False(t, channels.IsGSM7("验证码 1234"))
	assert.False(t, channels.IsGSM7("Kod: 1234 ş"))
}

func TestVonageStatusErrorsArePermanent(t *testing.T) {
	for body, code := range map[string]string{vonageInvalidMsg: "6", vonageBadCreds: "4"} {
		p := newPeer(t, nil, reply{status: http.StatusOK, body: body})
		retry, rec := fastRetry(3)
		_, err := newVonage(t, p.URL, retry).Send(context.Background(), testMessage())
		assertNoSecrets(t, err)
		assert.True(t, verify.IsPermanent(err), "status %s", code)
		assert.Equal(t, 1, p.count(), "status %s is not retried", code)
		assert.Empty(t, rec.Waits())
		pe := providerError(t, err)
		assert.Equal(t, code, pe.Code)
		assert.Equal(t, "vonage", pe.Provider)
	}
}

func TestVonageRetriesThrottling(t *testing.T) {
	p := newPeer(t, nil,
		reply{status: http.StatusOK, body: vonageThrottled},
		reply{status: http.StatusServiceUnavailable, body: ""},
		reply{status: http.StatusOK, body: vonageOK},
	)
	retry, rec := fastRetry(3)
	receipt, err := newVonage(t, p.URL, retry).Send(context.Background(), testMessage())
	require.NoError(t, err)
	assert.Equal(t, "0A0000000123ABCD1", receipt.ProviderID)
	assert.Equal(t, 3, p.count())
	assert.Len(t, rec.Waits(), 2)
}

func TestVonageThrottledUntilGivingUp(t *testing.T) {
	p := newPeer(t, nil, reply{status: http.StatusOK, body: vonageThrottled})
	retry, _ := fastRetry(2)
	_, err := newVonage(t, p.URL, retry).Send(context.Background(), testMessage())
	require.Error(t, err)
	assert.False(t, verify.IsPermanent(err))
	assert.Equal(t, 2, p.count())
	assert.Equal(t, "1", providerError(t, err).Code)
}

func TestVonageConfigValidation(t *testing.T) {
	_, err := channels.NewVonage(channels.VonageConfig{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "APIKey")
	_, err = channels.NewVonage(channels.VonageConfig{APIKey: "k"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "APISecret")
	_, err = channels.NewVonage(channels.VonageConfig{APIKey: "k", APISecret: "s", CallbackURL: "not a url"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "CallbackURL")

	ch, err := channels.NewVonage(channels.VonageConfig{APIKey: "k", APISecret: "s"})
	require.NoError(t, err)
	_, err = ch.Send(context.Background(), testMessage())
	assert.True(t, verify.IsPermanent(err), "no sender")
}
