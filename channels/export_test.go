package channels

import (
	"context"
	"net/url"
	"time"
)

// WithSleep returns p with its wait replaced by sleep, so that tests can
// observe the backoff without sleeping.
func WithSleep(p RetryPolicy, sleep func(context.Context, time.Duration) error) RetryPolicy {
	p.sleep = sleep
	return p
}

// TwilioSignature exposes the signature computation for the documented
// test vector.
func TwilioSignature(authToken, fullURL string, params url.Values) string {
	return twilioSignature(authToken, fullURL, params)
}

// Backoff exposes one backoff draw.
func Backoff(p RetryPolicy, retry int) time.Duration { return p.withDefaults().backoff(retry) }

// KaleyraCallbackURL exposes the callback URL builder.
var KaleyraCallbackURL = kaleyraCallbackURL

// TwilioVoiceLanguage exposes the language map.
var TwilioVoiceLanguage = twilioVoiceLanguage

// IsGSM7 exposes the GSM alphabet check.
var IsGSM7 = isGSM7
