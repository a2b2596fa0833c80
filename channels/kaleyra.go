package channels

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// KaleyraConfig configures a Kaleyra SMS channel (kaleyra.io v1 API).
// Zero values mean the defaults given on each field.
type KaleyraConfig struct {
	// Name is how flows refer to the channel. Defaults to "sms".
	Name string
	// SID is the account's SID ("HX..."), from kaleyra.io's API key page.
	// Required.
	SID string
	// APIKey is the API key sent in the api-key header. Required.
	APIKey string
	// From is the default approved sender ID; a flow step's From
	// overrides it. One of the two is required.
	From string
	// Type is the route type. Defaults to "OTP"; Kaleyra also documents
	// "TXN" (transactional) and "MKT" (promotional).
	Type string
	// TemplateID is the DLT template ID ("template_id") that Indian
	// regulations require for every SMS to Indian numbers; "" sends none.
	TemplateID string
	// TemplateIDs maps a flow template's ID (verify.Message.Template) to
	// its DLT template ID, overriding TemplateID for that template.
	TemplateIDs map[string]string
	// CallbackURL, if set, is sent as the "callback" parameter: the URL
	// Kaleyra reports the delivery status to. The channel appends the
	// message's ID as the "message_id" query parameter (and, with
	// CallbackSecret, a "sig" parameter) so that ParseKaleyraDLR can match
	// the report to the message. Must be an absolute http(s) URL.
	CallbackURL string
	// CallbackSecret, if set, signs each callback URL's message_id with
	// HMAC-SHA256 so that ParseKaleyraDLR can reject reports for IDs this
	// channel never sent. Use at least 16 random bytes.
	CallbackSecret []byte
	// BaseURL is the API's base URL, which depends on the account's pod.
	// Defaults to "https://api.kaleyra.io"; Kaleyra also documents
	// "https://api.in.kaleyra.io" (India) and "https://api.eu.kaleyra.io"
	// (Europe).
	BaseURL string
	// HTTPClient makes the requests. Defaults to http.DefaultClient.
	HTTPClient *http.Client
	// Timeout bounds each HTTP request. Defaults to 10 seconds.
	Timeout time.Duration
	// Retry is the retry policy for transient failures. The zero value is
	// the default policy (see RetryPolicy).
	Retry RetryPolicy
}

// Kaleyra is a verify.Channel that sends codes by SMS through Kaleyra's
// v1 messages API (POST /v1/{sid}/messages). It passes the message's ID
// as "ref". A Kaleyra is safe for concurrent use.
type Kaleyra struct {
	cfg  KaleyraConfig
	name string
	url  string
	http httpSender
}

var _ verify.Channel = (*Kaleyra)(nil)

const defaultKaleyraBaseURL = "https://api.kaleyra.io"

// NewKaleyra returns a Kaleyra channel, or an error naming the first
// missing or invalid field of cfg.
func NewKaleyra(cfg KaleyraConfig) (*Kaleyra, error) {
	const p = "kaleyra"
	if cfg.SID == "" {
		return nil, configError(p, "missing SID (the account SID from kaleyra.io's API key page)")
	}
	if cfg.APIKey == "" {
		return nil, configError(p, "missing APIKey (create one on kaleyra.io)")
	}
	if cfg.CallbackURL != "" {
		if err := checkAbsoluteURL(cfg.CallbackURL); err != nil {
			return nil, configError(p, "CallbackURL: %v", err)
		}
	}
	if len(cfg.CallbackSecret) > 0 && cfg.CallbackURL == "" {
		return nil, configError(p, "CallbackSecret is set but CallbackURL is not")
	}
	if len(cfg.CallbackSecret) > 0 && len(cfg.CallbackSecret) < minSecretLen {
		return nil, configError(p, "CallbackSecret must be at least %d bytes", minSecretLen)
	}
	base := cfg.BaseURL
	if base == "" {
		base = defaultKaleyraBaseURL
	}
	if err := checkAbsoluteURL(base); err != nil {
		return nil, configError(p, "BaseURL: %v", err)
	}
	if cfg.Type == "" {
		cfg.Type = "OTP"
	}
	k := &Kaleyra{
		cfg:  cfg,
		name: cfg.Name,
		url:  strings.TrimRight(base, "/") + "/v1/" + url.PathEscape(cfg.SID) + "/messages",
	}
	if k.name == "" {
		k.name = "sms"
	}
	k.http = newHTTPSender(p, cfg.HTTPClient, cfg.Timeout, cfg.Retry)
	return k, nil
}

// Name returns the channel's name.
func (k *Kaleyra) Name() string { return k.name }

// kaleyraResponse is the messages API's answer: on success an id and one
// data entry per recipient; on failure a code, a message and an error
// object.
type kaleyraResponse struct {
	ID   string `json:"id"`
	Data []struct {
		MessageID string `json:"message_id"`
		Recipient string `json:"recipient"`
	} `json:"data"`
	Code    json.RawMessage `json:"code"`
	Message string          `json:"message"`
	Error   json.RawMessage `json:"error"`
}

// Send submits m to the messages API and returns Kaleyra's message ID as
// the receipt's ProviderID.
func (k *Kaleyra) Send(ctx context.Context, m verify.Message) (verify.Receipt, error) {
	const p = "kaleyra"
	to := strings.TrimSpace(m.To.Phone)
	if to == "" {
		return verify.Receipt{}, permanentf(p, "message %s has no recipient phone number", m.ID)
	}
	sender := m.From
	if sender == "" {
		sender = k.cfg.From
	}
	if sender == "" {
		return verify.Receipt{}, permanentf(p, "no sender: set KaleyraConfig.From or the flow step's From")
	}
	form := url.Values{
		"to":     {to},
		"sender": {sender},
		"type":   {k.cfg.Type},
		"body":   {m.Body},
		"ref":    {m.ID},
	}
	if tid := k.templateID(m.Template); tid != "" {
		form.Set("template_id", tid)
	}
	if k.cfg.CallbackURL != "" {
		cb, err := kaleyraCallbackURL(k.cfg.CallbackURL, m.ID, k.cfg.CallbackSecret)
		if err != nil {
			return verify.Receipt{}, permanentf(p, "CallbackURL: %v", err)
		}
		form.Set("callback", cb)
	}
	req := httpRequest{
		method: http.MethodPost,
		url:    k.url,
		header: http.Header{
			"Content-Type": {"application/x-www-form-urlencoded"},
			"Accept":       {"application/json"},
			"Api-Key":      {k.cfg.APIKey},
		},
		body: []byte(form.Encode()),
	}
	var receipt verify.Receipt
	err := k.http.do(ctx, req, func(status int, header http.Header, body []byte) error {
		var r kaleyraResponse
		jsonErr := json.Unmarshal(body, &r)
		code, msg := kaleyraErrorText(r)
		if !is2xx(status) {
			return statusError(p, status, header, code, redact(msg, m))
		}
		if jsonErr == nil && r.ID == "" && len(r.Data) == 0 && (code != "" || msg != "") {
			// A 2xx that describes an error rather than a message.
			return &ProviderError{Provider: p, StatusCode: status, Code: code, Message: redact(msg, m), Permanent: true}
		}
		receipt = verify.Receipt{ProviderID: r.ID, Status: verify.DeliverySent}
		if len(r.Data) > 0 && r.Data[0].MessageID != "" {
			receipt.ProviderID = r.Data[0].MessageID
		}
		return nil
	})
	if err != nil {
		return verify.Receipt{}, sendError(err)
	}
	return receipt, nil
}

func (k *Kaleyra) templateID(template string) string {
	if id, ok := k.cfg.TemplateIDs[template]; ok && template != "" {
		return id
	}
	return k.cfg.TemplateID
}

// kaleyraErrorText extracts an error code and message from an answer.
// Kaleyra puts a code and message at the top level and details in an
// "error" object (field name → text) or string.
func kaleyraErrorText(r kaleyraResponse) (code, msg string) {
	code = jsonScalar(r.Code)
	msg = r.Message
	if len(r.Error) == 0 {
		return code, msg
	}
	var s string
	if json.Unmarshal(r.Error, &s) == nil {
		return code, joinNonEmpty(msg, s)
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(r.Error, &obj) != nil {
		return code, msg
	}
	if code == "" {
		code = jsonScalar(obj["code"])
	}
	keys := make([]string, 0, len(obj))
	for key := range obj {
		if key != "code" {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	var details []string
	for _, key := range keys {
		if v := jsonScalar(obj[key]); v != "" && v != msg {
			if key == "error" || key == "message" {
				details = append(details, v)
			} else {
				details = append(details, key+": "+v)
			}
		}
	}
	return code, joinNonEmpty(msg, strings.Join(details, "; "))
}

// jsonScalar returns a JSON string or number as text, "" otherwise.
func jsonScalar(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

func joinNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + ": " + b
}

var _ verify.StepValidator = (*Kaleyra)(nil)

// ValidateStep implements verify.StepValidator: a step needs an approved
// sender ID, its own From or KaleyraConfig.From.
func (k *Kaleyra) ValidateStep(s verify.Step) error {
	if s.From == "" && k.cfg.From == "" {
		return errors.New("no sender ID: set KaleyraConfig.From or the step's From")
	}
	return nil
}
