package channels

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// ErrInvalidSignature is returned by the callback parsers and
// VerifyWebhookSignature when a request's signature is missing, malformed,
// stale or wrong. An HTTP handler should answer it with 403 Forbidden.
var ErrInvalidSignature = errors.New("channels: invalid signature")

// ProviderError is the error a provider channel returns when the provider
// refused a message or could not be reached. It carries the provider's own
// status and error code and message, never the one-time code or the message
// body.
//
// Use errors.As to read it:
//
//	var pe *channels.ProviderError
//	if errors.As(err, &pe) && pe.Code == "21211" { ... }
//
// When Permanent is true the channel also wraps the error with
// verify.Permanent, so verify.IsPermanent(err) reports true.
type ProviderError struct {
	// Provider names the provider: "smtp", "twilio", "vonage", "kaleyra"
	// or "webhook".
	Provider string
	// StatusCode is the HTTP status code, or the SMTP reply code; 0 when
	// no answer was received (a network error or timeout).
	StatusCode int
	// Code is the provider's own error code, such as Twilio's "21211",
	// Vonage's status "6", Kaleyra's "E413" or an SMTP enhanced status
	// code such as "5.1.1"; "" when the provider gave none.
	Code string
	// Message is the provider's error message, with any occurrence of the
	// code or body removed.
	Message string
	// Permanent reports that sending the same message again cannot succeed
	// (an invalid number, a rejected sender, bad credentials).
	Permanent bool
	// RetryAfter is how long the provider asked the caller to wait before
	// trying again, from a Retry-After header; zero if it did not say.
	RetryAfter time.Duration
	// Attempts is how many requests were made before giving up.
	Attempts int
	// Err is the underlying transport error, if any.
	Err error
}

// Error describes the failure without the code or body.
func (e *ProviderError) Error() string {
	var b strings.Builder
	b.WriteString("channels: ")
	b.WriteString(e.Provider)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": status %d", e.StatusCode)
	}
	if e.Code != "" {
		b.WriteString(": code ")
		b.WriteString(e.Code)
	}
	switch {
	case e.Message != "":
		b.WriteString(": ")
		b.WriteString(e.Message)
	case e.Err != nil:
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

// Unwrap returns the underlying transport error, if any.
func (e *ProviderError) Unwrap() error { return e.Err }

// sendError returns err ready to be returned by a channel's Send: a
// permanent *ProviderError is wrapped with verify.Permanent.
func sendError(err error) error {
	var pe *ProviderError
	if errors.As(err, &pe) && pe.Permanent && !verify.IsPermanent(err) {
		return verify.Permanent(err)
	}
	return err
}

// maxMessageLen bounds the provider messages kept in a ProviderError.
const maxMessageLen = 300

// redact removes the message's body and code from a provider's text, so
// that an error can never carry them even if a provider echoes its input,
// and bounds its length. An echoed body becomes "[body]", which says the
// provider quoted the message and nothing about the code; the code itself,
// in any form (verify.ScrubCode), goes without a trace.
func redact(s string, m verify.Message) string {
	if m.Body != "" {
		s = strings.ReplaceAll(s, m.Body, "[body]")
	}
	s = verify.ScrubCode(s, m)
	s = strings.TrimSpace(s)
	if len(s) > maxMessageLen {
		cut := maxMessageLen
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// configError formats a constructor's validation error.
func configError(provider, format string, args ...any) error {
	return fmt.Errorf("channels: %s: "+format, append([]any{provider}, args...)...)
}

// permanentf returns a permanent *ProviderError for a message the channel
// itself refuses to send (no recipient, no sender), wrapped with
// verify.Permanent.
func permanentf(provider, format string, args ...any) error {
	return verify.Permanent(&ProviderError{
		Provider:  provider,
		Message:   fmt.Sprintf(format, args...),
		Permanent: true,
	})
}
