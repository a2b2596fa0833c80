package verify

import (
	"fmt"
	"time"
)

// Status is the state of a verification. pending, sent and delivered are
// open: the code can still be checked. The others are ended and final.
type Status string

// Verification statuses.
const (
	// StatusPending: created, no delivery has succeeded yet.
	StatusPending Status = "pending"
	// StatusSent: a channel accepted the code.
	StatusSent Status = "sent"
	// StatusDelivered: a channel reported the code delivered.
	StatusDelivered Status = "delivered"
	// StatusVerified: the right code was checked.
	StatusVerified Status = "verified"
	// StatusExpired: the code's TTL passed before it was verified.
	StatusExpired Status = "expired"
	// StatusCanceled: Cancel ended it.
	StatusCanceled Status = "canceled"
	// StatusMaxAttempts: every allowed attempt was a wrong code.
	StatusMaxAttempts Status = "max_attempts"
	// StatusFailed: every step failed to deliver the code.
	StatusFailed Status = "failed"
)

// Open reports whether a verification in this status can still be checked.
func (s Status) Open() bool {
	return s == StatusPending || s == StatusSent || s == StatusDelivered
}

// Valid reports whether s is one of the statuses above.
func (s Status) Valid() bool {
	switch s {
	case StatusPending, StatusSent, StatusDelivered, StatusVerified,
		StatusExpired, StatusCanceled, StatusMaxAttempts, StatusFailed:
		return true
	}
	return false
}

// Recipient is whom a code is sent to. Phone channels use Phone (E.164, such
// as "+4712345678"); email channels use Email (a bare address, such as
// "ana@example.com").
type Recipient struct {
	Phone string `json:"mobile,omitempty"`
	Email string `json:"email,omitempty"`
}

// String returns the recipient's phone and email.
func (r Recipient) String() string {
	switch {
	case r.Phone != "" && r.Email != "":
		return r.Phone + " " + r.Email
	case r.Phone != "":
		return r.Phone
	}
	return r.Email
}

// SendRequest asks the engine to start a verification.
type SendRequest struct {
	// FlowID selects the flow; "" means the default flow (or Flow).
	FlowID string
	// Flow, when not nil, is an ad-hoc flow for this verification alone,
	// for requests that carry their own channel list: it is validated as
	// CreateFlow validates a flow (and its defaults filled in), kept with
	// the verification, and never added to the catalog, so any number of
	// distinct ad-hoc flows leave Flows as it was. Its ID must be "",
	// Default false, and FlowID "".
	//
	// Its Name is its identity: the verification's FlowID is
	// AdHocFlowID(Name), under which the per-flow rate limit counts sends,
	// the flow's Duplicates policy finds open verifications, and events
	// and reports group it. Ad-hoc sends that share a Name share those, so
	// name them after what they have in common: a wire format, an API key,
	// a product ("signup"). Only an ad-hoc flow's steps may carry their
	// own Text (see Step.Text).
	Flow *Flow
	// To is the recipient; it must have what every step's channel needs.
	To Recipient
	// Code is an optional custom code; it must have the flow's length and
	// charset. "" means generate one.
	Code string
	// ForeignID is the host's own reference, echoed back in Verification.
	ForeignID string
	// IPAddress is the end user's IP address, kept with the verification.
	IPAddress string
	// IdempotencyKey makes Send safe to retry: a repeat with the same key
	// and the same request returns the first verification and sends
	// nothing; the same key with another request is E923. "" means none.
	IdempotencyKey string
	// Language is a BCP 47 tag ("es", "pt-BR") choosing the templates'
	// and built-in texts' language. "" guesses it from the phone number's
	// country calling code, else uses the flow's Language.
	Language string
}

// CheckRequest asks the engine to check a code.
type CheckRequest struct {
	VerifyID  string
	Code      string
	IPAddress string
}

// Verification is the public view of a verification. It never contains the
// code.
type Verification struct {
	ID                string     `json:"id"`
	FlowID            string     `json:"flow_id"`
	ForeignID         string     `json:"foreign_id,omitempty"`
	Status            Status     `json:"status"`
	To                Recipient  `json:"to"`
	Attempts          int        `json:"attempts"`
	AttemptsRemaining int        `json:"attempts_remaining"`
	Sends             int        `json:"sends"`
	CreatedAt         time.Time  `json:"created_at"`
	ExpiresAt         time.Time  `json:"expires_at"`
	VerifiedAt        time.Time  `json:"verified_at,omitzero"`
	Deliveries        []Delivery `json:"deliveries"`
	// Checks are the checks of its code that counted, oldest first (not
	// the ones refused before reaching it: a lockout, a rate limit).
	Checks []CheckAttempt `json:"checks,omitempty"`
}

// String summarises the verification.
func (v Verification) String() string {
	return fmt.Sprintf("verify.Verification{ID:%s Status:%s To:%s Attempts:%d/%d}",
		v.ID, v.Status, v.To, v.Attempts, v.Attempts+v.AttemptsRemaining)
}

func (r *VerificationRecord) public() Verification {
	v := Verification{
		ID:                r.ID,
		FlowID:            r.FlowID,
		ForeignID:         r.ForeignID,
		Status:            r.Status,
		To:                r.To,
		Attempts:          r.Attempts,
		AttemptsRemaining: max(r.MaxAttempts-r.Attempts, 0),
		Sends:             r.Sends,
		CreatedAt:         r.CreatedAt,
		ExpiresAt:         r.ExpiresAt,
		VerifiedAt:        r.VerifiedAt,
		Deliveries:        make([]Delivery, len(r.Deliveries)),
		Checks:            r.Checks,
	}
	for i, d := range r.Deliveries {
		v.Deliveries[i] = Delivery{
			ID: d.ID, Step: d.Step, Channel: d.Channel, From: d.From, Status: d.Status,
			ProviderID: d.ProviderID, Error: d.Error, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
		}
	}
	return v
}
