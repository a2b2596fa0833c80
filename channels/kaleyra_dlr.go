package channels

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/openverify/verify"
)

// ParseKaleyraDLR parses a delivery report that Kaleyra sent to
// KaleyraConfig.CallbackURL. Kaleyra calls the URL with GET (fields in the
// query) or POST (fields as a form or, from a callback profile, as JSON);
// all three are accepted. It returns the verify.Message ID (from the
// "message_id" query parameter the channel added, or else the "ref" field
// echoed by Kaleyra), the delivery status and a short detail built from
// the report's status, status_trace and description.
//
// When secret is not empty it must be the channel's CallbackSecret: the
// "sig" query parameter must then be the HMAC-SHA256 the channel computed
// over the message ID, or ParseKaleyraDLR returns ErrInvalidSignature. This
// proves that the report is about a message this channel sent to that
// URL; keep the callback URL itself confidential (HTTPS), since anyone who
// learns it can replay it.
//
// Statuses map case-insensitively as follows: DELIVRD and Delivered are
// verify.DeliveryDelivered; Failed, Undelivered, UNDELIV, NOT-SENT,
// EXPIRED and REJECTED (and the like) are verify.DeliveryFailed; Sent,
// SUBMITTED, ENROUTE, SENT - NO DLR and any other status are
// verify.DeliverySent.
func ParseKaleyraDLR(r *http.Request, secret []byte) (messageID string, status verify.DeliveryStatus, detail string, err error) {
	fields, err := kaleyraFields(r)
	if err != nil {
		return "", "", "", err
	}
	q := r.URL.Query()
	messageID = q.Get(callbackMessageIDParam)
	if len(secret) > 0 {
		if messageID == "" || !hmac.Equal([]byte(q.Get("sig")), []byte(callbackSignature(secret, messageID))) {
			return "", "", "", ErrInvalidSignature
		}
	}
	if messageID == "" {
		messageID = fields["ref"]
	}
	if messageID == "" {
		return "", "", "", fmt.Errorf("channels: kaleyra: delivery report has neither a %s query parameter nor a ref field", callbackMessageIDParam)
	}
	raw := fields["status"]
	if raw == "" {
		raw = fields["status_trace"]
	}
	if raw == "" {
		return "", "", "", errors.New("channels: kaleyra: delivery report has no status")
	}
	status = kaleyraDeliveryStatus(raw)
	detail = raw
	if tr := fields["status_trace"]; tr != "" && !strings.EqualFold(tr, raw) {
		detail += "; " + tr
	}
	if d := fields["description"]; d != "" {
		detail += "; " + d
	}
	return messageID, status, detail, nil
}

// kaleyraFields reads a report's fields from the query, a form or a JSON
// object, as strings.
func kaleyraFields(r *http.Request) (map[string]string, error) {
	fields := map[string]string{}
	for k, v := range r.URL.Query() {
		if len(v) > 0 {
			fields[k] = v[0]
		}
	}
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		return fields, nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" || strings.HasSuffix(ct, "+json") {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxResponseBytes))
		if err != nil {
			return nil, fmt.Errorf("channels: kaleyra: reading delivery report: %w", err)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil {
			return nil, fmt.Errorf("channels: kaleyra: delivery report is not a JSON object: %w", err)
		}
		for k, v := range obj {
			if s := jsonScalar(v); s != "" {
				fields[k] = s
			}
		}
		return fields, nil
	}
	if err := r.ParseForm(); err != nil {
		return nil, fmt.Errorf("channels: kaleyra: reading delivery report: %w", err)
	}
	for k, v := range r.PostForm {
		if len(v) > 0 {
			fields[k] = v[0]
		}
	}
	return fields, nil
}

// kaleyraDeliveryStatus maps a Kaleyra status or status trace code.
func kaleyraDeliveryStatus(s string) verify.DeliveryStatus {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "DELIVRD", "DELIVERED":
		return verify.DeliveryDelivered
	case "FAILED", "UNDELIVERED", "UNDELIV", "NOT-SENT", "NOT SENT", "EXPIRED", "REJECTED", "REJECTD",
		"INVALID-SUB", "BLACKLIST", "OPT-OUT", "NO-CREDITS", "NOTALLOWED", "BLOCKED-COUNTRY", "DND", "CON-DND":
		return verify.DeliveryFailed
	}
	return verify.DeliverySent
}

// kaleyraCallbackURL is the callback URL for one message: base with the
// message ID and, given a secret, its signature.
func kaleyraCallbackURL(base, messageID string, secret []byte) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set(callbackMessageIDParam, messageID)
	if len(secret) > 0 {
		q.Set("sig", callbackSignature(secret, messageID))
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// callbackSignature signs a message ID for a callback URL.
func callbackSignature(secret []byte, messageID string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("openverify-callback:"))
	mac.Write([]byte(messageID))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}
