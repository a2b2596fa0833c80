package channels_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/memstore"
)

func newEngine(t *testing.T, chs ...verify.Channel) *verify.Engine {
	t.Helper()
	eng, err := verify.New(memstore.New(),
		verify.WithChannels(chs...),
		verify.WithSecret([]byte("engine-secret-0123456789abcdef!!")),
		verify.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	)
	require.NoError(t, err)
	return eng
}

// A permanent Twilio error makes the engine fall back to email at once;
// the code that arrives by email is the one Check accepts.
func TestEngineFallsBackFromTwilioToSMTP(t *testing.T) {
	twilio := newPeer(t, nil, reply{status: http.StatusBadRequest, body: twilioInvalidTo})
	sms, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken, From: "+15557122661", BaseURL: twilio.URL})
	require.NoError(t, err)
	ms := startMailServer(t, serverPlain, nil)
	email := newSMTP(t, ms, channels.SMTPConfig{Security: channels.SMTPPlain})

	eng := newEngine(t, sms, email)
	ctx := context.Background()
	_, err = eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{
		{Channel: "sms"},
		{Channel: "email", After: time.Minute},
	}})
	require.NoError(t, err)

	v, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"}})
	require.NoError(t, err)
	assert.Equal(t, 1, twilio.count(), "the invalid number is not retried")
	require.Len(t, v.Deliveries, 2)
	assert.Equal(t, verify.DeliveryFailed, v.Deliveries[0].Status)
	assert.Contains(t, v.Deliveries[0].Error, "21211")
	assert.Equal(t, verify.DeliverySent, v.Deliveries[1].Status)

	got := ms.received()
	require.Len(t, got, 1)
	code := regexp.MustCompile(`\b\d{6}\b`).FindString(parseMail(t, got[0].data).parts["text/plain"])
	require.NotEmpty(t, code)
	_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
	assert.NoError(t, err)
}

// A Twilio status callback, parsed and reported, marks the verification
// delivered.
func TestEngineTwilioDeliveryReport(t *testing.T) {
	forms := make(chan url.Values, 1)
	twilio := newPeer(t, func(t *testing.T, r *http.Request, body []byte) { forms <- parseForm(t, body) },
		reply{status: http.StatusCreated, body: twilioCreated})
	sms, err := channels.NewTwilio(channels.TwilioConfig{
		AccountSID: twilioSID, AuthToken: twilioToken, From: "+15557122661",
		StatusCallbackURL: callbackURL, BaseURL: twilio.URL,
	})
	require.NoError(t, err)
	eng := newEngine(t, sms)
	ctx := context.Background()
	_, err = eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	v, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345678"}})
	require.NoError(t, err)
	require.Equal(t, 1, twilio.count())

	// Twilio calls the StatusCallback it was given.
	sent := <-forms
	r := statusCallback(t, sent.Get("StatusCallback"), deliveredForm(), sign)
	messageID, status, detail, err := channels.ParseTwilioStatusCallback(r, twilioToken, callbackURL)
	require.NoError(t, err)
	assert.Equal(t, v.Deliveries[0].ID, messageID)
	require.NoError(t, eng.ReportDelivery(ctx, messageID, status, detail))

	v, err = eng.Get(ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusDelivered, v.Status)
	assert.Equal(t, "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", v.Deliveries[0].ProviderID)
}

// Twilio answers 503 three times: the channel retries (the waits are
// recorded, not slept), gives up, and the engine sends the email step at
// once; the code that arrives over SMTP checks out.
func TestEngineTwilioOutageFailsOverToSMTP(t *testing.T) {
	unavailable := reply{status: http.StatusServiceUnavailable, body: `{"code":20500,"message":"Internal Server Error","more_info":"https://www.twilio.com/docs/errors/20500","status":503}`}
	twilio := newPeer(t, nil, unavailable, unavailable, unavailable)
	var waits []time.Duration
	retry := channels.WithSleep(channels.RetryPolicy{MaxAttempts: 3}, func(_ context.Context, d time.Duration) error {
		waits = append(waits, d)
		return nil
	})
	sms, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken,
		From: "+15557122661", BaseURL: twilio.URL, Retry: retry})
	require.NoError(t, err)
	ms := startMailServer(t, serverPlain, nil)
	email := newSMTP(t, ms, channels.SMTPConfig{Security: channels.SMTPPlain})
	eng := newEngine(t, sms, email)
	ctx := context.Background()
	_, err = eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{
		{Channel: "sms"},
		{Channel: "email", After: 2 * time.Minute},
	}})
	require.NoError(t, err)

	v, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"}})
	require.NoError(t, err)
	assert.Equal(t, 3, twilio.count(), "three attempts, then the channel gives up")
	assert.Len(t, waits, 2, "two backoffs between the three attempts")
	require.Len(t, v.Deliveries, 2)
	assert.Equal(t, verify.DeliveryFailed, v.Deliveries[0].Status)
	assert.Equal(t, verify.DeliverySent, v.Deliveries[1].Status, "email at once, not after two minutes")

	got := ms.received()
	require.Len(t, got, 1)
	code := regexp.MustCompile(`\b\d{6}\b`).FindString(parseMail(t, got[0].data).parts["text/plain"])
	require.NotEmpty(t, code)
	_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
	require.NoError(t, err)
}

// An "undelivered" Twilio status callback sends the next step at once.
func TestEngineTwilioUndeliveredReceiptSendsNextStep(t *testing.T) {
	forms := make(chan url.Values, 1)
	twilio := newPeer(t, func(t *testing.T, r *http.Request, body []byte) { forms <- parseForm(t, body) },
		reply{status: http.StatusCreated, body: twilioCreated})
	sms, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken,
		From: "+15557122661", StatusCallbackURL: callbackURL, BaseURL: twilio.URL})
	require.NoError(t, err)
	ms := startMailServer(t, serverPlain, nil)
	email := newSMTP(t, ms, channels.SMTPConfig{Security: channels.SMTPPlain})
	eng := newEngine(t, sms, email)
	ctx := context.Background()
	_, err = eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{
		{Channel: "sms"},
		{Channel: "email", After: 4 * time.Minute},
	}})
	require.NoError(t, err)
	v, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"}})
	require.NoError(t, err)
	assert.Empty(t, ms.received(), "the email step waits for its interval")

	form := deliveredForm()
	form.Set("MessageStatus", "undelivered")
	form.Set("ErrorCode", "30003")
	r := statusCallback(t, (<-forms).Get("StatusCallback"), form, sign)
	messageID, status, detail, err := channels.ParseTwilioStatusCallback(r, twilioToken, callbackURL)
	require.NoError(t, err)
	require.NoError(t, eng.ReportDelivery(ctx, messageID, status, detail))

	require.Len(t, ms.received(), 1, "the receipt sent the email step immediately")
	v, err = eng.Get(ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, "undelivered; error 30003", v.Deliveries[0].Error)
	assert.Equal(t, "email", v.Deliveries[1].Channel)
}
