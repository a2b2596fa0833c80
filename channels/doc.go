// Package channels holds verify.Channel implementations: Console and
// Recorder for development and tests, and production providers — SMTP
// email, Twilio (SMS, WhatsApp, voice), Vonage SMS, Kaleyra SMS and a
// signed Webhook for in-house gateways.
//
// Each provider is configured with a struct whose zero values mean
// documented defaults and is built by a constructor that validates it
// (NewSMTP, NewTwilio, NewVonage, NewKaleyra, NewWebhook). Providers
// retry transient failures (network errors, HTTP 429 and 5xx, SMTP 4xx)
// with bounded exponential backoff and full jitter, within the Send
// context's deadline (see RetryPolicy); permanent failures are returned at
// once, wrapped with verify.Permanent, so that the engine moves on to the
// next step. Errors are *ProviderError values that carry the provider's
// status and error code and never the code or the message body.
//
// ParseTwilioStatusCallback and ParseKaleyraDLR authenticate and parse
// delivery reports; VerifyWebhookSignature checks Webhook requests on the
// receiving side.
package channels
