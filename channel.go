package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Channel delivers rendered messages: an SMS gateway, an email server, a
// voice provider, a webhook. Flows refer to a channel by its Name.
//
// Send should return once the provider has accepted the message (or
// refused it). A returned error moves the verification on to its next step
// at once; wrap an error with Permanent when retrying the same message can
// never succeed (an invalid number, a rejected sender), so that callers with
// retry logic do not retry it. Send must honour ctx's deadline.
//
// Implementations must be safe for concurrent use and must not log the
// message's Code or Body.
type Channel interface {
	// Name is how flows refer to the channel: "sms", "email", "voice", ...
	Name() string
	// Send delivers m and returns the provider's receipt.
	Send(ctx context.Context, m Message) (Receipt, error)
}

// Message is what the engine hands a Channel: one code to one recipient.
//
// Code and Body hold the secret code: String, GoString, LogValue and JSON
// encoding leave them out, so printing or logging a Message never reveals
// it.
type Message struct {
	// ID is stable per (verification, step) and per resend, so a provider
	// or gateway can de-duplicate a message that is sent twice. It is
	// "<verification ID>-<step>" for flow steps and
	// "<verification ID>-r<n>" for the n-th send by Resend; ReportDelivery
	// takes it back to find the delivery.
	ID string `json:"id"`
	// VerificationID is the verification the code belongs to.
	VerificationID string `json:"verification_id"`
	// Channel is the name of the channel the message is for.
	Channel string `json:"channel"`
	// Step is the flow step's index; -1 for a Resend.
	Step int `json:"step"`
	// To is the recipient; a channel uses Phone or Email as it needs.
	To Recipient `json:"to"`
	// From is the step's sender ID, from address or caller ID; may be "".
	From string `json:"from,omitempty"`
	// Code is the one-time code.
	Code string `json:"-"`
	// Body is the rendered text, with the code in it.
	Body string `json:"-"`
	// Template is the template's ID, "" for the built-in text.
	Template string `json:"template,omitempty"`
	// Language is the template's language, such as "en".
	Language string `json:"language,omitempty"`
	// ExpiresAt is when the code stops working.
	ExpiresAt time.Time `json:"expires_at"`
}

// String describes the message without its code or body.
func (m Message) String() string {
	return fmt.Sprintf("verify.Message{ID:%s Channel:%s Step:%d To:%s From:%s Template:%s Language:%s}",
		m.ID, m.Channel, m.Step, m.To, m.From, m.Template, m.Language)
}

// GoString is String, so %#v does not reveal the code either.
func (m Message) GoString() string { return m.String() }

// LogValue logs the message without its code or body.
func (m Message) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("id", m.ID),
		slog.String("channel", m.Channel),
		slog.Int("step", m.Step),
	)
}

// Receipt is a channel's answer to an accepted message.
type Receipt struct {
	// ProviderID is the provider's own ID for the message (a Twilio SID,
	// an SMTP queue ID), used to match delivery reports; may be "".
	ProviderID string
	// Status is DeliverySent, or DeliveryDelivered for channels that know
	// the message arrived when Send returns. The zero value means sent.
	Status DeliveryStatus
}

// DeliveryStatus is the state of one delivery.
type DeliveryStatus string

// Delivery statuses.
const (
	DeliverySent      DeliveryStatus = "sent"
	DeliveryDelivered DeliveryStatus = "delivered"
	DeliveryFailed    DeliveryStatus = "failed"
)

// MovesTo reports whether a delivery in status s may move to next: sent
// moves to delivered or failed, failed moves to delivered (the recipient
// has the code after all), and nothing else moves. Stores decide
// RecordDelivery by it.
func (s DeliveryStatus) MovesTo(next DeliveryStatus) bool {
	switch s {
	case DeliverySent:
		return next == DeliveryDelivered || next == DeliveryFailed
	case DeliveryFailed:
		return next == DeliveryDelivered
	}
	return false
}

// Delivery is one attempt to deliver a verification's code, as reported by
// Verification.Deliveries.
type Delivery struct {
	ID         string         `json:"id"`
	Step       int            `json:"step"`
	Channel    string         `json:"channel"`
	From       string         `json:"from,omitempty"`
	Status     DeliveryStatus `json:"status"`
	ProviderID string         `json:"provider_id,omitempty"`
	Error      string         `json:"error,omitempty"`
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (p *permanentError) Error() string { return p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

// Permanent wraps err to say that sending the same message again cannot
// succeed. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Addressing tells which part of a Recipient a channel delivers to.
type Addressing int

const (
	// ByPhone channels (SMS, voice, WhatsApp, Viber) use Recipient.Phone.
	ByPhone Addressing = iota
	// ByEmail channels use Recipient.Email.
	ByEmail
)

// Addresser is implemented by channels that say which part of a Recipient
// they use. A Channel that does not implement it is a ByPhone channel.
type Addresser interface {
	Addressing() Addressing
}

// StepValidator is implemented by channels that can tell, when a flow is
// created, that a step will never work with them (a missing sender ID, say).
// CreateFlow and UpdateFlow refuse such a step with E806 and the returned
// error's text.
type StepValidator interface {
	ValidateStep(s Step) error
}

func addressingOf(ch Channel) Addressing {
	if a, ok := ch.(Addresser); ok {
		return a.Addressing()
	}
	return ByPhone
}
