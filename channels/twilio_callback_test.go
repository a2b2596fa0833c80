package channels_test

import (
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

// TestTwilioSignatureDocumentedVector checks the signature against the
// example in Twilio's security documentation (auth token 12345).
func TestTwilioSignatureDocumentedVector(t *testing.T) {
	params := url.Values{
		"CallSid": {"CA1234567890ABCDE"},
		"Caller":  {"+12349013030"},
		"Digits":  {"1234"},
		"From":    {"+12349013030"},
		"To":      {"+18005551212"},
	}
	got := channels.TwilioSignature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params)
	assert.Equal(t, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", got)
}

const callbackURL = "https://hooks.example.com/twilio/status"

// statusCallback builds the request Twilio would send for a message.
func statusCallback(t *testing.T, target string, form url.Values, sign func(fullURL string, form url.Values) string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if sign != nil {
		r.Header.Set("X-Twilio-Signature", sign(target, form))
	}
	return r
}

func deliveredForm() url.Values {
	return url.Values{
		"AccountSid":    {twilioSID},
		"ApiVersion":    {"2010-04-01"},
		"From":          {"+15557122661"},
		"MessageSid":    {"SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"},
		"MessageStatus": {"delivered"},
		"SmsSid":        {"SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"},
		"SmsStatus":     {"delivered"},
		"To":            {"+4712345678"},
	}
}

func sign(fullURL string, form url.Values) string {
	return channels.TwilioSignature(twilioToken, fullURL, form)
}

func TestParseTwilioStatusCallback(t *testing.T) {
	m := testMessage()
	target := callbackURL + "?message_id=" + url.QueryEscape(m.ID)
	r := statusCallback(t, target, deliveredForm(), sign)

	id, status, detail, err := channels.ParseTwilioStatusCallback(r, twilioToken, callbackURL)
	require.NoError(t, err)
	assert.Equal(t, m.ID, id)
	assert.Equal(t, verify.DeliveryDelivered, status)
	assert.Equal(t, "delivered", detail)

	// Without publicURL the URL is rebuilt from the request.
	r = statusCallback(t, target, deliveredForm(), sign)
	id, _, _, err = channels.ParseTwilioStatusCallback(r, twilioToken, "")
	require.NoError(t, err)
	assert.Equal(t, m.ID, id)
}

func TestParseTwilioStatusCallbackFailedWithErrorCode(t *testing.T) {
	form := deliveredForm()
	form.Set("MessageStatus", "undelivered")
	form.Set("ErrorCode", "30003")
	target := callbackURL + "?message_id=v-1"
	_, status, detail, err := channels.ParseTwilioStatusCallback(statusCallback(t, target, form, sign), twilioToken, callbackURL)
	require.NoError(t, err)
	assert.Equal(t, verify.DeliveryFailed, status)
	assert.Equal(t, "undelivered; error 30003", detail)
}

func TestParseTwilioStatusCallbackCall(t *testing.T) {
	for callStatus, want := range map[string]verify.DeliveryStatus{
		"completed": verify.DeliveryDelivered, "in-progress": verify.DeliveryDelivered,
		"busy": verify.DeliveryFailed, "no-answer": verify.DeliveryFailed, "failed": verify.DeliveryFailed,
		"canceled": verify.DeliveryFailed, "ringing": verify.DeliverySent, "queued": verify.DeliverySent,
	} {
		form := url.Values{"AccountSid": {twilioSID}, "CallSid": {"CA1"}, "CallStatus": {callStatus}, "To": {"+4712345678"}}
		target := callbackURL + "?message_id=v-1"
		_, status, _, err := channels.ParseTwilioStatusCallback(statusCallback(t, target, form, sign), twilioToken, callbackURL)
		require.NoError(t, err)
		assert.Equal(t, want, status, callStatus)
	}
	for msgStatus, want := range map[string]verify.DeliveryStatus{
		"queued": verify.DeliverySent, "sent": verify.DeliverySent, "read": verify.DeliveryDelivered,
		"failed": verify.DeliveryFailed, "canceled": verify.DeliveryFailed, "accepted": verify.DeliverySent,
	} {
		form := deliveredForm()
		form.Set("MessageStatus", msgStatus)
		target := callbackURL + "?message_id=v-1"
		_, status, _, err := channels.ParseTwilioStatusCallback(statusCallback(t, target, form, sign), twilioToken, callbackURL)
		require.NoError(t, err)
		assert.Equal(t, want, status, msgStatus)
	}
}

func TestParseTwilioStatusCallbackRejectsTampering(t *testing.T) {
	target := callbackURL + "?message_id=v-1"

	// Signed, then the status is changed in transit.
	form := deliveredForm()
	sig := sign(target, form)
	form.Set("MessageStatus", "failed")
	r := statusCallback(t, target, form, nil)
	r.Header.Set("X-Twilio-Signature", sig)
	_, _, _, err := channels.ParseTwilioStatusCallback(r, twilioToken, callbackURL)
	assert.True(t, errors.Is(err, channels.ErrInvalidSignature), "tampered body: %v", err)

	// Signed, then pointed at another message.
	form = deliveredForm()
	r = statusCallback(t, callbackURL+"?message_id=v-2", form, nil)
	r.Header.Set("X-Twilio-Signature", sign(target, form))
	_, _, _, err = channels.ParseTwilioStatusCallback(r, twilioToken, callbackURL)
	assert.True(t, errors.Is(err, channels.ErrInvalidSignature), "tampered URL: %v", err)

	// Signed with another token.
	r = statusCallback(t, target, deliveredForm(), func(u string, f url.Values) string {
		return channels.TwilioSignature("another-token", u, f)
	})
	_, _, _, err = channels.ParseTwilioStatusCallback(r, twilioToken, callbackURL)
	assert.True(t, errors.Is(err, channels.ErrInvalidSignature), "wrong token: %v", err)

	// Not signed at all.
	_, _, _, err = channels.ParseTwilioStatusCallback(statusCallback(t, target, deliveredForm(), nil), twilioToken, callbackURL)
	assert.True(t, errors.Is(err, channels.ErrInvalidSignature), "unsigned: %v", err)
}

func TestParseTwilioStatusCallbackPortVariants(t *testing.T) {
	// Twilio may sign the URL with the default port spelled out.
	target := callbackURL + "?message_id=v-1"
	r := statusCallback(t, target, deliveredForm(), func(_ string, f url.Values) string {
		return sign("https://hooks.example.com:443/twilio/status?message_id=v-1", f)
	})
	id, _, _, err := channels.ParseTwilioStatusCallback(r, twilioToken, callbackURL)
	require.NoError(t, err)
	assert.Equal(t, "v-1", id)
}

func TestParseTwilioStatusCallbackNeedsMessageID(t *testing.T) {
	r := statusCallback(t, callbackURL, deliveredForm(), sign)
	_, _, _, err := channels.ParseTwilioStatusCallback(r, twilioToken, callbackURL)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "message_id")
}
