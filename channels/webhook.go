package channels

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// WebhookSignatureHeader is the header that carries a webhook's signature:
//
//	X-OpenVerify-Signature: t=1700000000,v1=<64 hex digits>
//
// t is the Unix time of signing; v1 is the hex HMAC-SHA256, keyed with the
// shared secret, of t, a dot, and the raw request body. VerifyWebhookSignature
// checks it.
const WebhookSignatureHeader = "X-OpenVerify-Signature"

// minSecretLen is the shortest secret accepted for signing.
const minSecretLen = 16

// WebhookConfig configures a Webhook channel. Zero values mean the
// defaults given on each field.
type WebhookConfig struct {
	// Name is how flows refer to the channel, such as "sms", "viber" or
	// "whatsapp". Defaults to "webhook".
	Name string
	// URL is where messages are POSTed. Required; an absolute http(s) URL
	// (use https outside tests: the payload holds the code).
	URL string
	// Secret signs every request (see WebhookSignatureHeader). Required; at
	// least 16 bytes, 32 random bytes recommended.
	Secret []byte
	// Addressing says which part of the recipient the gateway delivers to
	// and the payload's "to" holds: verify.ByPhone (the zero value) or
	// verify.ByEmail.
	Addressing verify.Addressing
	// Header holds extra headers sent with every request, such as an
	// Authorization header the gateway requires.
	Header http.Header
	// HTTPClient makes the requests. Defaults to http.DefaultClient.
	HTTPClient *http.Client
	// Timeout bounds each HTTP request. Defaults to 10 seconds.
	Timeout time.Duration
	// Retry is the retry policy for transient failures. The zero value is
	// the default policy (see RetryPolicy).
	Retry RetryPolicy
}

// WebhookPayload is the JSON body a Webhook channel POSTs. Unlike
// verify.Message's own JSON encoding, it includes the code and the
// rendered body: the receiving gateway delivers them. Its String method
// leaves them out.
type WebhookPayload struct {
	// ID is the message's stable ID, also sent as Idempotency-Key: a
	// receiver that sees an ID twice should deliver it once.
	ID string `json:"id"`
	// VerificationID is the verification the code belongs to.
	VerificationID string `json:"verification_id"`
	// Channel is the channel's name.
	Channel string `json:"channel"`
	// Step is the flow step's index; -1 for a resend.
	Step int `json:"step"`
	// To is the phone number (E.164) or email address to deliver to.
	To string `json:"to"`
	// From is the step's sender ID; may be "".
	From string `json:"from,omitempty"`
	// Code is the one-time code.
	Code string `json:"code"`
	// Body is the rendered text, code included.
	Body string `json:"body"`
	// Template is the flow template's ID, "" for the built-in text.
	Template string `json:"template,omitempty"`
	// Language is the text's language, such as "en".
	Language string `json:"language,omitempty"`
	// ExpiresAt is when the code stops working.
	ExpiresAt time.Time `json:"expires_at"`
}

// String describes the payload without its code or body.
func (p WebhookPayload) String() string {
	return fmt.Sprintf("channels.WebhookPayload{ID:%s Channel:%s Step:%d To:%s}", p.ID, p.Channel, p.Step, p.To)
}

// GoString is String, so %#v does not reveal the code either.
func (p WebhookPayload) GoString() string { return p.String() }

// Webhook is a verify.Channel that POSTs each message, code included, as
// a signed JSON WebhookPayload to an in-house gateway (an SMS box, a Viber
// or WhatsApp bridge). The request carries the message's ID as
// Idempotency-Key and the signature in WebhookSignatureHeader. Any 2xx
// answer means accepted; the answer may be a JSON object whose "id" (or
// "provider_id") becomes the receipt's ProviderID and whose "status" may
// be "delivered". 408, 425, 429 and 5xx answers are retried; other 4xx
// answers are permanent failures. A Webhook is safe for concurrent use.
type Webhook struct {
	cfg  WebhookConfig
	name string
	http httpSender
}

var (
	_ verify.Channel   = (*Webhook)(nil)
	_ verify.Addresser = (*Webhook)(nil)
)

// NewWebhook returns a Webhook channel, or an error naming the first
// missing or invalid field of cfg.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	const p = "webhook"
	if cfg.URL == "" {
		return nil, configError(p, "missing URL (the gateway's endpoint)")
	}
	if err := checkAbsoluteURL(cfg.URL); err != nil {
		return nil, configError(p, "URL: %v", err)
	}
	if len(cfg.Secret) == 0 {
		return nil, configError(p, "missing Secret (at least %d random bytes shared with the receiver)", minSecretLen)
	}
	if len(cfg.Secret) < minSecretLen {
		return nil, configError(p, "Secret is %d bytes; use at least %d", len(cfg.Secret), minSecretLen)
	}
	if cfg.Addressing != verify.ByPhone && cfg.Addressing != verify.ByEmail {
		return nil, configError(p, "unknown Addressing %d: use verify.ByPhone or verify.ByEmail", int(cfg.Addressing))
	}
	cfg.Secret = append([]byte(nil), cfg.Secret...)
	cfg.Header = cfg.Header.Clone()
	w := &Webhook{cfg: cfg, name: cfg.Name}
	if w.name == "" {
		w.name = "webhook"
	}
	w.http = newHTTPSender(p, cfg.HTTPClient, cfg.Timeout, cfg.Retry)
	return w, nil
}

// Name returns the channel's name.
func (w *Webhook) Name() string { return w.name }

// Addressing returns the configured addressing: which part of the
// recipient the gateway delivers to.
func (w *Webhook) Addressing() verify.Addressing { return w.cfg.Addressing }

// Send POSTs m as a signed WebhookPayload.
func (w *Webhook) Send(ctx context.Context, m verify.Message) (verify.Receipt, error) {
	const p = "webhook"
	to := m.To.Phone
	if w.cfg.Addressing == verify.ByEmail {
		to = m.To.Email
	}
	if to == "" {
		return verify.Receipt{}, permanentf(p, "message %s has no recipient address for this channel", m.ID)
	}
	body, err := json.Marshal(WebhookPayload{
		ID:             m.ID,
		VerificationID: m.VerificationID,
		Channel:        m.Channel,
		Step:           m.Step,
		To:             to,
		From:           m.From,
		Code:           m.Code,
		Body:           m.Body,
		Template:       m.Template,
		Language:       m.Language,
		ExpiresAt:      m.ExpiresAt,
	})
	if err != nil {
		return verify.Receipt{}, permanentf(p, "encoding payload: %v", err)
	}
	header := w.cfg.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	header.Set("Content-Type", "application/json")
	header.Set("Accept", "application/json")
	header.Set("Idempotency-Key", m.ID)
	header.Set(WebhookSignatureHeader, SignWebhook(w.cfg.Secret, body, time.Now()))
	req := httpRequest{method: http.MethodPost, url: w.cfg.URL, header: header, body: body}

	var receipt verify.Receipt
	err = w.http.do(ctx, req, func(status int, header http.Header, resp []byte) error {
		var r struct {
			ID         string          `json:"id"`
			ProviderID string          `json:"provider_id"`
			Status     string          `json:"status"`
			Code       json.RawMessage `json:"code"`
			Message    string          `json:"message"`
			Error      json.RawMessage `json:"error"`
		}
		_ = json.Unmarshal(resp, &r)
		if !is2xx(status) {
			msg := r.Message
			if e := jsonScalar(r.Error); e != "" {
				msg = joinNonEmpty(msg, e)
			}
			return statusError(p, status, header, jsonScalar(r.Code), redact(msg, m))
		}
		receipt = verify.Receipt{ProviderID: r.ProviderID, Status: verify.DeliverySent}
		if receipt.ProviderID == "" {
			receipt.ProviderID = r.ID
		}
		if strings.EqualFold(r.Status, string(verify.DeliveryDelivered)) {
			receipt.Status = verify.DeliveryDelivered
		}
		return nil
	})
	if err != nil {
		return verify.Receipt{}, sendError(err)
	}
	return receipt, nil
}

// SignWebhook returns the WebhookSignatureHeader value for body signed with
// secret at time t: "t=<unix>,v1=<hex HMAC-SHA256(secret, t + "." + body)>".
// Receivers' tests can use it to build signed requests.
func SignWebhook(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(webhookMAC(secret, ts, body))
}

func webhookMAC(secret []byte, ts string, body []byte) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// VerifyWebhookSignature checks a Webhook request on the receiving side.
// header is the WebhookSignatureHeader value, body the raw request body
// (read it before decoding; any change, even whitespace, breaks the
// signature), now the receiver's current time and tolerance how far the
// signing time may be from now (5 minutes is a good choice; 0 skips the
// check, which allows replays). It returns nil when one of the header's v1
// signatures matches, and an error wrapping ErrInvalidSignature otherwise.
//
// The recipe, for receivers written in other languages:
//
//  1. Split the header on ","; take t from the "t=" part and every
//     "v1=" part.
//  2. Reject the request if |now − t| exceeds your tolerance.
//  3. Compute hex(HMAC-SHA256(secret, t + "." + body)) and compare it with
//     each v1 in constant time; accept if one matches.
//  4. De-duplicate on the Idempotency-Key header (the message ID): the
//     same message may arrive twice.
func VerifyWebhookSignature(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: no secret to verify with", ErrInvalidSignature)
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	if ts == "" || len(sigs) == 0 {
		return fmt.Errorf("%w: header has no t= timestamp or no v1= signature", ErrInvalidSignature)
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: malformed timestamp", ErrInvalidSignature)
	}
	if tolerance > 0 {
		age := now.Sub(time.Unix(unix, 0))
		if age > tolerance || age < -tolerance {
			return fmt.Errorf("%w: timestamp is outside the %s tolerance", ErrInvalidSignature, tolerance)
		}
	}
	want := webhookMAC(secret, ts, body)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return nil
		}
	}
	return fmt.Errorf("%w: no signature matches", ErrInvalidSignature)
}
