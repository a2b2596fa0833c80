package channels

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// TwilioKind selects what a Twilio channel sends.
type TwilioKind int

const (
	// TwilioSMS sends an SMS through the Messages resource.
	TwilioSMS TwilioKind = iota
	// TwilioWhatsApp sends a WhatsApp message through the Messages
	// resource, addressing both ends as "whatsapp:+E164".
	TwilioWhatsApp
	// TwilioVoice places a call through the Calls resource that reads the
	// code out, digit by digit, in the message's language.
	TwilioVoice
)

// String returns "sms", "whatsapp" or "voice".
func (k TwilioKind) String() string {
	switch k {
	case TwilioSMS:
		return "sms"
	case TwilioWhatsApp:
		return "whatsapp"
	case TwilioVoice:
		return "voice"
	}
	return "TwilioKind(" + strconv.Itoa(int(k)) + ")"
}

// TwilioConfig configures a Twilio channel. Zero values mean the defaults
// given on each field.
type TwilioConfig struct {
	// Name is how flows refer to the channel. Defaults to the Kind's
	// name: "sms", "whatsapp" or "voice".
	Name string
	// Kind selects SMS (the zero value), WhatsApp or voice.
	Kind TwilioKind

	// AccountSID is the account's SID ("AC..."). Required.
	AccountSID string
	// AuthToken is the account's auth token. Either AuthToken or
	// APIKeySID and APIKeySecret are required.
	AuthToken string
	// APIKeySID is an API key's SID ("SK..."). With APIKeySecret it
	// authenticates instead of the auth token, as Twilio recommends for
	// production; the requests still go to AccountSID's resources.
	APIKeySID string
	// APIKeySecret is the API key's secret.
	APIKeySecret string

	// From is the default sender: a Twilio number in E.164 (for WhatsApp,
	// the WhatsApp-enabled number, with or without the "whatsapp:"
	// prefix), or an alphanumeric sender ID for SMS. A flow step's From
	// overrides it. Optional when MessagingServiceSID is set (SMS and
	// WhatsApp) or every step sets From.
	From string
	// MessagingServiceSID ("MG...") sends SMS and WhatsApp messages through
	// a Messaging Service when neither the step nor From names a sender.
	MessagingServiceSID string

	// StatusCallbackURL, if set, is passed to Twilio as StatusCallback
	// with the message's ID appended as the "message_id" query parameter,
	// so that ParseTwilioStatusCallback can match the delivery report to
	// the message. Must be an absolute http(s) URL.
	StatusCallbackURL string

	// Voice is the <Say> voice for TwilioVoice, such as "Polly.Joanna" or
	// "Google.en-US-Standard-C". Defaults to Twilio's default voice for
	// the language.
	Voice string
	// VoiceLanguages maps a message's Language to a <Say> language,
	// overriding or extending the built-in map (en→en-US, es→es-ES,
	// fr→fr-FR, de→de-DE, pt→pt-BR, hi→hi-IN, ar→ar-AE, ...). A Language
	// that is already a locale ("en-GB") is used as it is. Unknown
	// languages fall back to en-US.
	VoiceLanguages map[string]string
	// Repeat is how many times a voice call reads the code. Defaults to 2.
	Repeat int

	// BaseURL is the API's base URL. Defaults to "https://api.twilio.com";
	// tests point it at a local server.
	BaseURL string
	// HTTPClient makes the requests. Defaults to http.DefaultClient.
	HTTPClient *http.Client
	// Timeout bounds each HTTP request. Defaults to 10 seconds.
	Timeout time.Duration
	// Retry is the retry policy for transient failures. The zero value is
	// the default policy (see RetryPolicy).
	Retry RetryPolicy
}

// Twilio is a verify.Channel that sends codes by SMS, WhatsApp or voice
// call through Twilio's REST API. It uses the message's ID as the
// I-Twilio-Idempotency-Token header, so retries of one message can be
// recognised as such. A Twilio is safe for concurrent use.
type Twilio struct {
	cfg  TwilioConfig
	name string
	http httpSender
	user string
	pass string
	url  string
}

var _ verify.Channel = (*Twilio)(nil)

const defaultTwilioBaseURL = "https://api.twilio.com"

// NewTwilio returns a Twilio channel, or an error naming the first missing
// or invalid field of cfg.
func NewTwilio(cfg TwilioConfig) (*Twilio, error) {
	const p = "twilio"
	if cfg.Kind < TwilioSMS || cfg.Kind > TwilioVoice {
		return nil, configError(p, "unknown Kind %d: use TwilioSMS, TwilioWhatsApp or TwilioVoice", int(cfg.Kind))
	}
	if cfg.AccountSID == "" {
		return nil, configError(p, "missing AccountSID (the account's \"AC...\" SID from the Twilio console)")
	}
	t := &Twilio{cfg: cfg, name: cfg.Name}
	switch {
	case cfg.APIKeySID != "" || cfg.APIKeySecret != "":
		if cfg.APIKeySID == "" || cfg.APIKeySecret == "" {
			return nil, configError(p, "APIKeySID and APIKeySecret must be set together")
		}
		t.user, t.pass = cfg.APIKeySID, cfg.APIKeySecret
	case cfg.AuthToken != "":
		t.user, t.pass = cfg.AccountSID, cfg.AuthToken
	default:
		return nil, configError(p, "missing AuthToken (or APIKeySID and APIKeySecret)")
	}
	if t.name == "" {
		t.name = cfg.Kind.String()
	}
	if cfg.Kind == TwilioVoice && cfg.MessagingServiceSID != "" {
		return nil, configError(p, "MessagingServiceSID does not apply to voice calls; set From to a Twilio number")
	}
	if cfg.StatusCallbackURL != "" {
		if err := checkAbsoluteURL(cfg.StatusCallbackURL); err != nil {
			return nil, configError(p, "StatusCallbackURL: %v", err)
		}
	}
	if cfg.Repeat < 0 {
		return nil, configError(p, "Repeat %d must not be negative", cfg.Repeat)
	}
	base := cfg.BaseURL
	if base == "" {
		base = defaultTwilioBaseURL
	}
	if err := checkAbsoluteURL(base); err != nil {
		return nil, configError(p, "BaseURL: %v", err)
	}
	resource := "Messages.json"
	if cfg.Kind == TwilioVoice {
		resource = "Calls.json"
	}
	t.url = strings.TrimRight(base, "/") + "/2010-04-01/Accounts/" + url.PathEscape(cfg.AccountSID) + "/" + resource
	t.http = newHTTPSender(p, cfg.HTTPClient, cfg.Timeout, cfg.Retry)
	return t, nil
}

// Name returns the channel's name.
func (t *Twilio) Name() string { return t.name }

// Send creates a Message (SMS, WhatsApp) or a Call (voice) for m and
// returns its SID as the receipt's ProviderID.
func (t *Twilio) Send(ctx context.Context, m verify.Message) (verify.Receipt, error) {
	const p = "twilio"
	to := m.To.Phone
	if to == "" {
		return verify.Receipt{}, permanentf(p, "message %s has no recipient phone number", m.ID)
	}
	from := m.From
	if from == "" {
		from = t.cfg.From
	}
	form := url.Values{}
	switch t.cfg.Kind {
	case TwilioSMS, TwilioWhatsApp:
		if t.cfg.Kind == TwilioWhatsApp {
			to = whatsappAddress(to)
			if from != "" {
				from = whatsappAddress(from)
			}
		}
		form.Set("To", to)
		switch {
		case from != "":
			form.Set("From", from)
		case t.cfg.MessagingServiceSID != "":
			form.Set("MessagingServiceSid", t.cfg.MessagingServiceSID)
		default:
			return verify.Receipt{}, permanentf(p, "no sender: set TwilioConfig.From, MessagingServiceSID or the flow step's From")
		}
		form.Set("Body", m.Body)
		if vp := validityPeriod(m.ExpiresAt, time.Now()); vp > 0 {
			form.Set("ValidityPeriod", strconv.Itoa(vp))
		}
	case TwilioVoice:
		if from == "" {
			return verify.Receipt{}, permanentf(p, "no caller ID: set TwilioConfig.From or the flow step's From")
		}
		form.Set("To", to)
		form.Set("From", from)
		form.Set("Twiml", t.twiml(m))
	}
	if t.cfg.StatusCallbackURL != "" {
		cb, err := withQuery(t.cfg.StatusCallbackURL, callbackMessageIDParam, m.ID)
		if err != nil {
			return verify.Receipt{}, permanentf(p, "StatusCallbackURL: %v", err)
		}
		form.Set("StatusCallback", cb)
	}

	req := httpRequest{
		method: http.MethodPost,
		url:    t.url,
		header: http.Header{
			"Content-Type":               {"application/x-www-form-urlencoded"},
			"Accept":                     {"application/json"},
			"I-Twilio-Idempotency-Token": {m.ID},
		},
		body:      []byte(form.Encode()),
		basicUser: t.user,
		basicPass: t.pass,
	}
	var receipt verify.Receipt
	err := t.http.do(ctx, req, func(status int, header http.Header, body []byte) error {
		if is2xx(status) {
			var ok struct {
				SID    string `json:"sid"`
				Status string `json:"status"`
			}
			if err := json.Unmarshal(body, &ok); err != nil || ok.SID == "" {
				// Accepted, but the answer is not what Twilio documents:
				// do not send again, which could deliver the code twice.
				receipt = verify.Receipt{Status: verify.DeliverySent}
				return nil
			}
			receipt = verify.Receipt{ProviderID: ok.SID, Status: verify.DeliverySent}
			return nil
		}
		var e struct {
			Code     json.Number `json:"code"`
			Message  string      `json:"message"`
			MoreInfo string      `json:"more_info"`
		}
		_ = json.Unmarshal(body, &e)
		return statusError(p, status, header, e.Code.String(), redact(e.Message, m))
	})
	if err != nil {
		return verify.Receipt{}, sendError(err)
	}
	return receipt, nil
}

// twiml is the call's TwiML: the body, with the code spelled out one
// character at a time, read Repeat times with a pause in between.
func (t *Twilio) twiml(m verify.Message) string {
	repeat := t.cfg.Repeat
	if repeat == 0 {
		repeat = 2
	}
	lang := twilioVoiceLanguage(m.Language, t.cfg.VoiceLanguages)
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><Response>`)
	for i := range repeat {
		if i > 0 {
			b.WriteString(`<Pause length="1"/>`)
		}
		b.WriteString(`<Say`)
		if t.cfg.Voice != "" {
			b.WriteString(` voice="`)
			xmlEscape(&b, t.cfg.Voice)
			b.WriteString(`"`)
		}
		b.WriteString(` language="`)
		xmlEscape(&b, lang)
		b.WriteString(`">`)
		xmlEscape(&b, spokenText(m))
		b.WriteString(`</Say>`)
	}
	b.WriteString(`</Response>`)
	return b.String()
}

// spokenText is the body with the code spelled out ("1, 2, 3, 4") so
// that text-to-speech reads it one character at a time rather than as a
// number. A body without the code gets the spelled code appended. A WebOTP
// line ("@example.com #123456"), meant for browsers, is not read out.
func spokenText(m verify.Message) string {
	body := strings.TrimSpace(m.Body)
	if i := strings.LastIndex(body, "\n@"); i >= 0 && !strings.Contains(body[i+1:], "\n") {
		body = strings.TrimSpace(body[:i])
	}
	m.Body = body
	if m.Code == "" {
		return m.Body
	}
	chars := make([]string, 0, len(m.Code))
	for _, r := range m.Code {
		chars = append(chars, string(r))
	}
	spelled := strings.Join(chars, ", ")
	if strings.Contains(m.Body, m.Code) {
		return strings.ReplaceAll(m.Body, m.Code, spelled)
	}
	if m.Body == "" {
		return spelled + "."
	}
	return m.Body + " " + spelled + "."
}

// twilioLanguages maps a language to a locale Twilio's <Say> documents.
var twilioLanguages = map[string]string{
	"ar": "ar-AE", "ca": "ca-ES", "cy": "cy-GB", "da": "da-DK", "de": "de-DE",
	"en": "en-US", "es": "es-ES", "fi": "fi-FI", "fr": "fr-FR", "hi": "hi-IN",
	"id": "id-ID", "is": "is-IS", "it": "it-IT", "ja": "ja-JP", "ko": "ko-KR",
	"nb": "nb-NO", "no": "nb-NO", "nl": "nl-NL", "pl": "pl-PL", "pt": "pt-BR",
	"ro": "ro-RO", "ru": "ru-RU", "sv": "sv-SE", "tr": "tr-TR", "zh": "zh-CN",
}

// twilioVoiceLanguage returns the <Say> language for a message language:
// an override from extra, a locale given as such ("pt-PT", "en_GB"), the
// built-in map, or en-US.
func twilioVoiceLanguage(lang string, extra map[string]string) string {
	lang = strings.TrimSpace(lang)
	if v, ok := extra[lang]; ok && v != "" {
		return v
	}
	norm := strings.ReplaceAll(lang, "_", "-")
	base, region, hasRegion := strings.Cut(norm, "-")
	base = strings.ToLower(base)
	if v, ok := extra[base]; ok && v != "" && !hasRegion {
		return v
	}
	if hasRegion && len(base) >= 2 && len(base) <= 3 && (len(region) == 2 || len(region) == 3) {
		return base + "-" + strings.ToUpper(region)
	}
	if v, ok := twilioLanguages[base]; ok {
		return v
	}
	return "en-US"
}

// whatsappAddress prefixes a phone number with "whatsapp:" unless it
// already has it.
func whatsappAddress(s string) string {
	if strings.HasPrefix(s, "whatsapp:") {
		return s
	}
	return "whatsapp:" + s
}

// validityPeriod is how many seconds a queued SMS stays useful: the
// code's remaining lifetime, within Twilio's documented 1..36000 range;
// 0 (not sent) when ExpiresAt is unset or already past.
func validityPeriod(expires, now time.Time) int {
	if expires.IsZero() {
		return 0
	}
	secs := int(expires.Sub(now) / time.Second)
	if secs < 1 {
		return 0
	}
	return min(secs, 36000)
}

// callbackMessageIDParam is the query parameter that carries the message
// ID on status callback URLs.
const callbackMessageIDParam = "message_id"

// withQuery returns rawURL with the query parameter key set to value.
func withQuery(rawURL, key, value string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// checkAbsoluteURL reports whether s is an absolute http or https URL.
func checkAbsoluteURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}

func xmlEscape(b *strings.Builder, s string) {
	_ = xml.EscapeText(b, []byte(s))
}
