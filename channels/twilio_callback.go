package channels

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/openverify/verify"
)

// ParseTwilioStatusCallback authenticates and parses a status callback
// that Twilio sent to TwilioConfig.StatusCallbackURL, for a message or a
// voice call. It returns the verify.Message ID the callback is about (from
// the "message_id" query parameter the channel added), the delivery status,
// and a short detail such as "undelivered; error 30003".
//
// The request is authenticated as Twilio documents: the X-Twilio-Signature
// header must be the Base64 HMAC-SHA1, keyed with authToken, of the full
// URL Twilio requested followed by every POST parameter's name and value,
// sorted by name. Twilio signs the URL it called, so publicURL should be
// the callback URL as configured (scheme, host and path are taken from
// it, the query from the request); when publicURL is "", the URL is
// rebuilt from the request's Host, which is wrong behind a proxy that
// rewrites it. A bad or missing signature returns ErrInvalidSignature.
//
// Statuses map as follows: delivered and read (messages), completed and
// in-progress (calls) are verify.DeliveryDelivered; undelivered, failed,
// busy, no-answer and canceled are verify.DeliveryFailed; queued, sent,
// ringing and the other intermediate states are verify.DeliverySent.
//
// Note that callbacks must be verified with the account's auth token even
// when the channel sends with an API key.
func ParseTwilioStatusCallback(r *http.Request, authToken string, publicURL string) (messageID string, status verify.DeliveryStatus, detail string, err error) {
	if authToken == "" {
		return "", "", "", errors.New("channels: twilio: ParseTwilioStatusCallback needs the account's auth token")
	}
	if err := r.ParseForm(); err != nil {
		return "", "", "", fmt.Errorf("channels: twilio: reading status callback: %w", err)
	}
	sig := r.Header.Get("X-Twilio-Signature")
	if sig == "" {
		return "", "", "", ErrInvalidSignature
	}
	full, err := twilioRequestURL(r, publicURL)
	if err != nil {
		return "", "", "", err
	}
	valid := false
	for _, u := range twilioURLVariants(full) {
		if twilioSignatureValid(authToken, u, r.PostForm, sig) {
			valid = true
			break
		}
	}
	if !valid {
		return "", "", "", ErrInvalidSignature
	}

	messageID = r.URL.Query().Get(callbackMessageIDParam)
	if messageID == "" {
		return "", "", "", fmt.Errorf("channels: twilio: status callback has no %s query parameter (is StatusCallbackURL set on the channel?)", callbackMessageIDParam)
	}
	raw := r.PostForm.Get("MessageStatus")
	if raw == "" {
		raw = r.PostForm.Get("CallStatus")
	}
	if raw == "" {
		raw = r.PostForm.Get("SmsStatus")
	}
	if raw == "" {
		return "", "", "", errors.New("channels: twilio: status callback has neither MessageStatus nor CallStatus")
	}
	status = twilioDeliveryStatus(raw)
	detail = raw
	if code := r.PostForm.Get("ErrorCode"); code != "" && code != "0" {
		detail += "; error " + code
	}
	return messageID, status, detail, nil
}

// twilioDeliveryStatus maps a Message or Call status to a delivery status.
func twilioDeliveryStatus(s string) verify.DeliveryStatus {
	switch strings.ToLower(s) {
	case "delivered", "read", "completed", "in-progress", "answered":
		return verify.DeliveryDelivered
	case "undelivered", "failed", "busy", "no-answer", "canceled":
		return verify.DeliveryFailed
	}
	return verify.DeliverySent
}

// twilioRequestURL is the URL Twilio requested: publicURL's scheme, host
// and path with the request's query, or the request's own URL.
func twilioRequestURL(r *http.Request, publicURL string) (string, error) {
	if publicURL != "" {
		base, _, _ := strings.Cut(publicURL, "#")
		base, _, _ = strings.Cut(base, "?")
		if err := checkAbsoluteURL(base); err != nil {
			return "", fmt.Errorf("channels: twilio: publicURL: %w", err)
		}
		if r.URL.RawQuery != "" {
			return base + "?" + r.URL.RawQuery, nil
		}
		return base, nil
	}
	if r.URL.IsAbs() {
		return r.URL.String(), nil
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.RequestURI(), nil
}

// twilioURLVariants returns the URL as given and, as Twilio's helper
// libraries do, the same URL with its default port added or removed:
// Twilio may sign either form.
func twilioURLVariants(full string) []string {
	u, err := url.Parse(full)
	if err != nil {
		return []string{full}
	}
	port := map[string]string{"https": "443", "http": "80"}[u.Scheme]
	if port == "" {
		return []string{full}
	}
	v := *u
	switch u.Port() {
	case "":
		v.Host = u.Host + ":" + port
	case port:
		v.Host = u.Hostname()
		if strings.Contains(v.Host, ":") {
			v.Host = "[" + v.Host + "]"
		}
	default:
		return []string{full}
	}
	return []string{full, v.String()}
}

// twilioSignature computes Twilio's request signature: Base64(HMAC-SHA1(
// authToken, url + name₁ + value₁ + name₂ + value₂ ...)), with the POST
// parameters sorted by name (and repeated values sorted).
func twilioSignature(authToken, fullURL string, params url.Values) string {
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(fullURL))
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vals := append([]string(nil), params[k]...)
		sort.Strings(vals)
		for _, v := range vals {
			mac.Write([]byte(k))
			mac.Write([]byte(v))
		}
	}
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func twilioSignatureValid(authToken, fullURL string, params url.Values, sig string) bool {
	want := twilioSignature(authToken, fullURL, params)
	return hmac.Equal([]byte(want), []byte(sig))
}
