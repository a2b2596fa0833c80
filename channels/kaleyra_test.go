package channels_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
)

const (
	kaleyraSID = "HXAP16XXXXXX97IN"
	kaleyraKey = "A2f66c3daa74e66ffa590cebe1906bXXX"
	// kaleyraAccepted is the shape of the messages API's 202 answer.
	kaleyraAccepted = `{"id":"744e8e4d-b0b1-4a2a-9d2d-8e4f5b1f0c9a","type":"OTP","sender":"KLRHXA",` +
		`"body":"Your verification code is 483920. It expires in 5 minutes.","createdDateTime":"2024-05-01 10:00:00+00:00",` +
		`"totalCount":1,"data":[{"message_id":"744e8e4d-b0b1-4a2a-9d2d-8e4f5b1f0c9a:1","recipient":"+4712345678"}],"error":{}}`
	kaleyraInvalidNumber = `{"code":"E413","message":"Invalid/incorrect phone number.","data":[],` +
		`"error":{"to":"Invalid/incorrect phone number."}}`
	kaleyraUnauthorized = `{"error":{"code":"E101","error":"Unauthorized access. Invalid API key."}}`
)

func TestKaleyraSMS(t *testing.T) {
	m := testMessage()
	m.Template = "tmpl-login"
	secret := []byte("0123456789abcdef0123456789abcdef")
	p := newPeer(t, func(t *testing.T, r *http.Request, body []byte) {
		assert.Equal(t, http.MethodPost, r.Method)
		assert.Equal(t, "/v1/"+kaleyraSID+"/messages", r.URL.Path)
		assert.Equal(t, kaleyraKey, r.Header.Get("api-key"))
		assert.Equal(t, "application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
		form := parseForm(t, body)
		assertFormKeys(t, form, "to", "sender", "type", "body", "ref", "template_id", "callback")
		assert.Equal(t, "+4712345678", form.Get("to"))
		assert.Equal(t, "KLRHXA", form.Get("sender"))
		assert.Equal(t, "OTP", form.Get("type"))
		assert.Equal(t, testBody, form.Get("body"))
		assert.Equal(t, m.ID, form.Get("ref"))
		assert.Equal(t, "1707162848701603303", form.Get("template_id"))
		cb, err := url.Parse(form.Get("callback"))
		require.NoError(t, err)
		assert.Equal(t, "hooks.example.com", cb.Host)
		assert.Equal(t, m.ID, cb.Query().Get("message_id"))
		assert.NotEmpty(t, cb.Query().Get("sig"))
	}, reply{status: http.StatusAccepted, body: kaleyraAccepted})

	ch, err := channels.NewKaleyra(channels.KaleyraConfig{
		SID:            kaleyraSID,
		APIKey:         kaleyraKey,
		From:           "KLRHXA",
		TemplateID:     "1007000000000000000",
		TemplateIDs:    map[string]string{"tmpl-login": "1707162848701603303"},
		CallbackURL:    "https://hooks.example.com/kaleyra/dlr",
		CallbackSecret: secret,
		BaseURL:        p.URL,
	})
	require.NoError(t, err)
	assert.Equal(t, "sms", ch.Name())
	receipt, err := ch.Send(context.Background(), m)
	require.NoError(t, err)
	assert.Equal(t, verify.Receipt{ProviderID: "744e8e4d-b0b1-4a2a-9d2d-8e4f5b1f0c9a:1", Status: verify.DeliverySent}, receipt)
}

func TestKaleyraErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    int
		body      string
		code, msg string
	}{
		{"invalid number", http.StatusBadRequest, kaleyraInvalidNumber, "E413", "Invalid/incorrect phone number."},
		{"bad key", http.StatusUnauthorized, kaleyraUnauthorized, "E101", "Unauthorized access. Invalid API key."},
		{"not json", http.StatusForbidden, "forbidden", "", "Forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t, nil, reply{status: tc.status, body: tc.body})
			retry, rec := fastRetry(3)
			ch, err := channels.NewKaleyra(channels.KaleyraConfig{SID: kaleyraSID, APIKey: kaleyraKey, From: "KLRHXA", BaseURL: p.URL, Retry: retry})
			require.NoError(t, err)
			_, err = ch.Send(context.Background(), testMessage())
			assertNoSecrets(t, err)
			assert.True(t, verify.IsPermanent(err))
			assert.Equal(t, 1, p.count())
			assert.Empty(t, rec.Waits())
			pe := providerError(t, err)
			assert.Equal(t, tc.status, pe.StatusCode)
			assert.Equal(t, tc.code, pe.Code)
			assert.Equal(t, tc.msg, pe.Message)
		})
	}
}

func TestKaleyraRetries(t *testing.T) {
	p := newPeer(t, nil,
		reply{status: http.StatusServiceUnavailable, body: `{"code":"E503","message":"Service unavailable"}`},
		reply{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "1"}, body: `{"message":"Too many requests"}`},
		reply{status: http.StatusAccepted, body: kaleyraAccepted},
	)
	retry, rec := fastRetry(3)
	ch, err := channels.NewKaleyra(channels.KaleyraConfig{SID: kaleyraSID, APIKey: kaleyraKey, From: "KLRHXA", BaseURL: p.URL, Retry: retry})
	require.NoError(t, err)
	_, err = ch.Send(context.Background(), testMessage())
	require.NoError(t, err)
	assert.Equal(t, 3, p.count())
	waits := rec.Waits()
	require.Len(t, waits, 2)
	assert.GreaterOrEqual(t, waits[1].Seconds(), 1.0, "Retry-After honoured")
}

func TestKaleyraConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg  channels.KaleyraConfig
		want string
	}{
		{channels.KaleyraConfig{}, "SID"},
		{channels.KaleyraConfig{SID: kaleyraSID}, "APIKey"},
		{channels.KaleyraConfig{SID: kaleyraSID, APIKey: "k", CallbackSecret: []byte("0123456789abcdef")}, "CallbackURL"},
		{channels.KaleyraConfig{SID: kaleyraSID, APIKey: "k", CallbackURL: "https://x.example/dlr", CallbackSecret: []byte("short")}, "CallbackSecret"},
	} {
		_, err := channels.NewKaleyra(tc.cfg)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestParseKaleyraDLR(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	m := testMessage()
	cb, err := channels.KaleyraCallbackURL("https://hooks.example.com/kaleyra/dlr", m.ID, secret)
	require.NoError(t, err)

	t.Run("POST JSON from a callback profile", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, cb, strings.NewReader(`{"id":"744e8e4d-b0b1-4a2a-9d2d-8e4f5b1f0c9a",`+
			`"recipient":"+4712345678","status":"DELIVRD","status_trace":"DELIVRD","description":"Message delivered",`+
			`"timestamp":"2024-05-01 10:00:07"}`))
		r.Header.Set("Content-Type", "application/json")
		id, status, detail, err := channels.ParseKaleyraDLR(r, secret)
		require.NoError(t, err)
		assert.Equal(t, m.ID, id)
		assert.Equal(t, verify.DeliveryDelivered, status)
		assert.Equal(t, "DELIVRD; Message delivered", detail)
	})
	t.Run("GET with query fields", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, cb+"&status=Undelivered&status_trace=INVALID-SUB", nil)
		_, status, detail, err := channels.ParseKaleyraDLR(r, secret)
		require.NoError(t, err)
		assert.Equal(t, verify.DeliveryFailed, status)
		assert.Equal(t, "Undelivered; INVALID-SUB", detail)
	})
	t.Run("POST form", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, cb, strings.NewReader("status=SENT&id=744e"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		_, status, _, err := channels.ParseKaleyraDLR(r, secret)
		require.NoError(t, err)
		assert.Equal(t, verify.DeliverySent, status)
	})
	t.Run("ref without our query parameter", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "https://hooks.example.com/kaleyra/dlr", strings.NewReader(`{"ref":"v-9","status":"Failed"}`))
		r.Header.Set("Content-Type", "application/json")
		id, status, _, err := channels.ParseKaleyraDLR(r, nil)
		require.NoError(t, err)
		assert.Equal(t, "v-9", id)
		assert.Equal(t, verify.DeliveryFailed, status)
	})
	t.Run("forged message ID", func(t *testing.T) {
		forged := strings.Replace(cb, url.QueryEscape(m.ID), "someone-else-0", 1)
		r := httptest.NewRequest(http.MethodGet, forged+"&status=DELIVRD", nil)
		_, _, _, err := channels.ParseKaleyraDLR(r, secret)
		assert.True(t, errors.Is(err, channels.ErrInvalidSignature), "%v", err)
	})
	t.Run("missing signature", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "https://hooks.example.com/kaleyra/dlr?message_id=x&status=DELIVRD", nil)
		_, _, _, err := channels.ParseKaleyraDLR(r, secret)
		assert.True(t, errors.Is(err, channels.ErrInvalidSignature), "%v", err)
	})
	t.Run("no status", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, cb, nil)
		_, _, _, err := channels.ParseKaleyraDLR(r, secret)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "status")
	})
}
