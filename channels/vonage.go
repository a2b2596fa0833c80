package channels

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// VonageConfig configures a Vonage (formerly Nexmo) SMS channel. Zero
// values mean the defaults given on each field.
type VonageConfig struct {
	// Name is how flows refer to the channel. Defaults to "sms".
	Name string
	// APIKey is the account's API key from the Vonage dashboard. Required.
	APIKey string
	// APISecret is the account's API secret. Required.
	APISecret string
	// From is the default sender: a Vonage number or an alphanumeric
	// sender ID. A flow step's From overrides it; one of the two is
	// required.
	From string
	// CallbackURL, if set, is sent as the "callback" parameter: the URL
	// Vonage posts the delivery receipt to (its client-ref field carries
	// the message's ID). Must be an absolute http(s) URL.
	CallbackURL string
	// BaseURL is the API's base URL. Defaults to "https://rest.nexmo.com";
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

// Vonage is a verify.Channel that sends codes by SMS through Vonage's SMS
// API (POST /sms/json). It passes the message's ID as client-ref, which
// Vonage echoes in the response and in delivery receipts. A Vonage is safe
// for concurrent use.
type Vonage struct {
	cfg  VonageConfig
	name string
	url  string
	http httpSender
}

var _ verify.Channel = (*Vonage)(nil)

const defaultVonageBaseURL = "https://rest.nexmo.com"

// NewVonage returns a Vonage channel, or an error naming the first missing
// or invalid field of cfg.
func NewVonage(cfg VonageConfig) (*Vonage, error) {
	const p = "vonage"
	if cfg.APIKey == "" {
		return nil, configError(p, "missing APIKey (from the Vonage API dashboard)")
	}
	if cfg.APISecret == "" {
		return nil, configError(p, "missing APISecret (from the Vonage API dashboard)")
	}
	if cfg.CallbackURL != "" {
		if err := checkAbsoluteURL(cfg.CallbackURL); err != nil {
			return nil, configError(p, "CallbackURL: %v", err)
		}
	}
	base := cfg.BaseURL
	if base == "" {
		base = defaultVonageBaseURL
	}
	if err := checkAbsoluteURL(base); err != nil {
		return nil, configError(p, "BaseURL: %v", err)
	}
	v := &Vonage{cfg: cfg, name: cfg.Name, url: strings.TrimRight(base, "/") + "/sms/json"}
	if v.name == "" {
		v.name = "sms"
	}
	v.http = newHTTPSender(p, cfg.HTTPClient, cfg.Timeout, cfg.Retry)
	return v, nil
}

// Name returns the channel's name.
func (v *Vonage) Name() string { return v.name }

// vonageResponse is the SMS API's answer, for success and failure alike.
type vonageResponse struct {
	MessageCount string `json:"message-count"`
	Messages     []struct {
		To        string `json:"to"`
		MessageID string `json:"message-id"`
		Status    string `json:"status"`
		ErrorText string `json:"error-text"`
		ClientRef string `json:"client-ref"`
	} `json:"messages"`
}

// Send submits m to the SMS API and returns the first part's message-id as
// the receipt's ProviderID.
func (v *Vonage) Send(ctx context.Context, m verify.Message) (verify.Receipt, error) {
	const p = "vonage"
	to := strings.TrimPrefix(strings.TrimSpace(m.To.Phone), "+")
	if to == "" {
		return verify.Receipt{}, permanentf(p, "message %s has no recipient phone number", m.ID)
	}
	from := m.From
	if from == "" {
		from = v.cfg.From
	}
	if from == "" {
		return verify.Receipt{}, permanentf(p, "no sender: set VonageConfig.From or the flow step's From")
	}
	form := url.Values{
		"api_key":    {v.cfg.APIKey},
		"api_secret": {v.cfg.APISecret},
		"from":       {strings.TrimPrefix(from, "+")},
		"to":         {to},
		"text":       {m.Body},
		"client-ref": {m.ID},
	}
	if !isGSM7(m.Body) {
		form.Set("type", "unicode")
	}
	if v.cfg.CallbackURL != "" {
		form.Set("callback", v.cfg.CallbackURL)
	}
	req := httpRequest{
		method: http.MethodPost,
		url:    v.url,
		header: http.Header{
			"Content-Type": {"application/x-www-form-urlencoded"},
			"Accept":       {"application/json"},
		},
		body: []byte(form.Encode()),
	}
	var receipt verify.Receipt
	err := v.http.do(ctx, req, func(status int, header http.Header, body []byte) error {
		if !is2xx(status) {
			return statusError(p, status, header, "", "")
		}
		var r vonageResponse
		if err := json.Unmarshal(body, &r); err != nil || len(r.Messages) == 0 {
			// Vonage answers 200 with a status per part; anything else is
			// an answer we cannot read. Do not retry: the SMS may be out.
			return &ProviderError{Provider: p, StatusCode: status, Message: "unreadable response", Permanent: true}
		}
		for _, part := range r.Messages {
			if part.Status != "0" {
				return &ProviderError{
					Provider:   p,
					StatusCode: status,
					Code:       part.Status,
					Message:    redact(part.ErrorText, m),
					Permanent:  !vonageTransient(part.Status),
				}
			}
		}
		receipt = verify.Receipt{ProviderID: r.Messages[0].MessageID, Status: verify.DeliverySent}
		return nil
	})
	if err != nil {
		return verify.Receipt{}, sendError(err)
	}
	return receipt, nil
}

// vonageTransient reports whether an SMS API status is worth retrying, as
// Vonage documents its statuses: 1 Throttled, 5 Internal Error and 10 Too
// Many Existing Binds are; 2 Missing Parameters, 3 Invalid Parameters, 4
// Invalid Credentials, 6 Invalid Message, 7 Number Barred, 8 Partner
// Account Barred, 9 Partner Quota Violation, 11 Account Not Enabled For
// HTTP, 12 Message Too Long, 14 Invalid Signature, 15 Invalid Sender
// Address, 22 Invalid Network Code, 23 Invalid Callback Url, 29
// Non-Whitelisted Destination, 32 Signature And API Secret Disallowed, 33
// Number De-activated, and any status not listed, are not.
func vonageTransient(status string) bool {
	switch status {
	case "1", "5", "10":
		return true
	}
	return false
}

// gsm7 holds the characters of the GSM 03.38 default alphabet and its
// extension table; a text made only of them can be sent as type "text".
var gsm7 = func() map[rune]bool {
	const basic = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
		"¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
	const ext = "\f^{}\\[~]|€"
	set := make(map[rune]bool, len(basic)+len(ext))
	for _, r := range basic + ext {
		set[r] = true
	}
	return set
}()

// isGSM7 reports whether s can be encoded in the GSM 7-bit alphabet.
func isGSM7(s string) bool {
	for _, r := range s {
		if !gsm7[r] {
			return false
		}
	}
	return true
}

var _ verify.StepValidator = (*Vonage)(nil)

// ValidateStep implements verify.StepValidator: a step needs a sender, its
// own From or VonageConfig.From.
func (v *Vonage) ValidateStep(s verify.Step) error {
	if s.From == "" && v.cfg.From == "" {
		return errors.New("no sender: set VonageConfig.From or the step's From")
	}
	return nil
}
