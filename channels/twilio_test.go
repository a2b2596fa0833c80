package channels_test

import (
	"context"
	"encoding/xml"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
)

const (
	twilioSID   = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
	twilioToken = "your_auth_token"
	// twilioCreated is the shape of Twilio's documented 201 answer to a
	// Message create (abridged).
	twilioCreated = `{"account_sid":"ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","api_version":"2010-04-01",` +
		`"body":"Your verification code is 483920. It expires in 5 minutes.","date_created":"Thu, 24 Aug 2023 05:01:45 +0000",` +
		`"direction":"outbound-api","error_code":null,"error_message":null,"from":"+15557122661",` +
		`"messaging_service_sid":null,"num_media":"0","num_segments":"1","price":null,"price_unit":"USD",` +
		`"sid":"SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","status":"queued","to":"+4712345678",` +
		`"uri":"/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Messages/SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX.json"}`
	// twilioCallCreated is the shape of the 201 answer to a Call create.
	twilioCallCreated = `{"account_sid":"ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","direction":"outbound-api",` +
		`"from":"+15557122661","sid":"CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","status":"queued","to":"+4712345678"}`
	// twilioInvalidTo is Twilio's documented error body for error 21211.
	twilioInvalidTo = `{"code":21211,"message":"The 'To' number +4712 is not a valid phone number.",` +
		`"more_info":"https://www.twilio.com/docs/errors/21211","status":400}`
	twilioUnavailable = `{"code":20500,"message":"An internal server error has occurred","more_info":"https://www.twilio.com/docs/errors/20500","status":503}`
)

// checkTwilioRequest checks what every Twilio request must look like.
func checkTwilioRequest(t *testing.T, r *http.Request, resource, user, pass string) {
	t.Helper()
	assert.Equal(t, http.MethodPost, r.Method)
	assert.Equal(t, "/2010-04-01/Accounts/"+twilioSID+"/"+resource, r.URL.Path)
	gotUser, gotPass, ok := r.BasicAuth()
	assert.True(t, ok, "Basic auth")
	assert.Equal(t, user, gotUser)
	assert.Equal(t, pass, gotPass)
	assert.Equal(t, "application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
	assert.Equal(t, testMessage().ID, r.Header.Get("I-Twilio-Idempotency-Token"))
}

func TestTwilioSMS(t *testing.T) {
	m := testMessage()
	p := newPeer(t, func(t *testing.T, r *http.Request, body []byte) {
		checkTwilioRequest(t, r, "Messages.json", twilioSID, twilioToken)
		form := parseForm(t, body)
		assertFormKeys(t, form, "To", "From", "Body", "StatusCallback", "ValidityPeriod")
		assert.Equal(t, "+4712345678", form.Get("To"))
		assert.Equal(t, "+15557122661", form.Get("From"))
		assert.Equal(t, testBody, form.Get("Body"))
		assert.Equal(t, "https://hooks.example.com/twilio/status?message_id="+url.QueryEscape(m.ID), form.Get("StatusCallback"))
		vp, err := strconv.Atoi(form.Get("ValidityPeriod"))
		assert.NoError(t, err)
		assert.True(t, vp > 0 && vp <= 300, "ValidityPeriod %d is the code's remaining lifetime", vp)
	}, reply{status: http.StatusCreated, body: twilioCreated})

	ch, err := channels.NewTwilio(channels.TwilioConfig{
		AccountSID:        twilioSID,
		AuthToken:         twilioToken,
		From:              "+15557122661",
		StatusCallbackURL: "https://hooks.example.com/twilio/status",
		BaseURL:           p.URL,
	})
	require.NoError(t, err)
	assert.Equal(t, "sms", ch.Name())
	receipt, err := ch.Send(context.Background(), m)
	require.NoError(t, err)
	assert.Equal(t, verify.Receipt{ProviderID: "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", Status: verify.DeliverySent}, receipt)
	assert.Equal(t, 1, p.count())
}

func TestTwilioWhatsAppUsesStepSenderAndAPIKey(t *testing.T) {
	m := testMessage()
	m.From = "+15550001111"
	p := newPeer(t, func(t *testing.T, r *http.Request, body []byte) {
		checkTwilioRequest(t, r, "Messages.json", "SKXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "key-secret")
		form := parseForm(t, body)
		assertFormKeys(t, form, "To", "From", "Body", "ValidityPeriod")
		assert.Equal(t, "whatsapp:+4712345678", form.Get("To"))
		assert.Equal(t, "whatsapp:+15550001111", form.Get("From"))
	}, reply{status: http.StatusCreated, body: twilioCreated})

	ch, err := channels.NewTwilio(channels.TwilioConfig{
		Kind:         channels.TwilioWhatsApp,
		AccountSID:   twilioSID,
		APIKeySID:    "SKXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
		APIKeySecret: "key-secret",
		From:         "whatsapp:+15557122661",
		BaseURL:      p.URL,
	})
	require.NoError(t, err)
	assert.Equal(t, "whatsapp", ch.Name())
	_, err = ch.Send(context.Background(), m)
	require.NoError(t, err)
}

func TestTwilioMessagingService(t *testing.T) {
	p := newPeer(t, func(t *testing.T, r *http.Request, body []byte) {
		form := parseForm(t, body)
		assertFormKeys(t, form, "To", "MessagingServiceSid", "Body", "ValidityPeriod")
		assert.Equal(t, "MGXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", form.Get("MessagingServiceSid"))
	}, reply{status: http.StatusCreated, body: twilioCreated})
	ch, err := channels.NewTwilio(channels.TwilioConfig{
		AccountSID: twilioSID, AuthToken: twilioToken,
		MessagingServiceSID: "MGXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", BaseURL: p.URL,
	})
	require.NoError(t, err)
	_, err = ch.Send(context.Background(), testMessage())
	require.NoError(t, err)
}

// twiml is the part of TwiML the voice test reads back.
type twiml struct {
	XMLName xml.Name `xml:"Response"`
	Says    []struct {
		Language string `xml:"language,attr"`
		Voice    string `xml:"voice,attr"`
		Text     string `xml:",chardata"`
	} `xml:"Say"`
	Pauses []struct {
		Length string `xml:"length,attr"`
	} `xml:"Pause"`
}

func TestTwilioVoiceReadsCodeDigitByDigit(t *testing.T) {
	m := testMessage()
	m.Language = "es"
	m.Body = "Su código de verificación es 483920."
	p := newPeer(t, func(t *testing.T, r *http.Request, body []byte) {
		checkTwilioRequest(t, r, "Calls.json", twilioSID, twilioToken)
		form := parseForm(t, body)
		assertFormKeys(t, form, "To", "From", "Twiml", "StatusCallback")
		assert.Equal(t, "+4712345678", form.Get("To"))
		assert.Equal(t, "+15557122661", form.Get("From"))
		var doc twiml
		require.NoError(t, xml.Unmarshal([]byte(form.Get("Twiml")), &doc), form.Get("Twiml"))
		require.Len(t, doc.Says, 2, "the code is read twice")
		assert.Len(t, doc.Pauses, 1)
		for _, say := range doc.Says {
			assert.Equal(t, "es-ES", say.Language)
			assert.Equal(t, "Polly.Lucia", say.Voice)
			assert.Equal(t, "Su código de verificación es 4, 8, 3, 9, 2, 0.", say.Text)
		}
		assert.NotContains(t, form.Get("Twiml"), testCode, "the code is never read as one number")
	}, reply{status: http.StatusCreated, body: twilioCallCreated})

	ch, err := channels.NewTwilio(channels.TwilioConfig{
		Kind:              channels.TwilioVoice,
		AccountSID:        twilioSID,
		AuthToken:         twilioToken,
		From:              "+15557122661",
		Voice:             "Polly.Lucia",
		StatusCallbackURL: "https://hooks.example.com/twilio/status",
		BaseURL:           p.URL,
	})
	require.NoError(t, err)
	assert.Equal(t, "voice", ch.Name())
	receipt, err := ch.Send(context.Background(), m)
	require.NoError(t, err)
	assert.Equal(t, "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", receipt.ProviderID)
}

func TestTwilioVoiceLanguages(t *testing.T) {
	for lang, want := range map[string]string{
		"": "en-US", "en": "en-US", "es": "es-ES", "fr": "fr-FR", "de": "de-DE", "pt": "pt-BR",
		"hi": "hi-IN", "ar": "ar-AE", "en-GB": "en-GB", "pt_PT": "pt-PT", "fr-ca": "fr-CA", "xx": "en-US",
	} {
		assert.Equal(t, want, channels.TwilioVoiceLanguage(lang, nil), "language %q", lang)
	}
	assert.Equal(t, "es-MX", channels.TwilioVoiceLanguage("es", map[string]string{"es": "es-MX"}))
}

func TestTwilioInvalidNumberIsPermanent(t *testing.T) {
	p := newPeer(t, nil, reply{status: http.StatusBadRequest, body: twilioInvalidTo})
	retry, rec := fastRetry(3)
	ch, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken, From: "+15557122661", BaseURL: p.URL, Retry: retry})
	require.NoError(t, err)

	_, err = ch.Send(context.Background(), testMessage())
	assertNoSecrets(t, err)
	assert.True(t, verify.IsPermanent(err))
	assert.Equal(t, 1, p.count(), "a permanent error is not retried")
	assert.Empty(t, rec.Waits())
	pe := providerError(t, err)
	assert.Equal(t, "twilio", pe.Provider)
	assert.Equal(t, 400, pe.StatusCode)
	assert.Equal(t, "21211", pe.Code)
	assert.Equal(t, "The 'To' number +4712 is not a valid phone number.", pe.Message)
	assert.True(t, pe.Permanent)
}

func TestTwilioRetriesTransientFailures(t *testing.T) {
	p := newPeer(t, nil,
		reply{status: http.StatusServiceUnavailable, body: twilioUnavailable},
		reply{status: http.StatusServiceUnavailable, body: twilioUnavailable},
		reply{status: http.StatusCreated, body: twilioCreated},
	)
	retry, rec := fastRetry(3)
	ch, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken, From: "+15557122661", BaseURL: p.URL, Retry: retry})
	require.NoError(t, err)

	receipt, err := ch.Send(context.Background(), testMessage())
	require.NoError(t, err)
	assert.Equal(t, "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", receipt.ProviderID)
	assert.Equal(t, 3, p.count())
	assert.Len(t, rec.Waits(), 2)
	// Every attempt carries the same idempotency token and body.
	assert.Equal(t, p.body(0), p.body(2))
}

func TestTwilioHonoursRetryAfter(t *testing.T) {
	p := newPeer(t, nil,
		reply{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "1"},
			body: `{"code":20429,"message":"Too Many Requests","more_info":"https://www.twilio.com/docs/errors/20429","status":429}`},
		reply{status: http.StatusCreated, body: twilioCreated},
	)
	retry, rec := fastRetry(3)
	ch, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken, From: "+15557122661", BaseURL: p.URL, Retry: retry})
	require.NoError(t, err)

	_, err = ch.Send(context.Background(), testMessage())
	require.NoError(t, err)
	assert.Equal(t, 2, p.count())
	require.Len(t, rec.Waits(), 1)
	assert.GreaterOrEqual(t, rec.Waits()[0].Seconds(), 1.0, "waits at least Retry-After")
}

func TestTwilioGivesUpAfterMaxAttempts(t *testing.T) {
	p := newPeer(t, nil, reply{status: http.StatusInternalServerError, body: twilioUnavailable})
	retry, _ := fastRetry(3)
	ch, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken, From: "+15557122661", BaseURL: p.URL, Retry: retry})
	require.NoError(t, err)

	_, err = ch.Send(context.Background(), testMessage())
	assertNoSecrets(t, err)
	assert.False(t, verify.IsPermanent(err))
	assert.Equal(t, 3, p.count())
	pe := providerError(t, err)
	assert.Equal(t, 3, pe.Attempts)
	assert.Equal(t, "20500", pe.Code)
}

func TestTwilioAuthFailureIsPermanent(t *testing.T) {
	p := newPeer(t, nil, reply{status: http.StatusUnauthorized,
		body: `{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}`})
	ch, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: twilioSID, AuthToken: "wrong", From: "+15557122661", BaseURL: p.URL})
	require.NoError(t, err)
	_, err = ch.Send(context.Background(), testMessage())
	assert.True(t, verify.IsPermanent(err))
	assert.Equal(t, 1, p.count())
}

func TestTwilioNetworkErrorIsTransient(t *testing.T) {
	p := newPeer(t, nil, reply{status: http.StatusCreated, body: twilioCreated})
	base := p.URL
	p.Close() // nothing listens any more
	retry, rec := fastRetry(2)
	ch, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken, From: "+15557122661", BaseURL: base, Retry: retry})
	require.NoError(t, err)
	_, err = ch.Send(context.Background(), testMessage())
	assertNoSecrets(t, err)
	assert.False(t, verify.IsPermanent(err))
	assert.Len(t, rec.Waits(), 1, "retried once")
}

func TestTwilioRefusesMessagesItCannotSend(t *testing.T) {
	p := newPeer(t, nil, reply{status: http.StatusCreated, body: twilioCreated})
	sms, err := channels.NewTwilio(channels.TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken, BaseURL: p.URL})
	require.NoError(t, err)
	_, err = sms.Send(context.Background(), testMessage()) // no sender anywhere
	assert.True(t, verify.IsPermanent(err))
	assert.Contains(t, err.Error(), "From")

	m := testMessage()
	m.To.Phone = ""
	m.From = "+15557122661"
	_, err = sms.Send(context.Background(), m)
	assert.True(t, verify.IsPermanent(err))
	assert.Equal(t, 0, p.count())
}

func TestTwilioConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg  channels.TwilioConfig
		want string
	}{
		{channels.TwilioConfig{}, "AccountSID"},
		{channels.TwilioConfig{AccountSID: twilioSID}, "AuthToken"},
		{channels.TwilioConfig{AccountSID: twilioSID, APIKeySID: "SK1"}, "APIKeySecret"},
		{channels.TwilioConfig{AccountSID: twilioSID, AuthToken: "t", Kind: 7}, "Kind"},
		{channels.TwilioConfig{AccountSID: twilioSID, AuthToken: "t", StatusCallbackURL: "/relative"}, "StatusCallbackURL"},
		{channels.TwilioConfig{AccountSID: twilioSID, AuthToken: "t", BaseURL: "ftp://x"}, "BaseURL"},
		{channels.TwilioConfig{AccountSID: twilioSID, AuthToken: "t", Kind: channels.TwilioVoice, MessagingServiceSID: "MG1"}, "MessagingServiceSID"},
	} {
		_, err := channels.NewTwilio(tc.cfg)
		require.Error(t, err, "%+v", tc.cfg)
		assert.Contains(t, err.Error(), tc.want)
		assert.True(t, strings.HasPrefix(err.Error(), "channels: twilio: "), err.Error())
	}
}

func TestTwilioVoiceSkipsWebOTPLine(t *testing.T) {
	m := testMessage()
	m.Body = testBody + "\n\n@example.com #" + testCode
	p := newPeer(t, func(t *testing.T, r *http.Request, body []byte) {
		tw := parseForm(t, body).Get("Twiml")
		assert.NotContains(t, tw, "example.com")
		assert.Contains(t, tw, "Your verification code is 4, 8, 3, 9, 2, 0. It expires in 5 minutes.")
	}, reply{status: http.StatusCreated, body: twilioCallCreated})
	ch, err := channels.NewTwilio(channels.TwilioConfig{Kind: channels.TwilioVoice, AccountSID: twilioSID, AuthToken: twilioToken, From: "+15557122661", BaseURL: p.URL})
	require.NoError(t, err)
	_, err = ch.Send(context.Background(), m)
	require.NoError(t, err)
}
